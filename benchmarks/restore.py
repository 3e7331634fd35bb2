"""Restoration benchmark: real-time factor of each restoration function on one core.

A real recording of the corpus (a Colobot music track, mono, 48 kHz) damaged with
mains hum (50.1 Hz, 3 harmonics), clicks (20 a minute) and white hiss (-55 dBFS) is
run through each detector and processor of filmrestore/restoration/, streamed in 10 s blocks.
Prints one table: seconds of audio, CPU seconds of this process (one core: numba and
BLAS are held to one thread), real-time factor, and what the function found or did.

    .venv/bin/python benchmarks/restore.py [--seconds 120] [--channels 1]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy/numba load
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from filmrestore.corpus import find_recordings  # noqa: E402
from filmrestore.restoration.clicks import ClickRemover  # noqa: E402
from filmrestore.restoration.hiss import Dehisser, detect_hiss  # noqa: E402
from filmrestore.restoration.hum import HumRemover, detect_hum  # noqa: E402
from filmrestore.restoration.restorer import Restorer, plan_restoration  # noqa: E402

FS = 48_000
BLOCK = 480_000


def damaged_music(seconds: float, n_channels: int) -> np.ndarray:
    """A corpus music track, damaged with hum, clicks and hiss. [shape=(C, T)] float32"""
    track = find_recordings("music")
    if not track:
        raise SystemExit("colobot-common-sounds is not installed")
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(track[0]), "-t", str(seconds),
                          "-ac", str(n_channels), "-ar", str(FS), "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    x = np.frombuffer(raw, np.float32).reshape(-1, n_channels).T.astype(np.float64)
    x *= 0.5 / np.abs(x).max()
    rng = np.random.default_rng(3)
    t = np.arange(x.shape[1]) / FS
    x += sum(10 ** (-32 / 20) * np.sin(2 * np.pi * k * 50.1 * t + k) for k in (1, 2, 3))
    for start in rng.choice(x.shape[1] - 20, int(seconds / 3), replace=False):
        x[:, start:start + 3] += 0.5 * rng.choice([-1.0, 1.0])
    x += 10 ** (-55 / 20) * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def stream(processor, x: np.ndarray) -> np.ndarray:
    outs = [processor.process(x[:, i:i + BLOCK]) for i in range(0, x.shape[1], BLOCK)]
    return np.concatenate([*outs, processor.flush()], axis=1)


def cpu_time(fn: Callable[[], str]) -> tuple[float, str]:
    fn()  # warm-up: numba compiles (or loads its cache) once
    start = time.process_time()
    note = fn()
    return time.process_time() - start, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    x = damaged_music(args.seconds, args.channels)
    n_channels = x.shape[0]
    audio_s = x.shape[1] / FS
    plan = plan_restoration(x, FS)
    hum, hiss = plan.hum, plan.hiss

    def declick() -> str:
        remover = ClickRemover(FS, n_channels)
        stream(remover, x)
        return f"{remover.n_clicks_repaired} clicks repaired ({int(audio_s / 3) * n_channels} added)"

    cases: dict[str, Callable[[], str]] = {
        "detect_hum": lambda: f"found {detect_hum(x, FS).fundamental_hz} Hz",
        "HumRemover (dehum)": lambda: (stream(HumRemover(FS, n_channels, hum.fundamental_hz or 50.0, 0, 1.0,
                                                         hum.harmonics_hz or None), x), "notched")[1],
        "ClickRemover (declick)": declick,
        "detect_hiss": lambda: f"floor {detect_hiss(x, FS).floor_dbfs} dBFS",
        "Dehisser (dehiss)": lambda: (stream(Dehisser(FS, n_channels, hiss.noise_psd), x), "dehissed")[1],
        "plan_restoration": lambda: "applies " + "+".join(plan_restoration(x, FS).applied),
        "Restorer (as planned)": lambda: (stream(Restorer(FS, n_channels, plan), x), "+".join(plan.applied))[1],
    }
    print(f"{audio_s:.0f} s of damaged real music, {n_channels} channel(s), 48 kHz, one core")
    print(f"{'function':<24} {'cpu s':>7} {'x real time':>12}  result")
    for name, fn in cases.items():
        cpu_s, note = cpu_time(fn)
        print(f"{name:<24} {cpu_s:7.2f} {audio_s / cpu_s:12.0f}  {note}")


if __name__ == "__main__":
    main()
