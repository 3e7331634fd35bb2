"""Loudness benchmark: our meter vs ffmpeg's ``ebur128`` filter vs pyloudnorm, side by side.

Generates, in a temporary folder, a stereo and a 7.1.4 programme of the same length
(default 60 minutes, 48 kHz, 24-bit) from real recordings of the corpus (Colobot music
tracks with Dutch speech lines over them, at about -23 LUFS), then measures each file with:

- ``ours``: filmrestore/loudness/, streaming 10 s blocks from the file (integrated, LRA, true peak);
- ``ours, no TP``: the same with ``true_peak=False`` (what the pipeline's loudness-only meters use);
- ``ours, ffmpeg weights`` (7.1.4 only): ffmpeg weights BL/BR/SL/SR/TBL/TBR 1.41 (the 5.1
  convention); BS.1770-4 Table 3 weights only |azimuth| 60-120 deg (SL/SR), so the two
  differ on purpose on 7.1.4 material;
- ``ffmpeg ebur128``: ``ffmpeg -af ebur128=peak=true`` (decoding included; single-threaded);
- ``pyloudnorm``: integrated loudness only, whole file in memory (stereo only: it has no
  weights past 5 channels).

Prints one table: wall time, CPU time, real-time factor and the figures each reports.

    .venv/bin/python benchmarks/loudness.py [--minutes 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from filmrestore.audio import AudioWriter, iter_blocks, read_info
from filmrestore.corpus import find_recordings
from filmrestore.loudness.channels import channel_weights_for
from filmrestore.loudness.meter import LoudnessMeter

FS = 48_000
BLOCK = 480_000
FFMPEG_714_WEIGHTS = [1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41, 1.0, 1.0, 1.41, 1.41]


def decode(path: Path) -> np.ndarray:
    """A recording decoded by ffmpeg to 48 kHz stereo float32. [shape=(2, T)]"""
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-ac", "2",
                          "-ar", str(FS), "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, 2).T.copy()


def source_material() -> tuple[list[np.ndarray], list[np.ndarray]]:
    music = [decode(p) for p in find_recordings("music")[:4]]
    speech = [decode(p)[0] for p in [p for p in find_recordings("speech") if p.suffix == ".ogg"][:40]]
    if not music or not speech:
        raise SystemExit("the corpus recordings (colobot-common-sounds, fillets-ng-data-nl) are not installed")
    return music, speech


def programme_blocks(minutes: float, music: list[np.ndarray], speech: list[np.ndarray]):
    """Yield (stereo block, speech block) pairs of BLOCK frames: music tracks in turn, a line
    of speech every few seconds, levels scaled toward -23 LUFS."""
    rng = np.random.default_rng(7)
    total = int(minutes * 60 * FS)
    track, pos, done = 0, 0, 0
    while done < total:
        n = min(BLOCK, total - done)
        x = np.zeros((2, n), np.float32)
        filled = 0
        while filled < n:
            src = music[track % len(music)]
            take = min(n - filled, src.shape[1] - pos)
            x[:, filled:filled + take] = 0.15 * src[:, pos:pos + take]
            filled, pos = filled + take, pos + take
            if pos >= src.shape[1]:
                track, pos = track + 1, 0
        voice = np.zeros(n, np.float32)
        at = int(rng.integers(0, FS))
        while at < n:
            line = speech[int(rng.integers(len(speech)))][: n - at]
            voice[at:at + len(line)] = 0.3 * line
            at += len(line) + int(rng.uniform(1.0, 4.0) * FS)
        yield x, voice
        done += n


def to_714(x: np.ndarray, voice: np.ndarray) -> np.ndarray:
    """FL FR FC LFE BL BR SL SR TFL TFR TBL TBR from a stereo block and a dialogue line."""
    left, right = x
    side = 0.5 * (left - right)
    return np.stack([left, right, voice + 0.3 * (left + right), 0.3 * (left + right),
                     0.5 * side, -0.5 * side, 0.6 * left, 0.6 * right,
                     0.3 * left, 0.3 * right, 0.2 * side, -0.2 * side]).astype(np.float32)


def write_files(folder: Path, minutes: float) -> dict[str, Path]:
    music, speech = source_material()
    paths = {"stereo": folder / f"programme_{minutes:g}min_stereo.wav",
             "7.1.4": folder / f"programme_{minutes:g}min_714.wav"}
    with AudioWriter(paths["stereo"], FS, 2) as stereo, AudioWriter(paths["7.1.4"], FS, 12) as bed:
        for x, voice in programme_blocks(minutes, music, speech):
            stereo.write(np.clip(x + voice, -1, 1))
            bed.write(np.clip(to_714(x, voice), -1, 1))
        stereo.close()
        bed.close()
    return paths


def timed(fn: Callable[[], dict]) -> dict:
    """Run ``fn``; add wall and CPU seconds (this process and its children) to its dict."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
    return {**out, "wall_s": wall, "cpu_s": cpu}


def ours(path: Path, true_peak: bool = True, weights: list[float] | None = None) -> dict:
    info = read_info(path)
    meter = LoudnessMeter(FS, info.n_channels, weights or channel_weights_for(info.n_channels),
                          true_peak=true_peak)
    for block in iter_blocks(path, BLOCK):
        meter.process(block)
    r = meter.result()
    return {"I": r.integrated_lufs, "LRA": r.lra_lu, "TP": r.true_peak_dbtp if true_peak else None}


def ffmpeg(path: Path) -> dict:
    run = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true",
                          "-f", "null", "-"], capture_output=True, text=True, check=True)
    summary = run.stderr[run.stderr.rindex("Summary:"):]
    return {"I": float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),
            "LRA": float(re.search(r"LRA:\s+(-?[\d.]+) LU", summary).group(1)),
            "TP": float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))}


def pyloudnorm_meter(path: Path) -> dict:
    import pyloudnorm

    data, rate = sf.read(str(path), dtype="float64")
    return {"I": pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(data), "LRA": None, "TP": None}


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated files in this folder")
    parser.add_argument("--no-pyloudnorm", action="store_true", help="skip pyloudnorm (needs ~8 GB for 60 min)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-loudness-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        paths = write_files(folder, args.minutes)
        print(f"generated {args.minutes:g} min stereo + 7.1.4 (24-bit) in {time.perf_counter() - start:.0f} s")
        audio_s = args.minutes * 60
        rows = []
        for layout, path in paths.items():
            runs = {"ours": lambda p=path: ours(p), "ours, no TP": lambda p=path: ours(p, true_peak=False)}
            if layout == "7.1.4":
                runs["ours, ffmpeg weights"] = lambda p=path: ours(p, weights=FFMPEG_714_WEIGHTS)
            runs["ffmpeg ebur128"] = lambda p=path: ffmpeg(p)
            if layout == "stereo" and not args.no_pyloudnorm:
                runs["pyloudnorm"] = lambda p=path: pyloudnorm_meter(p)
            results = {name: timed(fn) for name, fn in runs.items()}
            ref = results["ffmpeg ebur128"]["wall_s"]
            for name, r in results.items():
                rows.append((layout, name, r["wall_s"], r["cpu_s"], audio_s / r["wall_s"], ref / r["wall_s"],
                             r["I"], r["LRA"], r["TP"]))
        header = ("file", "meter", "wall s", "cpu s", "x real time", "vs ffmpeg", "I LUFS", "LRA LU", "TP dBTP")
        print(f"{header[0]:<7} {header[1]:<22} {header[2]:>8} {header[3]:>8} {header[4]:>11} {header[5]:>9} "
              f"{header[6]:>8} {header[7]:>7} {header[8]:>8}")
        for layout, name, wall, cpu, rtf, ratio, i, lra, tp in rows:
            print(f"{layout:<7} {name:<22} {wall:8.1f} {cpu:8.1f} {rtf:11.0f} {ratio:8.2f}x "
                  f"{fmt(i):>8} {fmt(lra):>7} {fmt(tp):>8}")
        print("vs ffmpeg = ffmpeg's wall time / this meter's wall time (> 1: faster than ffmpeg)")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
