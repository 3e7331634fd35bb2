"""Synthetic film material has the properties it claims, and the demo clip is what ffprobe expects."""

from __future__ import annotations

import json
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from scipy import signal

from filmrestore.audio import read_audio
from filmrestore.demo import make_demo_clip, reference_dir
from filmrestore.media import extract_audio
from filmrestore.synth import (
    MIX_LUFS_RANGE,
    band_limit,
    legacy_damage,
    legacy_degrade,
    loudness_lufs,
    make_film_mix,
    synth_dialogue,
    synth_effects,
    synth_music,
)

SR = 48_000
SEEDS = [0, 1, 2]


def frame_rms(x: np.ndarray, frame_s: float) -> np.ndarray:
    hop = int(frame_s * SR)
    frames = x[: x.size // hop * hop].reshape(-1, hop)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


def psd(x: np.ndarray, nperseg: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    return signal.welch(x.astype(np.float64), fs=SR, nperseg=nperseg)


def band_fraction(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    f, p = psd(x)
    return float(p[(f >= low_hz) & (f <= high_hz)].sum() / p.sum())


def flatness(x: np.ndarray, low_hz: float = 100.0, high_hz: float = 5000.0) -> float:
    """Wiener entropy of the PSD over a band: 1 for white noise, near 0 for a few tones."""
    f, p = psd(x)
    p = p[(f >= low_hz) & (f <= high_hz)] + 1e-20
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


def silent_runs_s(x: np.ndarray, frame_s: float = 0.01) -> list[float]:
    """Lengths of the runs of digitally silent frames."""
    silent = frame_rms(x, frame_s) < 1e-6
    edges = np.diff(np.concatenate([[0], silent.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list((ends - starts) * frame_s)


@pytest.mark.parametrize("seed", SEEDS)
def test_dialogue_has_pauses_syllables_and_speech_band(seed: int) -> None:
    x = synth_dialogue(12.0, SR, np.random.default_rng(seed))
    assert x.shape == (1, 12 * SR) and x.dtype == np.float32
    pauses = [r for r in silent_runs_s(x[0]) if r >= 0.3]
    assert len(pauses) >= 3  # phrases are separated by speech-free gaps
    assert 0.4 < 1 - sum(silent_runs_s(x[0])) / 12.0 < 0.9
    assert band_fraction(x[0], 100, 4000) > 0.9
    # Syllables: peaks of the (8 Hz smoothed) energy envelope, about 4 per second of speech.
    envelope = frame_rms(x[0], 0.01)
    smooth = signal.sosfiltfilt(signal.butter(2, 8, fs=100, output="sos"), envelope)
    peaks, _ = signal.find_peaks(smooth, prominence=0.1 * smooth.max())
    speech_s = np.count_nonzero(envelope > 1e-6) * 0.01
    assert 3.0 < peaks.size / speech_s < 5.5


def test_dialogue_pitch_is_in_the_voice_range() -> None:
    x = synth_dialogue(6.0, SR, np.random.default_rng(7))[0]
    loud = np.argmax(frame_rms(x, 0.1))
    seg = x[loud * SR // 10: (loud + 1) * SR // 10].astype(np.float64)
    ac = np.correlate(seg, seg, "full")[seg.size - 1:]
    lags = np.arange(SR // 300, SR // 70)  # 70-300 Hz
    f0_hz = SR / lags[np.argmax(ac[lags])]
    assert 70 <= f0_hz <= 280


@pytest.mark.parametrize("seed", SEEDS)
def test_music_is_tonal_and_effects_are_not(seed: int) -> None:
    music = synth_music(6.0, SR, np.random.default_rng(seed))[0]
    effects = synth_effects(6.0, SR, np.random.default_rng(seed))[0]
    assert flatness(music) < 1e-3 < 0.05 < flatness(effects)
    f, p = psd(music)
    top = np.sort(p)[::-1]
    assert top[: top.size // 100].sum() > 0.9 * top.sum()  # energy sits in a few partials


def test_music_stereo_has_two_different_channels() -> None:
    x = synth_music(3.0, SR, np.random.default_rng(3), n_channels=2)
    assert x.shape == (2, 3 * SR)
    corr = np.corrcoef(x[0], x[1])[0, 1]
    assert 0.0 < corr < 0.98
    with pytest.raises(ValueError, match="n_channels"):
        synth_music(1.0, SR, np.random.default_rng(0), n_channels=6)


@pytest.mark.parametrize("seed", SEEDS)
def test_effects_have_transients_and_low_frequencies(seed: int) -> None:
    x = synth_effects(10.0, SR, np.random.default_rng(seed))[0]
    level_db = 20 * np.log10(frame_rms(x, 0.005) + 1e-12)
    # Onsets: a 5 ms frame 10 dB above the mean of the 50 ms before it.
    before_db = np.array([level_db[max(i - 10, 0): i].mean() if i else level_db[0] for i in range(level_db.size)])
    onsets = np.flatnonzero(level_db - before_db > 10)
    assert np.unique(onsets // 40).size >= 3  # at least three separate events (200 ms apart)
    assert band_fraction(x, 0, 150) > 0.25


def test_generators_are_reproducible_from_their_seed() -> None:
    for make in (synth_dialogue, synth_music, synth_effects):
        a, b = make(2.0, SR, np.random.default_rng(5)), make(2.0, SR, np.random.default_rng(5))
        c = make(2.0, SR, np.random.default_rng(6))
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def line_dbfs(x: np.ndarray, freq_hz: float) -> float:
    """RMS level (dBFS) of a sinusoid at ``freq_hz``, from a flat-top-windowed FFT."""
    window = signal.windows.flattop(x.size)
    spectrum = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    peak = spectrum[int(round(freq_hz * x.size / SR))]
    return float(20 * np.log10(peak / np.sqrt(2) + 1e-20))


@pytest.mark.parametrize("hum_hz", [50.0, 60.0])
def test_degrade_adds_mains_hum_with_harmonics(hum_hz: float) -> None:
    silence = np.zeros((1, 4 * SR), dtype=np.float32)
    y = legacy_degrade(silence, SR, np.random.default_rng(0), hum_hz=hum_hz, clicks_per_s=0)[0]
    assert abs(line_dbfs(y, hum_hz) - -42.0) < 0.5
    assert line_dbfs(y, 2 * hum_hz) > -50.0 and line_dbfs(y, 3 * hum_hz) > -54.0
    other = 60.0 if hum_hz == 50.0 else 50.0
    assert line_dbfs(y, other) < -75.0  # only the mains frequency asked for


def test_degrade_hiss_level_and_clicks() -> None:
    shape = (2, 5 * SR)
    damage = legacy_damage(shape, SR, np.random.default_rng(1), hum_hz=None, clicks_per_s=2.0)
    assert abs(20 * np.log10(np.sqrt(np.mean(damage.hiss**2))) - -50.0) < 0.1
    assert not damage.hum.any()
    assert 3 <= damage.click_frames.size <= 25
    for frame in damage.click_frames:
        assert np.max(np.abs(damage.clicks[:, frame: frame + 48])) >= 0.1 - 1e-6


def test_degrade_band_limits_the_programme() -> None:
    noise = np.random.default_rng(2).standard_normal((1, 4 * SR)).astype(np.float32) * 0.1
    f, p = psd(band_limit(noise, SR)[0])
    ref = p[np.argmin(np.abs(f - 1000))]
    assert p[np.argmin(np.abs(f - 30))] < ref / 100
    assert p[np.argmin(np.abs(f - 14000))] < ref / 100
    assert abs(10 * np.log10(p[np.argmin(np.abs(f - 3000))] / ref)) < 1.0


def test_film_mix_levels_and_consistency() -> None:
    stems = make_film_mix(8.0, np.random.default_rng(4))
    assert set(stems) == {"dialogue", "music", "effects", "mix"}
    assert all(x.shape == (1, 8 * SR) and x.dtype == np.float32 for x in stems.values())
    assert np.array_equal(stems["mix"], stems["dialogue"] + stems["music"] + stems["effects"])
    mix_lufs = loudness_lufs(stems["mix"], SR)
    assert MIX_LUFS_RANGE[0] <= mix_lufs <= MIX_LUFS_RANGE[1]
    dialogue_lufs = loudness_lufs(stems["dialogue"], SR)
    assert dialogue_lufs > loudness_lufs(stems["music"], SR) + 4
    assert dialogue_lufs > loudness_lufs(stems["effects"], SR) + 4


def probe_streams(path: Path) -> list[dict]:
    return ffmpeg.probe(str(path))["streams"]


@pytest.mark.parametrize(("name", "rate_hz"), [("clip.mov", 48_000), ("clip.mkv", 44_100)])
def test_demo_clip_has_one_video_and_one_mono_audio_stream(tmp_path: Path, name: str, rate_hz: int) -> None:
    clip = make_demo_clip(tmp_path / name, duration_s=2.5, seed=1, audio_sample_rate_hz=rate_hz)
    streams = probe_streams(clip)
    video = [s for s in streams if s["codec_type"] == "video"]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    assert (int(audio[0]["channels"]), int(audio[0]["sample_rate"])) == (1, rate_hz)
    record, _ = extract_audio(clip, tmp_path / "extracted.wav")
    assert abs(record.duration_s - 2.5) <= 0.05
    assert not list(tmp_path.glob(".*.part"))
    truth = read_audio(reference_dir(clip) / "soundtrack.wav")
    extracted = read_audio(record.path)[:, : truth.shape[1]]
    snr_db = 10 * np.log10(np.sum(truth**2) / np.sum((extracted - truth) ** 2))
    assert snr_db > (90 if rate_hz == 48_000 else 30)  # 44.1 kHz loses the hiss above 20 kHz


def test_demo_reference_holds_the_clean_stems(tmp_path: Path) -> None:
    clip = make_demo_clip(tmp_path / "film.mov", duration_s=2.0, seed=3)
    ref = reference_dir(clip)
    stems = {name: read_audio(ref / f"{name}.wav") for name in ("dialogue", "music", "effects", "mix")}
    assert np.allclose(stems["mix"], stems["dialogue"] + stems["music"] + stems["effects"], atol=1e-6)
    note = json.loads((ref / "reference.json").read_text())
    assert note["seed"] == 3 and note["duration_s"] == 2.0
    soundtrack = read_audio(ref / "soundtrack.wav")
    assert np.max(np.abs(soundtrack)) <= 0.9
    with pytest.raises(ValueError, match="film.avi"):
        make_demo_clip(tmp_path / "film.avi", duration_s=1.0)
