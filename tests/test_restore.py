"""Tests of the restore stage on signals made here: a speech-like voice (glottal
sawtooth through three formants, syllables, a little fricative noise) plus
steady tones, damaged with mains hum, clicks and hiss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from filmrestore.audio import read_audio, read_info, write_audio
from filmrestore.errors import ConfigError, EmptyAudioError
from filmrestore.restoration.clicks import ClickRemover
from filmrestore.restoration.dc import DCRemover, detect_dc
from filmrestore.restoration.hiss import Dehisser, detect_hiss
from filmrestore.restoration.hum import HumRemover, detect_hum
from filmrestore.restoration.restorer import Restorer, RestorePlan, plan_restoration, read_detection_sample, restore_file

FS = 48000
N = 6 * FS


# --- signals -----------------------------------------------------------------------


def speech_like(n: int, rng: np.random.Generator, level_dbfs: float = -20.0) -> np.ndarray:
    """Voiced syllables with a gliding pitch (90-200 Hz), three formants and fricatives."""
    t = np.arange(n) / FS
    f0_hz = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 15 * np.sin(2 * np.pi * 2.3 * t)
    excitation = signal.sawtooth(2 * np.pi * np.cumsum(f0_hz) / FS, width=0.9)
    excitation = signal.sosfilt(signal.butter(2, 800, fs=FS, output="sos"), excitation)  # glottal tilt
    voiced = np.zeros(n)
    for fc_hz, bw_hz, gain in ((600, 90, 1.0), (1400, 120, 0.6), (2600, 200, 0.3)):
        b, a = signal.iirpeak(fc_hz, fc_hz / bw_hz, fs=FS)
        voiced += gain * signal.lfilter(b, a, excitation)
    fricative = signal.sosfilt(signal.butter(4, 3000, "high", fs=FS, output="sos"), rng.standard_normal(n))
    syllables = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    y = voiced * syllables + 0.03 * fricative * np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None) ** 4
    return y * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(y ** 2))


def tones(n: int, freqs_hz=(440.0, 1000.0, 2500.0), level_db: float = -32.0) -> np.ndarray:
    t = np.arange(n) / FS
    return sum(10 ** (level_db / 20) * np.sin(2 * np.pi * f * t + f) for f in freqs_hz)


def hum(n: int, f0_hz: float, n_harmonics: int = 3, peak_db: float = -30.0) -> np.ndarray:
    t = np.arange(n) / FS
    amplitude = 10 ** (peak_db / 20)
    return sum(amplitude * np.sin(2 * np.pi * k * f0_hz * t + k) for k in range(1, n_harmonics + 1))


def add_clicks(x: np.ndarray, rng: np.random.Generator, n_clicks: int = 40):
    """Sharp clicks 1-11 frames long with a decaying random-sign tail, 0.4-0.8 peak."""
    y = x.copy()
    starts = np.sort(rng.choice(np.arange(2000, len(x) - 2000, 50), n_clicks, replace=False))
    widths = rng.integers(1, 12, n_clicks)
    for start, width in zip(starts, widths):
        shape = np.exp(-np.arange(width) / 3.0) * rng.choice([-1.0, 1.0], width)
        y[start:start + width] += rng.uniform(0.4, 0.8) * shape
    return y, starts, widths


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = reference.ravel().astype(float), estimate.ravel().astype(float)
    target = reference * (estimate @ reference) / (reference @ reference)
    return 10 * np.log10(np.sum(target ** 2) / np.sum((estimate - target) ** 2))


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, float) ** 2))


def stream(processor, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Run ``x`` [shape=(C, n)] through a streaming processor, whole or in random blocks."""
    if rng is None:
        return np.concatenate([processor.process(x), processor.flush()], axis=1)
    outs, pos = [], 0
    while pos < x.shape[1]:
        size = int(rng.integers(1, 30000))
        outs.append(processor.process(x[:, pos:pos + size]))
        pos += size
    return np.concatenate(outs + [processor.flush()], axis=1)


def lock_in_amplitude(x: np.ndarray, f_hz: float) -> float:
    t = np.arange(len(x)) / FS
    return 2 * abs(np.mean(x * np.exp(-2j * np.pi * f_hz * t)))


@pytest.fixture(scope="module")
def programme() -> np.ndarray:
    rng = np.random.default_rng(11)
    return (speech_like(N, rng) + tones(N)).astype(np.float32)


@pytest.fixture(scope="module")
def hissy() -> tuple[np.ndarray, np.ndarray, slice]:
    """Speech with a 1.5 s pause, and white hiss at -50 dBFS."""
    rng = np.random.default_rng(12)
    speech = speech_like(N, rng)
    pause = slice(3 * FS, int(4.5 * FS))
    speech[pause] = 0.0
    noise = 10 ** (-50 / 20) * rng.standard_normal(N)
    return speech.astype(np.float32), noise.astype(np.float32), pause


# --- hum -----------------------------------------------------------------------------


@pytest.mark.parametrize("f0_hz, nominal_hz", [(50.23, 50.0), (59.71, 60.0)])
def test_detect_hum_finds_the_mains_frequency(programme, f0_hz, nominal_hz):
    report = detect_hum((programme + hum(N, f0_hz))[None], FS)
    assert report.fundamental_hz == nominal_hz
    assert abs(report.fundamental_exact_hz - f0_hz) < 0.02
    assert report.harmonic_numbers[:3] == [1, 2, 3]
    assert min(report.levels_db_above_floor[:3]) >= 10.0
    assert report.level_dbfs == pytest.approx(-33.0, abs=1.0)  # RMS of a -30 dB peak sine


def test_no_hum_on_clean_programme(programme):
    report = detect_hum(programme[None], FS)
    assert report.fundamental_hz is None and report.harmonics_hz == []


@pytest.mark.parametrize("f0_hz", [50.23, 59.71])
def test_hum_remover_cuts_hum_30_db_and_leaves_programme(programme, f0_hz):
    hum_only = hum(N, f0_hz)
    report = detect_hum((programme + hum_only)[None], FS)
    make = lambda: HumRemover(FS, 1, report.fundamental_hz, 0, 1.0, report.harmonics_hz)  # noqa: E731
    settled = slice(FS, None)  # the 1.5 Hz notches settle within about 0.2 s
    hum_out = stream(make(), hum_only[None].astype(np.float32))[0]  # the notches are linear
    for k in (1, 2, 3):
        before = lock_in_amplitude(hum_only[settled], k * f0_hz)
        after = lock_in_amplitude(hum_out[settled], k * f0_hz)
        assert 20 * np.log10(after / before) <= -30.0
    prog_out = stream(make(), programme[None])[0]
    assert abs(level_db(prog_out) - level_db(programme)) < 0.1
    # Above the notched harmonics (>= 250 Hz: formants, tones) the programme is untouched.
    freqs, psd_in = signal.welch(programme[settled], FS, nperseg=1 << 15)
    _, psd_out = signal.welch(prog_out[settled], FS, nperseg=1 << 15)
    above = freqs >= 250.0
    assert np.max(np.abs(10 * np.log10(psd_out[above] / psd_in[above]))) < 0.05
    highpass = signal.butter(8, 250.0, "high", fs=FS, output="sos")
    hp_in, hp_out = signal.sosfilt(highpass, programme), signal.sosfilt(highpass, prog_out)
    assert si_sdr_db(hp_in[settled], hp_out[settled]) >= 30.0  # the notches' phase tails, < 2 deg
    # Full band, the notches take the voice's gliding pitch where it crosses 100 and 150 Hz.
    assert si_sdr_db(programme, prog_out) >= 18.0


# --- clicks --------------------------------------------------------------------------


def test_clicks_are_found_and_repaired(programme):
    rng = np.random.default_rng(5)
    damaged, starts, widths = add_clicks(programme, rng, 40)
    remover = ClickRemover(FS, 1, keep_positions=True)
    out = stream(remover, damaged[None])[0]
    found = [any(g0 < s + w and g1 > s for _, g0, g1 in remover.positions) for s, w in zip(starts, widths)]
    assert sum(found) >= 38  # >= 95 %
    assert 38 <= remover.n_clicks_repaired <= 44
    at_clicks = np.concatenate([np.arange(s - 5, s + w + 10) for s, w in zip(starts, widths)])
    damage_db = level_db(damaged[at_clicks] - programme[at_clicks])
    residual_db = level_db(out[at_clicks] - programme[at_clicks])
    assert residual_db <= damage_db - 12.0
    assert si_sdr_db(programme, out) >= si_sdr_db(programme, damaged) + 10.0


def test_click_remover_leaves_clean_programme_alone(programme):
    remover = ClickRemover(FS, 1)
    out = stream(remover, programme[None])
    assert remover.n_clicks_repaired == 0
    np.testing.assert_array_equal(out[0], programme)


# --- hiss ----------------------------------------------------------------------------


def test_detect_hiss_measures_the_floor(hissy):
    speech, noise, _ = hissy
    report = detect_hiss((speech + noise)[None], FS)
    in_band_dbfs = -50 + 10 * np.log10((20000 - 100) / 24000)  # white noise above 100 Hz
    assert report.detected
    assert report.floor_dbfs == pytest.approx(in_band_dbfs, abs=2.0)
    assert report.spread_db <= 3.0 and report.flatness > 0.8


def test_no_hiss_on_clean_programme_or_steady_tones(programme, hissy):
    assert not detect_hiss(programme[None], FS).detected
    assert not detect_hiss(hissy[0][None], FS).detected
    loud_noise = np.random.default_rng(1).standard_normal((1, N)) * 0.03  # no quieter passages
    assert not detect_hiss(loud_noise, FS).detected


def test_dehisser_lowers_the_floor_10_db_in_a_pause(hissy):
    speech, noise, pause = hissy
    report = detect_hiss((speech + noise)[None], FS)
    out = stream(Dehisser(FS, 1, report.noise_psd), (speech + noise)[None])[0]
    quiet = slice(pause.start + FS // 10, pause.stop - FS // 10)  # away from the edges
    assert level_db(out[quiet]) <= level_db(noise[quiet]) - 10.0
    assert si_sdr_db(speech, out) >= si_sdr_db(speech, speech + noise) + 2.0


# --- the whole stage -----------------------------------------------------------------


def _damaged(programme: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(8)
    x, _, _ = add_clicks(programme + hum(N, 50.1), rng, 30)
    return (x + 10 ** (-55 / 20) * rng.standard_normal(N)).astype(np.float32)


def test_plan_finds_all_damage_and_nothing_on_clean(programme):
    plan = plan_restoration(_damaged(programme)[None], FS)
    assert plan.applied == ["declick", "dehum", "dehiss"]
    assert plan.hum.fundamental_hz == 50.0 and plan.clicks.n_clicks >= 28
    assert plan.hiss.floor_dbfs == pytest.approx(-55.8, abs=3.5)  # -55 dBFS white, above 100 Hz
    clean_plan = plan_restoration(programme[None], FS)
    assert clean_plan.applied == []


def test_clean_input_passes_through_the_restorer(programme):
    stereo = np.stack([programme, np.roll(programme, 999)])
    plan = plan_restoration(stereo, FS)
    out = stream(Restorer(FS, 2, plan), stereo)
    assert out.shape == stereo.shape
    assert abs(level_db(out) - level_db(stereo)) < 0.1
    assert si_sdr_db(stereo, out) >= 40.0


def test_restorer_output_is_aligned(programme):
    damaged = _damaged(programme)[None]
    restorer = Restorer(FS, 1, plan_restoration(damaged, FS))
    assert restorer.latency_frames > 0
    out = stream(restorer, damaged)
    assert out.shape == damaged.shape
    lags = signal.correlation_lags(N, N)
    xcorr = signal.correlate(out[0], programme, method="fft")
    assert lags[np.argmax(xcorr)] == 0


# --- streaming: block-wise == whole ---------------------------------------------------


def _all_on_plan(x: np.ndarray) -> RestorePlan:
    plan = plan_restoration(x, FS)
    assert plan.applied == ["declick", "dehum", "dehiss"]
    return plan


@pytest.mark.parametrize("name", ["hum", "clicks", "hiss", "restorer"])
def test_blockwise_equals_whole(programme, name):
    x = np.stack([_damaged(programme), _damaged(np.roll(programme, 4321))])
    plan = _all_on_plan(x) if name in ("hiss", "restorer") else None
    factories = {
        "hum": lambda: HumRemover(FS, 2, 50.0, 4, 0.8),
        "clicks": lambda: ClickRemover(FS, 2),
        "hiss": lambda: Dehisser(FS, 2, plan.hiss.noise_psd, 0.7),
        "restorer": lambda: Restorer(FS, 2, plan),
    }
    whole = stream(factories[name](), x)
    for seed in (1, 2):
        blocks = stream(factories[name](), x, np.random.default_rng(seed))
        assert blocks.shape == x.shape == whole.shape
        np.testing.assert_allclose(blocks, whole, atol=2e-6)


# --- files ---------------------------------------------------------------------------


def test_restore_file_streams_and_reports(tmp_path, programme):
    src = tmp_path / "soundtrack.wav"
    damaged = _damaged(programme)[None]
    write_audio(src, damaged, FS)
    calls = []
    record, report = restore_file(src, tmp_path / "restored.wav",
                                  on_progress=lambda done, total: calls.append((done, total)))
    assert record.n_frames == N and record.n_channels == 1
    assert read_info(record.path).subtype == "FLOAT"
    assert calls[-1] == (N, N)
    assert report["applied"] == ["declick", "dehum", "dehiss"]
    assert report["hum"]["fundamental_hz"] == 50.0 and report["clicks_repaired"] >= 28
    assert report["hiss"]["floor_dbfs"] < -50


def test_detection_sample_of_a_long_file_is_sparse(tmp_path, programme):
    src = tmp_path / "long.wav"
    write_audio(src, programme[None], FS)
    segments = read_detection_sample(src, span_s=3.0, n_segments=3)
    assert [s.shape for s in segments] == [(1, FS)] * 3
    np.testing.assert_array_equal(segments[-1][0], programme[-FS:])


def test_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty.wav"
    write_audio(empty, np.zeros((1, 0), np.float32), FS)
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        restore_file(empty, tmp_path / "out.wav")
    with pytest.raises(ConfigError, match="strength"):
        ClickRemover(FS, 1, strength=1.5)
    with pytest.raises(ConfigError, match="noise profile"):
        Dehisser(FS, 2, np.ones((3, 1025)))


def test_a_cut_into_a_tone_is_no_click_and_one_click_on_six_channels_is_one_event():
    """A tone that starts from digital silence (and later stops dead) on six channels is
    programme; four clicks reaching all six channels are four events, not 24."""
    t = np.arange(6 * FS) / FS
    tone = np.where((t >= 0.5) & (t < 5.0), 0.0625 * np.sin(2 * np.pi * 997.0 * t), 0.0)
    x = np.repeat(tone[None], 6, axis=0).astype(np.float32)
    remover = ClickRemover(FS, 6, keep_positions=True)
    assert np.array_equal(stream(remover, x), x) and remover.positions == []
    assert plan_restoration(x, FS).applied == []
    clicked = x.copy()
    for start in (1.2, 2.1, 3.3, 4.4):
        clicked[:, int(start * FS):int(start * FS) + 4] += 0.4
    plan = plan_restoration(clicked, FS)
    assert plan.clicks.n_clicks == 4 and plan.applied == ["declick"]


def test_quantisation_spurs_of_a_tone_are_no_hum():
    """An 8-bit 22.05 kHz transfer of a steady tone has spurs on a comb that can fall on
    high multiples of 50 Hz; without the fundamental or a 2nd/3rd harmonic they are no hum."""
    n = 6 * 22_050
    tone = np.round(127 * 0.5 * np.sin(2 * np.pi * 997.0 * np.arange(n) / 22_050)) / 127
    x = signal.resample_poly(tone, 320, 147)[None].astype(np.float32)  # 22.05 -> 48 kHz
    assert detect_hum(x, FS).fundamental_hz is None


# ----------------------------------------------------------------------------- DC offset

def test_dc_offset_is_detected_removed_without_transient_and_the_programme_kept(tmp_path: Path) -> None:
    """A 0.4 offset on one side of a transfer: found, reported, and cut by a high-pass that starts
    settled (no thump at the start), leaving a 440 Hz programme as it was; a clean take is left alone."""
    t_s = np.arange(N) / FS
    programme = (0.3 * np.sin(2 * np.pi * 440.0 * t_s)).astype(np.float32)
    x = np.stack([programme + 0.4, programme]).astype(np.float32)
    report = detect_dc(x)
    assert report.detected and report.offsets[0] == pytest.approx(0.4, abs=1e-3) and abs(report.offsets[1]) < 1e-3
    assert not detect_dc(np.stack([programme, programme])).detected
    remover = DCRemover(FS, 2)
    blocks = [remover.process(x[:, a:a + 7777]) for a in range(0, N, 7777)]
    y = np.concatenate([*blocks, remover.flush()], axis=1)
    assert y.shape == x.shape
    whole = DCRemover(FS, 2).process(x)
    np.testing.assert_allclose(y, whole, atol=1e-6)
    assert np.abs(y[0] - programme).max() < 0.01  # within -40 dB of the programme from the first sample on
    assert abs(float(y[0, FS:].mean())) < 1e-4
    # The tone keeps its level to 0.01 dB; the high-pass only turns its phase by < 1 degree.
    level_db = 10 * np.log10(np.mean(y[:, FS:] ** 2, axis=1) / np.mean(programme[FS:] ** 2))
    assert np.abs(level_db).max() < 0.01
    assert np.corrcoef(y[0, FS:], programme[FS:])[0, 1] > 0.9998

    write_audio(tmp_path / "dc.wav", x, FS)
    record, restored = restore_file(tmp_path / "dc.wav", tmp_path / "out.wav")
    assert "remove-dc" in restored["applied"] and restored["dc"]["detected"]
    out = read_audio(tmp_path / "out.wav")
    assert abs(float(out[0, FS:].mean())) < 1e-3
