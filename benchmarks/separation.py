"""Separation benchmark: separator x device -> real-time factor, peak RSS at two input
lengths, and quality (SI-SDRi per stem) from ``evaluate`` on a held-out set.

    .venv/bin/python benchmarks/separation.py [--minutes 10 60] [--data DATA_DIR]
        [--checkpoint separation/checkpoints/dme-small.safetensors [OTHER ...]] [--devices cpu cuda]
        [--separators dsp neural] [--shifts 1 2] [--rates 48000 44100]

Each (separator, device, rate, length) runs ``separate_file`` in a fresh subprocess on a mono
float WAV at that rate (a synthetic film mix tiled to length, written in blocks; 48 kHz by
default, the separators' own rate; another one is resampled in and out), and reads
that process's peak RSS (``ru_maxrss``). The real-time factor is audio seconds per wall
second of ``separate_file`` alone (model load excluded). Quality is measured on the
held-out items of DATA_DIR (``test/``), with the mixture and oracle-mask bounds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FS = 48000
_CHILD = r"""
import json, resource, sys, time
import torch
from filmrestore.separation import STEMS, get_separator, separate_file
name, ckpt, device, src, out, shifts = sys.argv[1:7]
model = get_separator(name, ckpt or None, int(shifts) if shifts else None)
t = time.perf_counter()
rec = separate_file(model, src, {s: f"{out}/{s}.wav" for s in STEMS}, device=device)
if device.startswith("cuda"):
    torch.cuda.synchronize()
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "n_frames": rec["dialogue"].n_frames, "rate_hz": rec["dialogue"].sample_rate_hz,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_long_mix(path: Path, minutes: float, rate_hz: int = FS) -> Path:
    """A mono synthetic film mix (60 s, tiled) of ``minutes`` length at ``rate_hz``, written block by block."""
    import soxr

    from filmrestore.audio import AudioWriter
    from filmrestore.synth import make_film_mix

    piece = make_film_mix(60.0, np.random.default_rng(0))["mix"]
    if rate_hz != FS:
        piece = np.ascontiguousarray(soxr.resample(piece.T, FS, rate_hz, quality="HQ").T)
    n_left = int(minutes * 60 * rate_hz)
    with AudioWriter(path, rate_hz, 1, "FLOAT") as writer:
        while n_left > 0:
            writer.write(piece[:, :n_left])
            n_left -= piece.shape[1]
        writer.close()
    return path


def run_child(separator: str, checkpoint: str, device: str, source: Path, shifts: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", _CHILD, separator, checkpoint, device, str(source), out,
                               str(shifts or "")],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def quality(separator: str, checkpoint: str, data: Path, max_items: int | None, shifts: int | None = None) -> dict:
    from filmrestore.separation import get_separator
    from filmrestore.separation.training.evaluate import evaluate

    return evaluate(data, get_separator(separator, checkpoint or None, shifts), max_items=max_items)["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--data", type=Path, help="DnR dataset (its test/ split is used) for quality")
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--checkpoint", nargs="+", default=["separation/checkpoints/dme-small.safetensors"],
                        help="one or more neural checkpoints (rows named by file name, and folder where two share one), e.g. before and after")
    parser.add_argument("--separators", nargs="+", default=["dsp", "neural"], choices=["dsp", "neural"])
    parser.add_argument("--shifts", type=int, nargs="+", default=[None],
                        help="neural rows with these test-time shifts (default: the checkpoint's), e.g. 1 2")
    parser.add_argument("--rates", type=int, nargs="+", default=[FS],
                        help="input sample rates, Hz (rows for each; another rate than 48000 is resampled in and out)")
    args = parser.parse_args()
    separators = [("dsp", "", None)] if "dsp" in args.separators else []
    if "neural" in args.separators:
        separators += [("neural", c, k) for c in args.checkpoint if Path(c).exists() for k in args.shifts]

    def label(name: str, ckpt: str, shifts: int | None) -> str:
        if not ckpt:
            return name
        # Checkpoints of one file name (a model before and after, in two folders): named by folder too.
        stems = [Path(c).stem for c in args.checkpoint]
        name_of = Path(ckpt).stem if stems.count(Path(ckpt).stem) == 1 else f"{Path(ckpt).parent.name}/{Path(ckpt).stem}"
        base = "neural" if len(args.checkpoint) == 1 else f"neural:{name_of}"
        return base if shifts is None else f"{base} x{shifts}"
    def at_rate(row: str, rate_hz: int) -> str:
        return row if args.rates == [FS] else f"{row} @{rate_hz / 1000:g}k"
    width = max([10, *(len(at_rate(label(*s), r)) + 2 for s in separators for r in args.rates)])
    head = f"{'separator':<{width}}{'device':<8}" + "".join(f"{f'{m:g} min: x RT':>16}{'peak RSS MB':>13}"
                                                    for m in args.minutes)
    print(head, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {(m, r): write_long_mix(Path(tmp) / f"mix_{m:g}min_{r}.wav", m, r)
                   for m in args.minutes for r in args.rates}
        for name, ckpt, shifts in separators:
            for device in args.devices:
                for rate in args.rates:
                    runs = [run_child(name, ckpt, device, sources[m, rate], shifts) for m in args.minutes]
                    cells = "".join(f"{r['n_frames'] / r['rate_hz'] / r['wall_s']:>16.1f}{r['peak_rss_mb']:>13.0f}"
                                    for r in runs)
                    print(f"{at_rate(label(name, ckpt, shifts), rate):<{width}}{device:<8}{cells}", flush=True)
    if args.data:
        print(f"\nquality on {args.data} (held-out test/): mean SI-SDR / SI-SDRi in dB")
        for name, ckpt, shifts in separators:
            summary = quality(name, ckpt, args.data, args.max_items, shifts)
            for method in ("separator", "mixture", "oracle_irm"):
                row = label(name, ckpt, shifts) if method == "separator" else f"  ({method})"
                cells = "".join(f"{s}: {v['si_sdr_db']:6.2f} / {v['si_sdri_db']:+6.2f}   "
                                for s, v in summary[method].items())
                mean = np.mean([v["si_sdri_db"] for v in summary[method].values()])
                print(f"{row:<{max(width, 14)}}{cells}mean SI-SDRi {mean:+6.2f}", flush=True)


if __name__ == "__main__":
    main()
