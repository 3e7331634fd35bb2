"""`filmrestore catalog` as a user runs it on one machine, with no Prefect server configured.

Generates N demo titles of M minutes and runs the CLI on them in a child process (fresh output
folder each time, so nothing is reused), alternating this checkout with ``--baseline SITE``
(a non-editable install of older code put first on PYTHONPATH; see benchmarks/stages.py) so that
both see the same machine load. Prints per code version the median wall time, the sum of stage
compute (the manifests' ``elapsed_s``), the orchestration overhead per title (wall minus
compute / parallel, divided by the titles) and the peak RSS of the CLI's process tree.

    .venv/bin/python benchmarks/catalogue_cli.py [--titles 4 --minutes 0.25 --parallel 2] [--baseline SITE] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue import make_titles, stage_compute_s  # noqa: E402  (this folder's catalogue benchmark)

from cli_of import cli_command  # noqa: E402  (benchmarks/ is this script's folder)


def run_once(catalog: Path, media: Path, out: Path, parallel: int, site: str | None, home: Path) -> dict:
    """Wall time, stage compute and peak tree RSS of one catalogue run (no Prefect API)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.Popen([*cli_command(site), "--quiet", "catalog", str(catalog), "--media-root", str(media), "--out", str(out),
                             "--parallel", str(parallel)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(), start_new_session=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                root = psutil.Process(proc.pid)
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall_s = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"filmrestore catalog failed ({proc.returncode}):\n{stderr[-3000:]}")
    for child in psutil.process_iter(["pid"]):  # nothing of the run may be left behind
        try:
            if os.getsid(child.info["pid"]) == proc.pid:
                child.kill()
        except (ProcessLookupError, PermissionError):
            continue
    return {"wall_s": wall_s, "compute_s": stage_compute_s(out), "rss_mib": peak[0] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=0.25)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--baseline", default=None, help="folder with an install of the code to compare with")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    versions = [("this checkout", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        media = tmp / "media"
        media.mkdir()
        catalog = make_titles(media, args.titles, args.minutes)
        runs: dict[str, list[dict]] = {name: [] for name, _ in versions}
        for _ in range(args.repeat):
            for name, site in versions:  # alternating: both see the same load
                runs[name].append(run_once(catalog, media, tmp / "out", args.parallel, site, tmp / "home"))
    print(f"{args.titles} titles x {args.minutes:g} min, --parallel {args.parallel}, medians of {args.repeat}")
    print("| code | wall (s) | stage compute (s) | overhead per title (s) | peak RSS (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    medians = {}
    for name, _ in versions:
        wall = statistics.median(r["wall_s"] for r in runs[name])
        compute = statistics.median(r["compute_s"] for r in runs[name])
        overhead = (wall - compute / args.parallel) / args.titles
        rss = statistics.median(r["rss_mib"] for r in runs[name])
        medians[name] = wall
        print(f"| {name} | {wall:.1f} | {compute:.1f} | {overhead:.1f} | {rss:.0f} |")
    if args.baseline:
        print(f"baseline / this checkout, wall: {medians['baseline'] / medians['this checkout']:.2f}x")


if __name__ == "__main__":
    main()
