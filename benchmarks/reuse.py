"""What re-verifying a finished title costs: `filmrestore run` twice on one generated clip.

The second run reuses every stage, and reuse re-checks the content hash of every file it
reuses (a damaged file is redone, never delivered). Printed side by side from one clip: the
bytes in the title folder, the first run's wall time, the re-run's wall time and its share of
the first run, and the verification alone (every manifest's files hashed in a fresh process,
as a re-run does) with its throughput. Files are read from the page cache, as on a re-run
soon after the first; ``--cold`` first asks the kernel to drop its caches (needs root) to
show the disk's figure.

    .venv/bin/python benchmarks/reuse.py [--minutes 12] [--cold] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filmrestore.demo import make_demo_clip

_VERIFY = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from filmrestore.manifest import StageManifest\n"
    "from filmrestore.resume import damaged_files\n"
    "title = Path(sys.argv[1])\n"
    "manifests = [StageManifest.load(p, title) for p in sorted((title / '.manifests').glob('*.json'))\n"
    "             if not p.name.endswith('.publishing.json')]\n"
    "start = time.perf_counter()\n"
    "damaged = [f for m in manifests for f in damaged_files(m)]\n"
    "print(time.perf_counter() - start, sum(len(m.files) for m in manifests), len(damaged))\n"
)


def timed_run(clip: Path, out: Path) -> float:
    """Wall seconds of ``filmrestore run`` on ``clip`` into ``out`` (in a child process)."""
    cli = Path(sys.executable).with_name("filmrestore")
    start = time.perf_counter()
    proc = subprocess.run([str(cli), "--quiet", "run", str(clip), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"filmrestore run failed on {clip}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def drop_caches() -> bool:
    """Ask the kernel to drop the page cache (root only); False when it may not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each re-check")
    parser.add_argument("--keep", type=Path, default=None, help="keep the clip and outputs in this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-reuse-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        clip = work / f"reuse_{args.minutes:g}min.mov"
        if not clip.is_file():
            make_demo_clip(clip, duration_s=60.0 * args.minutes, seed=11)
        out = work / "out"
        shutil.rmtree(out / clip.stem, ignore_errors=True)
        first_s = timed_run(clip, out)
        title = out / clip.stem
        n_bytes = sum(p.stat().st_size for p in title.rglob("*") if p.is_file())
        cold = args.cold and drop_caches()
        proc = subprocess.run([sys.executable, "-c", _VERIFY, str(title)], capture_output=True, text=True,
                              check=True)
        verify_s, n_files, n_damaged = proc.stdout.split()
        if args.cold:
            drop_caches()
        rerun_s = timed_run(clip, out)
        verify_s = float(verify_s)
        cache = "cold (caches dropped)" if cold else "warm (page cache)"
        print(f"| title | bytes | files | first run (s) | re-run (s) | re-run / first | verify alone (s) | GB/s | cache |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        print(f"| {args.minutes:g} min mono | {n_bytes / 1e9:.2f} GB | {n_files} | {first_s:.1f} | {rerun_s:.1f} "
              f"| {rerun_s / first_s:.0%} | {verify_s:.2f} | {n_bytes / 1e9 / verify_s:.2f} | {cache} |")
        if int(n_damaged):
            raise SystemExit(f"{n_damaged} file(s) reported damaged in an untouched title folder")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
