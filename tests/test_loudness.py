"""Loudness meter, presets, gain and true-peak limiter (filmrestore/loudness/).

Cases follow EBU Tech 3341 (meter) and Tech 3342 (loudness range) where they can be
synthesised; every signal is made here at 48 kHz.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest

from filmrestore.audio import AudioWriter, write_audio
from filmrestore.errors import ConfigError, SilentProgrammeError
from filmrestore.loudness.channels import channel_weights_for
from filmrestore.loudness.limiter import TruePeakLimiter
from filmrestore.loudness.measure import measure_array, measure_file
from filmrestore.loudness.meter import LoudnessMeter
from filmrestore.loudness.specs import PRESETS, get_preset, programme_gain, programme_gain_db, spec_label, verdict
from filmrestore.loudness.speech import speech_activity

FS = 48_000
RNG_SEED = 1770


def sine(level_dbfs: float, duration_s: float, freq_hz: float = 1000.0, n_channels: int = 2,
         phase_rad: float = 0.0) -> np.ndarray:
    """A sine whose peak is ``level_dbfs``, on every channel. [shape=(n_channels, frames)]"""
    t = np.arange(int(round(duration_s * FS))) / FS
    tone = 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq_hz * t + phase_rad)
    return np.tile(tone, (n_channels, 1))


def steps(*levels_and_durations: tuple[float, float]) -> np.ndarray:
    return np.concatenate([sine(level, dur) for level, dur in levels_and_durations], axis=1)


def db(x: float) -> float:
    return 20 * math.log10(x)


# ----------------------------------------------------------------------------- EBU Tech 3341
# Every case of Tech 3341 (2016/2023) Table 1 that is defined by its text: 1-6 and 9-19.
# Cases 7, 8 and 20-23 are recordings of the EBU test set (not synthesisable); our real-
# recording agreement with ffmpeg's ebur128 is in tests/test_loudness_real.py.
TECH3341_LUFS_TOL = 0.1  # +-0.1 LU for M, S and I (Tech 3341 §2.9)
TP_TOL_ABOVE_DB, TP_TOL_BELOW_DB = 0.2, 0.4  # true peak: +0.2 / -0.4 dB (Tech 3341 §2.9)


@pytest.mark.parametrize("level_dbfs", [-23.0, -33.0])
def test_tech3341_cases_1_2_steady_sine_reads_its_level(level_dbfs: float) -> None:
    """Stereo 1 kHz at -23 / -33 dBFS for 20 s -> M, S, I = level +-0.1."""
    report = measure_array(sine(level_dbfs, 20.0), FS)
    for value in (report.integrated_lufs, report.momentary_max_lufs, report.short_term_max_lufs):
        assert value == pytest.approx(level_dbfs, abs=TECH3341_LUFS_TOL)


@pytest.mark.parametrize("case,segments", [
    (3, [(-36, 10), (-23, 60), (-36, 10)]),  # relative gate removes the -36 dB parts
    (4, [(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)]),  # absolute gate too
    (5, [(-26, 20), (-20, 20.1), (-26, 20)]),  # -26 dB parts stay above the relative gate
])
def test_tech3341_cases_3_4_5_gating_reads_minus_23(case: int, segments: list[tuple[float, float]]) -> None:
    assert measure_array(steps(*segments), FS).integrated_lufs == pytest.approx(-23.0, abs=TECH3341_LUFS_TOL)


@pytest.mark.parametrize("layout", ["5.0", "5.1"])
def test_tech3341_case_6_surround_channel_weights(layout: str) -> None:
    """L, R at -28, C at -24, Ls, Rs at -30 dBFS, 20 s -> I = -23 (surrounds weighted +1.5 dB).

    In 5.1 the LFE channel carries a loud tone that must not count.
    """
    levels = {"FL": -28.0, "FR": -28.0, "FC": -24.0, "LFE": -10.0, "BL": -30.0, "BR": -30.0}
    if layout == "5.0":
        del levels["LFE"]
    x = np.concatenate([sine(level, 20.0, n_channels=1) for level in levels.values()])
    weights = None if layout == "5.1" else [1.0, 1.0, 1.0, 1.41, 1.41]
    report = measure_array(x, FS, channel_weights=weights)
    assert report.integrated_lufs == pytest.approx(-23.0, abs=TECH3341_LUFS_TOL)


def _meter_of(x: np.ndarray) -> LoudnessMeter:
    meter = LoudnessMeter(FS, x.shape[0])
    meter.process(x)
    return meter


def test_the_momentary_series_holds_each_seconds_loudest_400_ms() -> None:
    """A 1 s, 997 Hz tone at -20 dBFS (-23.0 LUFS) from 2 s to 3 s of 6 s of silence: the plot's
    momentary series reads -23.0 in the second the tone fills, nothing before it."""
    t = np.arange(6 * FS) / FS
    x = (0.1 * np.sin(2 * np.pi * 997 * t) * ((t >= 2.0) & (t < 3.0)))[None, :]
    report = _meter_of(x).result()
    assert report.momentary_series_s == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert report.momentary_series_lufs[2] == pytest.approx(-23.0, abs=0.1)
    assert report.momentary_series_lufs[1] == -np.inf and report.momentary_series_lufs[0] == -np.inf
    assert -40.0 < report.momentary_series_lufs[3] < -23.0  # the tone's last 300 ms in a 400 ms block
    assert report.series_to_dict()["momentary_max_lufs"][1] is None  # JSON: silence is null


@pytest.mark.parametrize("case,high_s,low_s,window_s,repeats", [
    (9, 1.34, 1.66, 3.0, 5),  # S: 1.34 s at -20 + 1.66 s at -30 in every 3 s window
    (12, 0.18, 0.22, 0.4, 25),  # M: 0.18 s at -20 + 0.22 s at -30 in every 0.4 s window
])
def test_tech3341_cases_9_12_alternating_tone_reads_a_constant_minus_23(
        case: int, high_s: float, low_s: float, window_s: float, repeats: int) -> None:
    x = np.concatenate([steps((-20, high_s), (-30, low_s)) for _ in range(repeats)], axis=1)
    series = _meter_of(x).loudness_series(window_s)
    settled = series[int(round(high_s * 100)):]  # every window that has seen a whole period
    assert len(settled) > 50
    assert settled.min() >= -23.0 - TECH3341_LUFS_TOL and settled.max() <= -23.0 + TECH3341_LUFS_TOL


@pytest.mark.parametrize("case,burst_s,levels", [
    (10, 3.0, [-23.0] * 20),  # S max of 3 s bursts at any position
    (11, 3.0, [-38.0 + i for i in range(20)]),  # S max of 3 s bursts at -38 .. -19
    (13, 0.4, [-23.0] * 20),  # M max of 0.4 s bursts at any position
    (14, 0.4, [-38.0 + i for i in range(20)]),  # M max of 0.4 s bursts at -38 .. -19
])
def test_tech3341_cases_10_11_13_14_burst_maxima(case: int, burst_s: float, levels: list[float]) -> None:
    """A tone burst as long as the window, starting anywhere (not on the 100 ms grid): max = level."""
    rng = np.random.default_rng(RNG_SEED + case)
    for level in levels:
        lead_s = float(rng.uniform(0.0, 1.0))  # off the meter's 100 ms grid
        x = np.concatenate([np.zeros((2, int(lead_s * FS))), sine(level, burst_s), np.zeros((2, FS))], axis=1)
        report = measure_array(x, FS)
        measured = report.short_term_max_lufs if burst_s == 3.0 else report.momentary_max_lufs
        assert measured == pytest.approx(level, abs=TECH3341_LUFS_TOL), (level, lead_s)


def _fades(n_frames: int, fade_s: float) -> np.ndarray:
    """Raised-cosine fade in and out. [shape=(n_frames,)]"""
    ramp = np.sin(0.5 * np.pi * np.arange(int(fade_s * FS)) / (fade_s * FS)) ** 2
    envelope = np.ones(n_frames)
    envelope[:len(ramp)], envelope[n_frames - len(ramp):] = ramp, ramp[::-1]
    return envelope


@pytest.mark.parametrize("case,freq_div,phase_deg,amplitude,expected_dbtp", [
    (15, 4, 0.0, 0.5, -6.0),  # fs/4 sine, samples on the peaks
    (16, 4, 45.0, 0.5, -6.0),  # fs/4 at 45 deg: samples 3 dB below the peak
    (17, 6, 60.0, 0.5, -6.0),  # fs/6 at 60 deg
    (18, 8, 67.5, 0.5, -6.0),  # fs/8 at 67.5 deg
    (19, 4, 45.0, 1.41, 3.0),  # +3 dBTP from samples that stay below full scale
])
def test_tech3341_cases_15_19_true_peak(case: int, freq_div: int, phase_deg: float, amplitude: float,
                                        expected_dbtp: float) -> None:
    """A steady sine's true peak is its amplitude. The tone fades in and out over 20 ms: an
    abrupt start at a non-zero phase is a step, whose band-limited interpolation really does
    overshoot (Gibbs), by 0.7 dB at fs/8 and 67.5 deg."""
    x = sine(db(amplitude), 1.0, FS / freq_div, phase_rad=np.deg2rad(phase_deg)) * _fades(FS, 0.02)
    assert np.abs(x).max() < 1.0
    report = measure_array(x, FS)
    for peak in (report.true_peak_dbtp, *report.true_peak_per_channel_dbtp):
        assert expected_dbtp - TP_TOL_BELOW_DB <= peak <= expected_dbtp + TP_TOL_ABOVE_DB


@pytest.mark.parametrize("freq_hz,phase_deg", [(997.0, 10.0), (5000.0, 33.0), (11520.0, 0.0)])
def test_true_peak_of_other_sines_within_tech3341_tolerance(freq_hz: float, phase_deg: float) -> None:
    x = sine(-6.0, 1.0, freq_hz, phase_rad=np.deg2rad(phase_deg))
    assert -6.0 - TP_TOL_BELOW_DB <= measure_array(x, FS).true_peak_dbtp <= -6.0 + TP_TOL_ABOVE_DB


def test_true_peak_of_an_inter_sample_peak() -> None:
    """A single-sample impulse in a band-limited pair: the meter's peak is above the samples."""
    x = np.zeros((1, FS // 10))
    x[0, 1000], x[0, 1001] = 0.5, 0.5  # the band-limited interpolation peaks between them
    report = measure_array(x, FS)
    assert report.true_peak_dbtp > db(0.5) + 0.5


def test_true_peak_off_skips_the_peak_and_keeps_the_loudness() -> None:
    x = sine(-20.0, 5.0)
    with_peak, without = measure_array(x, FS), measure_array(x, FS, true_peak=False)
    assert without.integrated_lufs == with_peak.integrated_lufs
    assert math.isnan(without.true_peak_dbtp) and without.to_dict()["true_peak_dbtp"] is None


# ----------------------------------------------------------------------------- EBU Tech 3342
# Cases 1-4 (stepped tones); cases 5 and 6 are recordings of the EBU test set.
TECH3342_LRA_TOL = 1.0  # +-1 LU (Tech 3342 §4)


@pytest.mark.parametrize("case,segments,expected_lu", [
    (1, [(-20, 20), (-30, 20)], 10.0),
    (2, [(-20, 20), (-15, 20)], 5.0),
    (3, [(-40, 20), (-20, 20)], 20.0),
    (4, [(-50, 20), (-35, 20), (-20, 20), (-35, 20), (-50, 20)], 15.0),
])
def test_tech3342_loudness_range(case: int, segments: list[tuple[float, float]], expected_lu: float) -> None:
    lra = measure_array(steps(*segments), FS, true_peak=False).lra_lu
    assert lra == pytest.approx(expected_lu, abs=TECH3342_LRA_TOL)
    assert lra == pytest.approx(expected_lu, abs=0.2)  # what this meter actually achieves


# ----------------------------------------------------------------------------- references

def test_agrees_with_pyloudnorm_on_stereo_noise() -> None:
    rng = np.random.default_rng(RNG_SEED)
    noise = 0.1 * rng.standard_normal((2, 10 * FS))
    noise[:, 4 * FS:6 * FS] *= 0.1  # a quiet passage so the gates have work to do
    ours = measure_array(noise, FS).integrated_lufs
    theirs = pyloudnorm.Meter(FS, filter_class="DeMan").integrated_loudness(noise.T)
    theirs_default = pyloudnorm.Meter(FS).integrated_loudness(noise.T)
    assert ours == pytest.approx(theirs, abs=0.05)
    assert ours == pytest.approx(theirs_default, abs=0.1)  # cookbook shelf: 0.04 LU off on noise


def _ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBFS) from ffmpeg's ebur128 filter."""
    run = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af",
                          "ebur128=peak=true", "-f", "null", "-"],
                         capture_output=True, text=True, check=True, timeout=60)
    summary = run.stderr[run.stderr.rindex("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))
    return integrated, peak


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_agrees_with_ffmpeg_ebur128(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED + 1)
    t = np.arange(12 * FS) / FS
    envelope = 0.5 + 0.45 * np.sin(2 * np.pi * 0.3 * t)  # slow swell: gating matters
    x = np.stack([0.08 * rng.standard_normal(len(t)) * envelope,
                  0.2 * np.sin(2 * np.pi * 440 * t) * envelope]).astype(np.float32)
    path = tmp_path / "stereo.wav"
    write_audio(path, x, FS, subtype="FLOAT")
    ffmpeg_lufs, ffmpeg_peak_dbfs = _ffmpeg_ebur128(path)
    report = measure_file(path)
    assert report.integrated_lufs == pytest.approx(ffmpeg_lufs, abs=0.1)
    assert report.true_peak_dbtp == pytest.approx(ffmpeg_peak_dbfs, abs=0.3)


# ----------------------------------------------------------------------------- channel weights

def test_channel_weights_tables() -> None:
    assert channel_weights_for(2).tolist() == [1.0, 1.0]
    assert channel_weights_for(6).tolist() == [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]
    assert channel_weights_for(12, "7.1.4").tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.41, 1.41,
                                                         1.0, 1.0, 1.0, 1.0]
    assert channel_weights_for(5).tolist() == [1.0, 1.0, 1.0, 1.41, 1.41]  # L R C Ls Rs
    with pytest.raises(ConfigError, match="9 channels"):
        channel_weights_for(9)
    with pytest.raises(ConfigError, match="layout '5.1' has 6"):
        channel_weights_for(2, "5.1")


@pytest.mark.parametrize(("n_channels", "mask", "weights"), [
    (5, None, [1.0, 1.0, 1.0, 1.41, 1.41]),  # no speaker mask: L R C Ls Rs
    (6, 0x60F, [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]),  # 5.1 with side surrounds (FL FR FC LFE SL SR)
    (8, 0x63F, [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.41, 1.41]),  # 7.1: rears at 135 deg, sides at 90
    (10, 0x2D03F, [1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.0, 1.0, 1.0, 1.0]),  # 5.1.4
])
def test_file_speaker_mask_sets_the_channel_weights(tmp_path: Path, n_channels: int, mask: int | None,
                                                    weights: list[float]) -> None:
    """A -20 dBFS 1 kHz tone in each channel in turn of a WAV whose WAVE_FORMAT_EXTENSIBLE
    mask names the speakers: each reads 10 log10(G_i) LU above the front-left reading."""
    readings = []
    for channel in range(n_channels):
        path = tmp_path / f"c{channel}.wav"
        with AudioWriter(path, FS, n_channels, "FLOAT", mask) as writer:
            writer.write(_tone_in(channel, n_channels).astype(np.float32))
            writer.close()
        readings.append(measure_file(path).integrated_lufs)
    for channel, weight in enumerate(weights):
        if weight == 0.0:
            assert readings[channel] is None or readings[channel] == -math.inf
        else:
            assert readings[channel] - readings[0] == pytest.approx(10 * math.log10(weight), abs=0.01)


def _tone_in(channel: int, n_channels: int) -> np.ndarray:
    x = np.zeros((n_channels, 5 * FS))
    x[channel] = sine(-20.0, 5.0, n_channels=1)[0]
    return x


@pytest.mark.parametrize("n_channels,channel,expected_db", [
    (6, 4, 1.5),  # 5.1 BL (+-110 deg surround)
    (12, 6, 1.5),  # 7.1.4 SL (+-90 deg)
    (12, 4, 0.0),  # 7.1.4 BL (+-135 deg rear)
    (12, 8, 0.0),  # 7.1.4 TFL (height)
])
def test_surround_weight_is_plus_1_5_db(n_channels: int, channel: int, expected_db: float) -> None:
    front = measure_array(_tone_in(0, n_channels), FS).integrated_lufs
    other = measure_array(_tone_in(channel, n_channels), FS).integrated_lufs
    assert other - front == pytest.approx(expected_db, abs=0.1)


def test_lfe_is_excluded_but_its_true_peak_is_reported() -> None:
    report = measure_array(_tone_in(3, 12), FS)
    assert report.integrated_lufs == -math.inf
    assert report.true_peak_per_channel_dbtp[3] == pytest.approx(-20.0, abs=0.2)
    assert report.to_dict()["integrated_lufs"] is None


# ----------------------------------------------------------------------------- silence, streaming

def test_silence_gives_minus_inf_and_json_nulls() -> None:
    report = measure_array(np.zeros((2, 3 * FS)), FS)
    assert report.integrated_lufs == -math.inf
    assert report.true_peak_dbtp == -math.inf
    d = report.to_dict()
    assert set(d) == {"integrated_lufs", "momentary_max_lufs", "short_term_max_lufs", "lra_lu",
                      "true_peak_dbtp", "true_peak_per_channel_dbtp", "dialogue_lufs", "dialogue_share", "channels",
                      "duration_s"}
    assert d["integrated_lufs"] is None and d["true_peak_per_channel_dbtp"] == [None, None]
    json.dumps(d, allow_nan=False)  # no NaN or inf reaches JSON


def test_streaming_equals_whole_at_random_block_sizes() -> None:
    rng = np.random.default_rng(RNG_SEED + 2)
    x = (0.1 * rng.standard_normal((6, 12 * FS)) * np.linspace(0.01, 1, 12 * FS)).astype(np.float32)
    whole = measure_array(x, FS)
    meter = LoudnessMeter(FS, 6)
    start = 0
    while start < x.shape[1]:
        size = int(rng.integers(1, 40_000))
        meter.process(x[:, start:start + size])
        start += size
    streamed = meter.result()
    for key, value in whole.to_dict().items():
        assert streamed.to_dict()[key] == pytest.approx(value, abs=1e-6), key
    assert streamed.short_term_series_lufs == pytest.approx(whole.short_term_series_lufs, abs=1e-9)
    assert len(whole.short_term_series_s) == 10  # 3 s .. 12 s at 1 s steps


def test_measure_file_streams_the_same_as_the_array(tmp_path: Path) -> None:
    x = steps((-30, 4), (-20, 4)).astype(np.float32)
    write_audio(tmp_path / "p.wav", x, FS, subtype="FLOAT")
    calls: list[tuple[int, int]] = []
    report = measure_file(tmp_path / "p.wav", block_frames=7777, on_progress=lambda d, t: calls.append((d, t)))
    assert report.integrated_lufs == pytest.approx(measure_array(x, FS).integrated_lufs, abs=1e-6)
    assert calls[-1] == (8 * FS, 8 * FS)
    assert report.duration_s == pytest.approx(8.0)


# ----------------------------------------------------------------------------- dialogue gating

def _speech_like(rng: np.random.Generator, duration_s: float, level_dbfs: float) -> np.ndarray:
    """Syllable-rate (4 Hz) modulated band noise in 1.5 s phrases with 1.5 s pauses. [shape=(T,)]"""
    t = np.arange(int(duration_s * FS)) / FS
    noise = np.convolve(rng.standard_normal(len(t)), np.hanning(24), mode="same")
    syllables = np.abs(np.sin(2 * np.pi * 2 * t))
    phrases = (t % 3.0) < 1.5
    x = noise * syllables * phrases
    return x * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(x[phrases] ** 2))


def test_speech_activity_follows_the_phrases_and_ignores_a_noise_bed() -> None:
    rng = np.random.default_rng(RNG_SEED + 3)
    stem = _speech_like(rng, 12.0, -25.0)
    stem[6 * FS:] = 0.0
    stem[6 * FS:] += 10 ** (-78 / 20) * rng.standard_normal(6 * FS)  # floor
    stem[int(7.5 * FS):9 * FS] = 10 ** (-64 / 20) * rng.standard_normal(int(1.5 * FS))  # bleed
    mask = speech_activity(stem[None, :], FS)
    assert mask.shape == (120,)
    phrase_sub_blocks = [k for k in range(60) if (k % 30) < 15]
    assert mask[phrase_sub_blocks].mean() > 0.9  # phrases heard (energy rule)
    assert not mask[[k for k in range(60) if 17 <= (k % 30) < 28]].any()  # pauses silent
    assert not mask[60:].any()  # noise bleed 14 dB over the floor: silero says no speech


def test_dialogue_gated_loudness_measures_speech_time() -> None:
    rng = np.random.default_rng(RNG_SEED + 4)
    dialogue = _speech_like(rng, 30.0, -24.0)
    music = sine(-30.0, 30.0, 220.0, n_channels=1)[0]  # survives the relative gate
    programme = np.stack([dialogue + music, dialogue + music])
    mask = speech_activity(dialogue[None, :], FS)
    report = measure_array(programme, FS, speech=mask)
    phrases_only = np.concatenate([programme[:, s * FS:int((s + 1.5) * FS)] for s in range(0, 30, 3)], 1)
    expected = measure_array(phrases_only, FS).integrated_lufs
    assert report.dialogue_lufs == pytest.approx(expected, abs=0.5)
    assert report.dialogue_lufs > report.integrated_lufs + 1.0  # pauses no longer dilute it


# ----------------------------------------------------------------------------- presets, gain, verdict

def test_presets_and_overrides() -> None:
    assert (PRESETS["ebu-r128"].target_lufs, PRESETS["ebu-r128"].ceiling_dbtp) == (-23.0, -1.0)
    assert (PRESETS["atsc-a85"].target_lufs, PRESETS["atsc-a85"].ceiling_dbtp) == (-24.0, -2.0)
    netflix = get_preset("netflix")
    assert (netflix.target_lufs, netflix.ceiling_dbtp, netflix.gate) == (-27.0, -2.0, "dialogue")
    custom = get_preset("ebu-r128", target=-16, ceiling=-1.5, gate="dialogue")
    assert (custom.target_lufs, custom.ceiling_dbtp, custom.gate) == (-16.0, -1.5, "dialogue")
    # A named spec whose numbers changed is no longer that spec; the same numbers keep it.
    assert (custom.name, custom.based_on, spec_label(custom)) == ("custom", "ebu-r128", "custom (from ebu-r128)")
    assert get_preset("ebu-r128", target=-23.0, ceiling=-1.0, gate="programme") is PRESETS["ebu-r128"]
    changed = get_preset("netflix", gate="programme", ceiling=-0.1)
    assert (changed.name, changed.based_on, changed.fallback_target_lufs) == ("custom", "netflix", None)
    report = measure_array(sine(-23.0, 5.0), FS)
    assert (verdict(report, custom)["preset"], verdict(report, custom)["based_on"]) == ("custom", "ebu-r128")
    assert get_preset("custom", target=-20).target_lufs == -20.0
    with pytest.raises(ConfigError, match="unknown loudness preset 'bbc'"):
        get_preset("bbc")
    with pytest.raises(ConfigError, match="gate"):
        get_preset("netflix", gate="music")


def test_programme_gain_reaches_the_target() -> None:
    x = sine(-30.0, 10.0)
    spec = get_preset("ebu-r128")
    gain_db = programme_gain_db(measure_array(x, FS), spec)
    assert gain_db == pytest.approx(7.0, abs=0.1)
    after = measure_array(x * 10 ** (gain_db / 20), FS)
    assert after.integrated_lufs == pytest.approx(-23.0, abs=0.01)
    assert verdict(after, spec)["pass"] is True
    assert verdict(measure_array(x, FS), spec)["loudness_pass"] is False


def test_dialogue_gain_and_fallback_flag() -> None:
    report = measure_array(sine(-30.0, 10.0), FS)
    spec = get_preset("netflix")
    fallback = programme_gain(report, spec)
    assert fallback.dialogue_fallback and fallback.basis == "programme"
    report.dialogue_lufs = -25.0
    decision = programme_gain(report, spec)
    assert (decision.basis, decision.gain_db, decision.dialogue_fallback) == ("dialogue", -2.0, False)


def test_netflix_measures_dialogue_unless_it_is_under_15_percent_of_the_programme() -> None:
    """Netflix's own rule: dialogue-gated at -27 LUFS +-2 LU; with 15 % dialogue or less, the
    programme at -24 LUFS. The share counts gating blocks above the absolute gate."""
    programme = sine(-30.0, 20.0)  # every block audible
    n_sub_blocks = 200
    spec = get_preset("netflix")
    for share, basis, target in ((0.10, "programme", -24.0), (0.50, "dialogue", -27.0)):
        mask = np.zeros(n_sub_blocks, bool)
        mask[: int(share * n_sub_blocks)] = True
        report = measure_array(programme, FS, speech=mask)
        assert report.dialogue_share == pytest.approx(share, abs=0.03)
        decision = programme_gain(report, spec)
        assert (decision.basis, decision.target_lufs) == (basis, target)
        assert decision.gain_db == pytest.approx(target - decision.measured_lufs)
        result = verdict(report, spec)
        assert (result["gate"], result["target_lufs"], result["tolerance_lu"]) == (basis, target, 2.0)
        assert (result["fallback"] is not None) == (basis == "programme")
    assert "under 15 %" in verdict(measure_array(programme, FS, speech=np.r_[np.ones(10, bool),
                                                                              np.zeros(190, bool)]), spec)["fallback"]


def test_silent_programme_is_never_amplified() -> None:
    report = measure_array(np.zeros((2, 2 * FS)), FS)
    with pytest.raises(SilentProgrammeError, match="film.wav.*silent"):
        programme_gain_db(report, get_preset("ebu-r128"), source="film.wav")
    assert verdict(report, get_preset("ebu-r128"))["pass"] is False


def test_a_short_or_very_quiet_programme_is_not_called_silent() -> None:
    rng = np.random.default_rng(5)
    short = measure_array(0.1 * rng.standard_normal((1, FS // 10)), FS)  # 0.1 s: no 400 ms block
    with pytest.raises(SilentProgrammeError, match=r"clip.wav: is too short to measure \(0.100 s"):
        programme_gain_db(short, get_preset("ebu-r128"), source="clip.wav")
    quiet = measure_array(10 ** (-75 / 20) * rng.standard_normal((1, 5 * FS)), FS)  # real noise, near -75 dBFS
    assert quiet.true_peak_dbtp > -70.0 and quiet.integrated_lufs == float("-inf")
    with pytest.raises(SilentProgrammeError, match=r"too quiet to measure.*-70 LUFS.*true peak -6\d\.\d dBTP"):
        programme_gain_db(quiet, get_preset("ebu-r128"), source="film.wav")


# ----------------------------------------------------------------------------- limiter

def _limit(x: np.ndarray, ceiling_dbtp: float, block_sizes: list[int] | None = None) -> np.ndarray:
    limiter = TruePeakLimiter(FS, x.shape[0], ceiling_dbtp)
    bounds = np.cumsum([0, *(block_sizes or [x.shape[1]])])
    outs = [limiter.process(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return np.concatenate([*outs, limiter.flush()], axis=1)  # aligned: no delay to cut


@pytest.mark.parametrize("ceiling_dbtp,tone_peak_dbfs", [(-1.0, 5.0), (-6.0, 0.0), (-2.0, 4.0)])
def test_limiter_keeps_true_peak_under_the_ceiling(ceiling_dbtp: float, tone_peak_dbfs: float) -> None:
    x = sine(tone_peak_dbfs, 2.0, 997.0)  # +6 dB over the ceiling
    out = _limit(x, ceiling_dbtp)
    assert out.shape == x.shape
    assert measure_array(out, FS).true_peak_dbtp <= ceiling_dbtp
    assert measure_array(out, FS).true_peak_dbtp >= ceiling_dbtp - 0.5  # not over-limited


def test_limiter_passes_a_tone_below_the_ceiling_unchanged() -> None:
    x = sine(-3.0, 1.0, 997.0).astype(np.float32)
    out = _limit(x, -1.0)
    assert np.abs(out - x).max() <= np.abs(x).max() * (10 ** (0.01 / 20) - 1)


def test_limiter_gain_is_steady_on_a_steady_tone() -> None:
    x = sine(3.0, 2.0, 997.0)
    out = _limit(x, -1.0)
    settled = slice(FS // 10, x.shape[1])  # after the attack and the hold
    cycles = 997 * 2 - 200
    gain_db = [db(np.abs(out[0, settled][i * 48:(i + 1) * 48 + 48]).max()
                  / np.abs(x[0, settled][i * 48:(i + 1) * 48 + 48]).max()) for i in range(0, cycles, 37)]
    assert max(gain_db) - min(gain_db) < 0.1
    assert np.mean(gain_db) == pytest.approx(-4.15, abs=0.3)  # about ceiling - margin - peak


def test_limiter_blockwise_equals_whole() -> None:
    rng = np.random.default_rng(RNG_SEED + 5)
    x = (0.5 * rng.standard_normal((3, FS)) * np.repeat(rng.uniform(0.1, 3, 20), FS // 20)).astype(np.float32)
    whole = _limit(x, -1.0)
    sizes = list(rng.integers(1, 6000, size=400))
    sizes = [*sizes[:np.searchsorted(np.cumsum(sizes), x.shape[1])], x.shape[1]]
    sizes[-1] = x.shape[1] - sum(sizes[:-1])
    blocked = _limit(x, -1.0, sizes)
    np.testing.assert_allclose(blocked, whole, atol=1e-6)
    assert measure_array(whole, FS, channel_weights=[1, 1, 1]).true_peak_dbtp <= -1.0


def test_linked_rows_get_the_block_gain_blockwise_as_whole() -> None:
    """The render's use: the bed's gain applied to the ADM object tracks too, aligned, in any blocks."""
    rng = np.random.default_rng(RNG_SEED + 9)
    x = (0.5 * rng.standard_normal((2, FS)) * np.repeat(rng.uniform(0.1, 3, 10), FS // 10)).astype(np.float32)
    tracks = (0.3 * rng.standard_normal((3, FS))).astype(np.float32)

    def run(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        limiter = TruePeakLimiter(FS, 2, -1.0, n_linked=3)
        bounds = np.cumsum([0, *sizes])
        parts = [limiter.process_linked(x[:, a:b], list(tracks[:, a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        parts.append(limiter.flush_linked())
        return np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)

    whole_x, whole_tracks = run([FS])
    sizes = [7, 100, 239, 5000, 1, 20_000]
    blocked_x, blocked_tracks = run([*sizes, FS - sum(sizes)])
    assert whole_x.shape == x.shape and whole_tracks.shape == tracks.shape
    np.testing.assert_allclose(blocked_x, whole_x, atol=1e-6)
    np.testing.assert_allclose(blocked_tracks, whole_tracks, atol=1e-6)
    audible = np.abs(x[0]) > 0.05  # where the gain the block got can be read off frame by frame
    gain = whole_x[0, audible] / x[0, audible]
    assert gain.min() < 0.5  # it limited
    np.testing.assert_allclose(whole_tracks[:, audible], tracks[:, audible] * gain, rtol=1e-4, atol=1e-6)
    assert _limit(x, -1.0).tolist() == whole_x.tolist()  # linked rows do not change the block's own output


def test_oversampler_skips_only_frames_that_cannot_reach_the_floor() -> None:
    """The frame-skipping peak search equals the full 4x interpolation wherever it matters."""
    from filmrestore.loudness.kernels import TruePeakOversampler

    rng = np.random.default_rng(RNG_SEED + 6)
    levels = np.repeat([[0.01, 1.0, 0.01, 0.3, 0.01, 1.0], [0.3, 0.01, 0.01, 1.0, 0.01, 0.01]], 10_000, axis=1)
    x = (rng.standard_normal((2, 60_000)) * levels).astype(np.float32)
    full = np.abs(TruePeakOversampler(2).process(x)).max(axis=2)  # every frame, scipy upfirdn
    skipping = TruePeakOversampler(2)
    bounds = np.cumsum([0, 5000, 1, 20_000, 34_999])
    fast = np.concatenate([skipping.frame_peaks(x[:, a:b], 2.0) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    computed = fast > 0
    assert 0.1 < computed.mean() < 0.9  # some frames skipped, some not
    np.testing.assert_allclose(fast[computed], full[computed], rtol=1e-5)  # float32 reference
    assert full[~computed].max() <= 2.0
    assert (full > 2.0).any() and computed[full > 2.0].all()
    merged = TruePeakOversampler(2).frame_peaks(x, 2.0, per_channel=False)[0]
    np.testing.assert_array_equal(merged, fast.max(axis=0))


def test_measure_file_with_dialogue_stem(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED + 7)
    dialogue = _speech_like(rng, 9.0, -24.0)[None, :].astype(np.float32)
    programme = np.concatenate([dialogue, dialogue]) + sine(-30.0, 9.0, 220.0).astype(np.float32)
    write_audio(tmp_path / "mix.wav", programme, FS)
    write_audio(tmp_path / "dialogue.wav", dialogue, FS)
    report = measure_file(tmp_path / "mix.wav", block_frames=30_000, dialogue_path=tmp_path / "dialogue.wav")
    expected = measure_array(programme, FS, speech=speech_activity(dialogue, FS))
    assert report.dialogue_lufs == pytest.approx(expected.dialogue_lufs, abs=1e-6)
    assert report.to_dict()["dialogue_lufs"] == pytest.approx(report.dialogue_lufs, abs=1e-3)


def test_speech_segments_and_mask_round_trip() -> None:
    from filmrestore.loudness.speech import mask_from_segments, speech_segments

    rng = np.random.default_rng(RNG_SEED + 8)
    for mask in (rng.random(500) > 0.7, np.ones(7, bool), np.zeros(9, bool), np.r_[True, False, True]):
        segments = speech_segments(mask)
        assert json.loads(json.dumps(segments)) == segments
        np.testing.assert_array_equal(mask_from_segments(segments, len(mask)), mask)
    assert speech_segments(np.array([0, 1, 1, 0, 1], bool)) == [[0.1, 0.3], [0.4, 0.5]]


def test_vad_runs_on_one_torch_thread_and_restores_the_count_even_when_overlapping() -> None:
    """The VAD's LSTM is run on one thread (two thrash on a shared 2-core box); the process-wide
    count comes back afterwards, also when several titles run the VAD at once in threads."""
    import threading

    import torch

    from filmrestore.loudness.speech import vad_probabilities

    before = torch.get_num_threads()
    rng = np.random.default_rng(5)
    mono = (0.1 * rng.standard_normal(48_000 * 3)).astype(np.float32)
    alone, _ = vad_probabilities(mono, 48_000)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(vad_probabilities(mono, 48_000)[0]))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.get_num_threads() == before
    assert len(results) == 3 and all(np.array_equal(r, alone) for r in results)
