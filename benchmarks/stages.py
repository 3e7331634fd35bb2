"""Normalize + render stage benchmark: this checkout against a baseline install, side by side.

Makes a demo clip, runs ``filmrestore run`` on it once for its stems, then times
``run_normalize`` and ``run_render`` (the stage functions the flow calls) in fresh
child processes, alternating the code under test with ``--baseline`` so that both
see the same machine load. Prints per stage and code version the median and best
time, the real-time factor of the median and the CPU time of all its threads, and
whether every deliverable's sample data (SHA-256, whatever hash the code keeps) and the stage
reports are identical.

A baseline is a folder that holds a (non-editable) install of older code and goes
first on PYTHONPATH, e.g. for the commit before a change::

    git worktree add /tmp/base <commit>
    .venv/bin/pip install --no-deps --no-build-isolation --target /tmp/base-site /tmp/base
    .venv/bin/python benchmarks/stages.py --minutes 5 --baseline /tmp/base-site --repeat 3
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
from pathlib import Path

from filmrestore.demo import make_demo_clip

# Runs in a child: both stages on a fresh title folder; prints their times, hashes and reports as JSON.
_CHILD = r"""
import inspect, json, sys, time
from pathlib import Path
from filmrestore.manifest import StageManifest
from filmrestore.tasks.normalize import run_normalize
from filmrestore.tasks.plan import run_plan
from filmrestore.tasks.render import run_render

import hashlib, struct
from filmrestore.audio import read_chunks


def data_sha256(path):
    # SHA-256 of the sample data, whatever hash the code under test keeps in its manifests
    offset, size = struct.unpack("<QQ", read_chunks(path, ())[b"data@"])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while size > 0 and (chunk := f.read(min(1 << 22, size))):
            h.update(chunk)
            size -= len(chunk)
    return h.hexdigest()


src, title_dir = Path(sys.argv[1]), Path(sys.argv[2])
# Stage functions take typed manifests; a baseline older than them takes the manifests' dicts.
typed = "StageManifest" in str(inspect.signature(run_render).parameters["stems"].annotation)
arg = (lambda m: m) if typed else (lambda m: m.to_dict())
load = lambda stage: arg(StageManifest.load(src / ".manifests" / f"{stage}.json", root=src))
stems = load("separate")
plan, _ = run_plan(stems, title_dir)
start, cpu_start = time.perf_counter(), time.process_time()
norm, _ = run_normalize(load("restore"), stems, arg(plan), title_dir, "ebu-r128")
middle, cpu_middle = time.perf_counter(), time.process_time()
rendered, _ = run_render(stems, arg(plan), arg(norm), title_dir)
end, cpu_end = time.perf_counter(), time.process_time()
strip = lambda report: {k: v for k, v in report.items() if k not in ("elapsed_s", "plan")}
print(json.dumps({"normalize_s": middle - start, "render_s": end - middle,
                  "normalize_cpu_s": cpu_middle - cpu_start, "render_cpu_s": cpu_end - cpu_middle,
                  "hashes": {k: data_sha256(title_dir / v.path) for k, v in rendered.files.items()},
                  "reports": {"normalize": strip(norm.report), "render": strip(rendered.report)}}))
"""


def prepare(work: Path, minutes: float) -> Path:
    """A demo clip's title folder after a full run (its stems are what the stages read)."""
    clip = work / f"clip_{minutes:g}min.mov"
    title_dir = work / "out" / clip.stem
    if not (title_dir / ".manifests" / "separate.json").is_file():
        if not clip.exists():
            make_demo_clip(clip, duration_s=60.0 * minutes, seed=11)
        cli = Path(sys.executable).with_name("filmrestore")
        subprocess.run([str(cli), "run", str(clip), "--out", str(work / "out"), "--device", "cpu"],
                       check=True, capture_output=True)
    return title_dir


def run_child(source: Path, title_dir: Path, site: str | None) -> dict:
    """Both stages in a fresh process with ``site`` (if any) first on PYTHONPATH."""
    shutil.rmtree(title_dir, ignore_errors=True)
    title_dir.mkdir(parents=True)
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(source), str(title_dir)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"stage run failed ({site or 'this checkout'}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--baseline", default=None, help="folder with an install of the code to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="keep the clip and outputs in this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="filmrestore-stages-"))
    source = prepare(work, args.minutes)
    versions = {"new": None, **({"base": args.baseline} if args.baseline else {})}
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    for _ in range(args.repeat):
        for name, site in versions.items():
            runs[name].append(run_child(source, work / f"stage-{name}", site))
    audio_s = 60.0 * args.minutes
    print(f"clip {args.minutes:g} min; {args.repeat} alternating runs per version; load {os.getloadavg()}")
    print("| code | stage | median s | best s | x RT (median) | CPU s (median, all threads) |")
    print("|---|---|---:|---:|---:|---:|")
    medians = {}
    for name in versions:
        for stage in ("normalize", "render"):
            times = [r[f"{stage}_s"] for r in runs[name]]
            medians[name, stage] = statistics.median(times)
            cpu_s = statistics.median(r[f"{stage}_cpu_s"] for r in runs[name])
            print(f"| {name} | {stage} | {medians[name, stage]:.2f} | {min(times):.2f} | "
                  f"{audio_s / medians[name, stage]:.1f} | {cpu_s:.2f} |")
    if "base" in versions:
        for stage in ("normalize", "render"):
            print(f"speed-up {stage}: {medians['base', stage] / medians['new', stage]:.2f}x")
        new, base = runs["new"][0], runs["base"][0]
        differ = sorted(k for k in new["hashes"] if new["hashes"][k] != base["hashes"].get(k))
        print(f"identical deliverables: {len(new['hashes']) - len(differ)}/{len(new['hashes'])}"
              + (f" (differ: {', '.join(differ)})" if differ else ""))
        print(f"identical stage reports (loudness, verdict, fold-down check): {new['reports'] == base['reports']}")


if __name__ == "__main__":
    main()
