"""Loudness on real recordings from Debian packages (filmrestore/corpus.py).

ffmpeg's ``ebur128`` filter (libebur128's algorithm, its own code) is the reference for
integrated loudness, loudness range and true peak; silero-vad's dialogue gating is checked
on real speech laid over real music, where we know when the voice speaks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import write_audio
from filmrestore.corpus import find_recordings
from filmrestore.loudness.measure import measure_array, measure_file
from filmrestore.loudness.meter import SUB_BLOCK_S
from filmrestore.loudness.speech import mask_from_segments, speech_activity, speech_segments

FS = 48_000
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


def decode(path: Path, seconds: float | None = None, channels: int | None = None) -> np.ndarray:
    """A recording decoded by ffmpeg to 48 kHz float32. [shape=(C, T)]"""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    if seconds is not None:
        cmd += ["-t", str(seconds)]
    if channels is not None:
        cmd += ["-ac", str(channels)]
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                            "stream=channels", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True)
    n_channels = channels or int(probe.stdout.strip())
    raw = subprocess.run(cmd + ["-ar", str(FS), "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, n_channels).T.copy()


def ffmpeg_ebur128(path: Path) -> dict[str, float]:
    """Integrated loudness, LRA and true peak from ffmpeg's ebur128 summary."""
    run = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af",
                          "ebur128=peak=true", "-f", "null", "-"],
                         capture_output=True, text=True, check=True, timeout=120)
    summary = run.stderr[run.stderr.rindex("Summary:"):]
    return {"integrated_lufs": float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),
            "lra_lu": float(re.search(r"LRA:\s+(-?[\d.]+) LU", summary).group(1)),
            "true_peak_dbtp": float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))}


def _recording(kind: str, name: str) -> Path:
    found = [p for p in find_recordings(kind) if p.name == name]
    if not found:
        pytest.skip(f"corpus recording {name} ({kind}) is not installed")
    return found[0]


def dutch_speech(n_files: int = 12) -> list[np.ndarray]:
    """Dutch voice-acting lines of Fish Fillets NG, mono 48 kHz. [each shape=(T,)]"""
    lines = [p for p in find_recordings("speech") if p.suffix == ".ogg"]
    if len(lines) < n_files:
        pytest.skip("fillets-ng-data-nl is not installed")
    picked = [lines[i] for i in np.linspace(0, len(lines) - 1, n_files).astype(int)]
    return [decode(p, channels=1)[0] for p in picked]


@pytest.mark.parametrize("name", ["music", "speech", "surround"])
def test_agrees_with_ffmpeg_ebur128_on_real_recordings(tmp_path: Path, name: str) -> None:
    """A Colobot music track (stereo), Dutch speech (mono) and a 5.1 spread of the music."""
    if name == "speech":
        x = np.concatenate([np.concatenate([line, np.zeros(FS // 2, np.float32)]) for line in dutch_speech()])[None]
    else:
        x = decode(_recording("music", "Constructive.ogg"), seconds=40.0)
        if name == "surround":  # FL FR FC LFE BL BR: surrounds weighted 1.41, LFE excluded
            x = np.stack([x[0], x[1], 0.5 * (x[0] + x[1]), x[0], 0.7 * x[1], 0.7 * x[0]])
    path = tmp_path / f"{name}.wav"
    write_audio(path, x, FS, subtype="FLOAT")
    theirs = ffmpeg_ebur128(path)
    ours = measure_file(path)
    assert ours.integrated_lufs == pytest.approx(theirs["integrated_lufs"], abs=0.1)
    assert ours.lra_lu == pytest.approx(theirs["lra_lu"], abs=0.2)  # ffmpeg's histogram: 0.1 LU bins
    assert ours.true_peak_dbtp == pytest.approx(theirs["true_peak_dbtp"], abs=0.2)


def test_silence_reads_minus_inf_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    write_audio(path, np.zeros((2, 5 * FS), np.float32), FS, subtype="FLOAT")
    report = measure_file(path, dialogue_from_programme=True).to_dict()
    assert report["integrated_lufs"] is None and report["true_peak_dbtp"] is None
    assert report["dialogue_lufs"] is None and report["lra_lu"] == 0.0


@pytest.fixture(scope="module")
def speech_over_music() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _speech_over_music()


def _speech_over_music() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real Dutch lines with 2-4 s pauses over a real music track 12 dB under the voice.

    Returns (programme [shape=(2, T)], dialogue [shape=(T,)], truth: speech-active 100 ms
    sub-blocks [shape=(T // 4800,)] bool, from where the lines were placed).
    """
    rng = np.random.default_rng(4)
    pieces, truth = [], []
    for line in dutch_speech(10):
        pause = np.zeros(int(rng.uniform(2.0, 4.0) * FS), np.float32)
        pieces += [pause, line]
        truth += [np.zeros(len(pause), bool), np.abs(line) > 0]
    dialogue = np.concatenate(pieces)
    spoken = np.concatenate(truth)
    music = decode(_recording("music", "Constructive.ogg"), seconds=len(dialogue) / FS + 1)[:, :len(dialogue)]
    voice_rms = np.sqrt(np.mean(dialogue[spoken] ** 2))
    music *= voice_rms / np.sqrt(np.mean(music ** 2)) * 10 ** (-12 / 20)
    programme = (music + dialogue).astype(np.float32)
    # Truth: the sub-blocks where a line is voiced, within 25 dB of that line's loudest.
    sub = int(SUB_BLOCK_S * FS)
    n_sub = len(dialogue) // sub
    level_db = 10 * np.log10(np.mean(dialogue[:n_sub * sub].reshape(n_sub, sub) ** 2, axis=1) + 1e-20)
    sub_truth = np.zeros(n_sub, bool)
    start = 0
    for piece, is_line in zip(pieces, [False, True] * len(pieces)):
        first, last = start // sub, min((start + len(piece)) // sub, n_sub)
        if is_line and last > first:
            sub_truth[first:last] = level_db[first:last] > level_db[first:last].max() - 25.0
        start += len(piece)
    return programme, dialogue, sub_truth


def test_dialogue_lufs_tracks_the_speech_over_music(speech_over_music) -> None:
    """silero-vad on the programme itself finds the lines; dialogue_lufs measures them."""
    programme, dialogue, truth = speech_over_music
    mask = speech_activity(programme, FS, source="programme")
    recall = (mask & truth).sum() / truth.sum()
    precision = (mask & truth).sum() / mask.sum()
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)
    report = measure_array(programme, FS, speech=mask)
    expected = measure_array(programme, FS, speech=truth).dialogue_lufs  # gated on the truth
    assert report.dialogue_lufs == pytest.approx(expected, abs=0.3)
    assert report.dialogue_lufs > report.integrated_lufs + 0.5  # pauses (music only) excluded
    stem_mask = speech_activity(dialogue[None], FS)  # from a clean dialogue stem
    assert (stem_mask & truth).sum() / truth.sum() >= 0.9


def test_speech_segments_round_trip_through_json(speech_over_music) -> None:
    _, dialogue, _ = speech_over_music
    mask = speech_activity(dialogue[None], FS)
    segments = speech_segments(mask)
    assert segments and all(b > a for a, b in segments)
    import json

    restored = mask_from_segments(json.loads(json.dumps(segments)), len(mask))
    np.testing.assert_array_equal(restored, mask)
