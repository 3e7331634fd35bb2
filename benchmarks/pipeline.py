"""Full-pipeline benchmark: `filmrestore run` on generated legacy clips of several lengths.

Prints one table: per clip length, the wall time of the whole run (Prefect's
temporary server included), the compute time of each stage (from qc.json), the
real-time factor (audio seconds per wall second) and the peak RSS of the run.
Peak memory should stay flat as the clip gets longer (every stage streams).

    .venv/bin/python benchmarks/pipeline.py --minutes 2 10 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filmrestore.demo import make_demo_clip

STAGES = ("extract", "restore", "separate", "normalize", "render")


# Runs the command in a fresh child and prints that child's own peak RSS (KiB) last, so each
# measurement is separate (RUSAGE_CHILDREN of this process would keep the maximum of all runs).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(proc.returncode)\n"
)


def run_once(clip: Path, out: Path) -> dict:
    """Run the CLI in a child process; return wall time, its peak RSS and qc.json."""
    cli = Path(sys.executable).with_name("filmrestore")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(cli), "run", str(clip), "--out", str(out),
                           "--device", "cpu"], capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"filmrestore run failed on {clip}:\n{proc.stderr[-3000:]}")
    qc = json.loads((out / clip.stem / "qc.json").read_text())
    return {"wall_s": wall_s, "peak_rss_mib": int(proc.stdout.split()[-1]) / 1024, "qc": qc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--keep", type=Path, default=None, help="keep clips and outputs in this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-bench-"))
    rows = []
    for minutes in sorted(args.minutes):
        clip = work / f"clip_{minutes:g}min.mov"
        if not clip.exists():
            make_demo_clip(clip, duration_s=60.0 * minutes, seed=11)
        result = run_once(clip, work / "out")
        stages = {s: result["qc"]["stages"][s]["elapsed_s"] or 0.0 for s in STAGES}
        audio_s = 60.0 * minutes
        rows.append((minutes, result["wall_s"], stages, audio_s / result["wall_s"],
                     audio_s / sum(stages.values()), result["peak_rss_mib"]))
    header = ["minutes", "wall s", *[f"{s} s" for s in STAGES], "x RT (wall)", "x RT (stages)", "peak RSS MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for minutes, wall_s, stages, rtf_wall, rtf_stages, rss in rows:
        cells = [f"{minutes:g}", f"{wall_s:.1f}", *[f"{stages[s]:.1f}" for s in STAGES],
                 f"{rtf_wall:.1f}", f"{rtf_stages:.1f}", f"{rss:.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
