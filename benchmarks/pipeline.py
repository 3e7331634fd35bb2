"""Full-pipeline benchmark: `filmrestore run` on generated legacy clips of several lengths.

Prints one table: per clip length, the wall time of the whole run (imports and any Prefect
temporary server included), the compute time of each stage (from qc.json), the
real-time factor (audio seconds per wall second), the peak RSS of the run, and its I/O floor:
the time numpy takes to write and fsync as many bytes as the title folder holds, on the same
disk right after the run, with the run's wall time as a multiple of it (a figure that holds on
a noisy machine).
Peak memory should stay flat as the clip gets longer (every stage streams).

With ``--baseline SITE`` (a folder holding a non-editable install of older code,
put first on PYTHONPATH; see benchmarks/stages.py for how to make one) each clip
is also run with that code, alternating with this checkout so that both see the
same machine load, and the table ends with the ratios base / new. Every run starts
from an empty title folder (no stage is reused from an earlier run).

    .venv/bin/python benchmarks/pipeline.py --minutes 2 10 [--keep DIR] [--baseline SITE] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from filmrestore.demo import make_demo_clip

from cli_of import cli_command  # noqa: E402  (benchmarks/ is this script's folder)

STAGES = ("extract", "restore", "separate", "plan", "normalize", "render")


# Runs the command in a fresh child and prints that child's own peak RSS (KiB) last, so each
# measurement is separate (RUSAGE_CHILDREN of this process would keep the maximum of all runs).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(proc.returncode)\n"
)


def run_once(clip: Path, out: Path, site: str | None = None, keep: bool = False) -> dict:
    """Run the CLI in a child process (``site`` first on its PYTHONPATH); return wall time, peak RSS, qc.json.

    Unless ``keep``, the title folder is removed once measured, before the I/O floor writes as many
    bytes again (a 60 min title holds about 22 GB; both at once could fill the disk)."""
    shutil.rmtree(out / clip.stem, ignore_errors=True)  # a fresh run: no stage reused
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cli_command(site), "run", str(clip), "--out", str(out),
                           "--device", "cpu"], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"filmrestore run failed on {clip}:\n{proc.stderr[-3000:]}")
    qc = json.loads((out / clip.stem / "qc.json").read_text())
    floor_s, n_bytes = io_floor_s(out / clip.stem, out, keep)  # measured right after the run, same disk
    return {"wall_s": wall_s, "peak_rss_mib": int(proc.stdout.split()[-1]) / 1024, "io_floor_s": floor_s,
            "written_gb": n_bytes / 1e9,
            "stages": {s: (qc["stages"].get(s) or {}).get("elapsed_s") or 0.0 for s in STAGES}}


def io_floor_s(title_dir: Path, scratch_dir: Path, keep: bool = False) -> tuple[float, int]:
    """The I/O floor of a run: seconds to write (and fsync) as many bytes as the title folder holds,
    in 64 MiB blocks from numpy, on the same disk; and the byte count. A run can be no faster.
    The title folder is removed first unless ``keep``."""
    n_bytes = sum(p.stat().st_size for p in title_dir.rglob("*") if p.is_file())
    if not keep:
        shutil.rmtree(title_dir)
    block = np.zeros(64 << 20, np.uint8)
    scratch = scratch_dir / ".io-floor.bin"
    start = time.perf_counter()
    with open(scratch, "wb") as f:
        left = n_bytes
        while left > 0:
            f.write(block[: min(left, block.size)].data)
            left -= min(left, block.size)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    scratch.unlink()
    return elapsed, n_bytes


def _row(minutes: float, name: str, r: dict) -> str:
    """One table row: a clip length, a code version and its (median) figures."""
    audio_s = 60.0 * minutes
    cells = [f"{minutes:g}", name, f"{r['wall_s']:.1f}", *[f"{r['stages'][s]:.1f}" for s in STAGES],
             f"{audio_s / r['wall_s']:.1f}", f"{audio_s / sum(r['stages'].values()):.1f}",
             f"{r['peak_rss_mib']:.0f}", f"{r['written_gb']:.2f}", f"{r['io_floor_s']:.1f}",
             f"{r['wall_s'] / r['io_floor_s']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def median_run(runs: list[dict]) -> dict:
    """Per figure, the median over repeated runs."""
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "io_floor_s": statistics.median(r["io_floor_s"] for r in runs),
            "written_gb": statistics.median(r["written_gb"] for r in runs),
            "stages": {s: statistics.median(r["stages"][s] for r in runs) for s in STAGES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--keep", type=Path, default=None, help="keep clips and outputs in this folder")
    parser.add_argument("--baseline", default=None, help="folder with an install of the code to compare with")
    parser.add_argument("--repeat", type=int, default=1, help="runs per clip and code version (medians shown)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-bench-"))
    versions = {"new": None, **({"base": args.baseline} if args.baseline else {})}
    rows = []
    for minutes in sorted(args.minutes):
        clip = work / f"clip_{minutes:g}min.mov"
        if not clip.exists():
            make_demo_clip(clip, duration_s=60.0 * minutes, seed=11)
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.repeat):
            for name, site in versions.items():
                runs[name].append(run_once(clip, work / f"out-{name}", site, keep=args.keep is not None))
        measured = [(minutes, name, median_run(r)) for name, r in runs.items()]
        rows += measured
        for row in measured:  # as soon as measured: a long benchmark that fails later keeps these
            print(f"measured: {_row(*row)}", file=sys.stderr, flush=True)
        if not args.keep:
            clip.unlink()
    if not args.keep:
        shutil.rmtree(work)
    print(f"load average at the end: {os.getloadavg()}")
    header = ["minutes", "code", "wall s", *[f"{s} s" for s in STAGES], "x RT (wall)", "x RT (stages)",
              "peak RSS MiB", "written GB", "I/O floor s", "wall / floor"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for minutes, name, r in rows:
        print(_row(minutes, name, r))
    if args.baseline:
        print("\nspeed-up, base time / new time:")
        by_key = {(m, n): r for m, n, r in rows}
        for minutes in sorted(args.minutes):
            new, base = by_key[minutes, "new"], by_key[minutes, "base"]
            ratios = {s: base["stages"][s] / new["stages"][s] for s in STAGES if new["stages"][s] > 0}
            print(f"{minutes:g} min: wall {base['wall_s'] / new['wall_s']:.2f}x, "
                  + ", ".join(f"{s} {v:.2f}x" for s, v in ratios.items()))


if __name__ == "__main__":
    main()
