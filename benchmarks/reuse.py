"""What re-running a finished title costs: `filmrestore run` twice on one generated clip.

A finished run leaves a record of what it was asked and of every file it left
(``.manifests/run.json``, :mod:`filmrestore.titles`); asked the same again with nothing in the
title folder changed, the CLI answers from it without starting the pipeline. Code older than the
record reuses every stage instead, re-checking the content hash of every file it reuses (a
damaged file is redone, never delivered); that verification alone (every manifest's files hashed
in a fresh process) is printed too: it is what a re-run with any change still pays. Printed side
by side from one clip: the bytes in the title folder, the first run's wall time, the re-run's wall
time and its share of the first run. With ``--baseline SITE`` (a folder holding a non-editable
install of older code, first on PYTHONPATH; see benchmarks/stages.py) the same rows for that
code, run alternately with this checkout's (``--repeat`` pairs), into separate folders. Files are
read from the page cache, as on a re-run soon after the first; ``--cold`` first asks the kernel
to drop its caches (needs root) to show the disk's figure.

    .venv/bin/python benchmarks/reuse.py [--minutes 12] [--baseline SITE] [--repeat N] [--cold] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filmrestore.demo import make_demo_clip

from cli_of import cli_command  # noqa: E402  (benchmarks/ is this script's folder)

_VERIFY = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from filmrestore.manifest import StageManifest\n"
    "from filmrestore.resume import damaged_files\n"
    "title = Path(sys.argv[1])\n"
    "manifests = [StageManifest.load(p, title) for p in sorted((title / '.manifests').glob('*.json'))\n"
    "             if not p.name.endswith('.publishing.json') and p.name != 'run.json']\n"
    "start = time.perf_counter()\n"
    "damaged = [f for m in manifests for f in damaged_files(m)]\n"
    "print(time.perf_counter() - start, sum(len(m.files) for m in manifests), len(damaged))\n"
)


def timed_run(clip: Path, out: Path, site: str | None = None) -> float:
    """Wall seconds of ``filmrestore run`` on ``clip`` into ``out`` (in a child process), with the
    code installed in ``site`` first on its path (None: this checkout)."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.run([*cli_command(site), "--quiet", "run", str(clip), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), env=env)
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


def measure(clip: Path, out: Path, site: str | None, cold: bool) -> dict[str, float]:
    """One first run from an empty title folder, the verification alone, one re-run."""
    shutil.rmtree(out / clip.stem, ignore_errors=True)
    first_s = timed_run(clip, out, site)
    title = out / clip.stem
    n_bytes = sum(p.stat().st_size for p in title.rglob("*") if p.is_file())
    cold = cold and drop_caches()
    proc = subprocess.run([sys.executable, "-c", _VERIFY, str(title)], capture_output=True, text=True, check=True)
    verify_s, n_files, n_damaged = proc.stdout.split()
    if int(n_damaged):
        raise SystemExit(f"{n_damaged} file(s) reported damaged in an untouched title folder")
    if cold:
        drop_caches()
    rerun_s = timed_run(clip, out, site)
    return {"first_s": first_s, "rerun_s": rerun_s, "verify_s": float(verify_s), "bytes": n_bytes,
            "files": int(n_files), "cold": cold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each re-check")
    parser.add_argument("--baseline", default=None, help="folder with an install of the code to compare with")
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each code version (medians)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the clip and outputs in this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-reuse-"))
    work.mkdir(parents=True, exist_ok=True)
    versions = {"new": None, **({"base": args.baseline} if args.baseline else {})}
    try:
        clip = work / f"reuse_{args.minutes:g}min.mov"
        if not clip.is_file():
            make_demo_clip(clip, duration_s=60.0 * args.minutes, seed=11)
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
        for _ in range(args.repeat):
            for name, site in versions.items():  # alternating: both see the same machine load
                runs[name].append(measure(clip, work / f"out-{name}", site, args.cold))
        print("| code | title | bytes | files | first run (s) | re-run (s) | re-run / first | verify alone (s) "
              "| GB/s | cache |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, rows in runs.items():
            m = {k: statistics.median(r[k] for r in rows) for k in ("first_s", "rerun_s", "verify_s", "bytes")}
            cache = "cold (caches dropped)" if rows[0]["cold"] else "warm (page cache)"
            print(f"| {name} | {args.minutes:g} min mono | {m['bytes'] / 1e9:.2f} GB | {rows[0]['files']} "
                  f"| {m['first_s']:.1f} | {m['rerun_s']:.1f} | {m['rerun_s'] / m['first_s']:.0%} "
                  f"| {m['verify_s']:.2f} | {m['bytes'] / 1e9 / m['verify_s']:.2f} | {cache} |")
        if args.repeat > 1:
            print(f"(medians of {args.repeat}, the versions alternating)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
