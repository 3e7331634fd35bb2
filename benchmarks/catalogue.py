"""Catalogue throughput through the real deployment path: server, `prefect deploy`, one process worker.

    .venv/bin/python benchmarks/catalogue.py                       # the issue's 20 titles x 2 min
    .venv/bin/python benchmarks/catalogue.py --titles 4 --minutes 0.5 --parallel 1

Generates N demo titles of M minutes under a media root, runs the
``restore-catalog`` deployment (each title a ``restore-title`` run on the same
worker) and prints, side by side from that one run: titles per hour, catalogue
wall time, the sum of stage compute (``elapsed_s`` in every title's manifests),
the orchestration overhead (wall time minus compute / parallelism: ``--parallel
1`` makes it exactly "flow wall time minus the sum of stage compute"), and the
peak RSS of the worker's process tree (worker + flow-run subprocesses) sampled
every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
STAGES = ("extract", "restore", "separate", "plan", "normalize", "render")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"prefect {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def start_server(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, {**env, "PREFECT_API_URL": url}
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("Prefect server did not start")


class RssSampler(threading.Thread):
    """Peak RSS of a process tree (sum) and of its largest single process, sampled periodically."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.period_s, self.stop = psutil.Process(pid), period_s, threading.Event()
        self.peak_tree_bytes = self.peak_single_bytes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            rss = []
            for p in [self.root, *self.root.children(recursive=True)]:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            self.peak_tree_bytes = max(self.peak_tree_bytes, sum(rss))
            self.peak_single_bytes = max(self.peak_single_bytes, max(rss, default=0))
            self.stop.wait(self.period_s)


def make_titles(media: Path, n_titles: int, minutes: float) -> Path:
    from filmrestore.demo import make_demo_clip

    rows = ["title,source,preset,options"]
    for i in range(n_titles):
        make_demo_clip(media / f"title_{i:02d}.mov", duration_s=60.0 * minutes, seed=100 + i)
        rows.append(f"title_{i:02d},title_{i:02d}.mov,ebu-r128,")
    catalog = media / "catalogue.csv"
    catalog.write_text("\n".join(rows) + "\n")
    return catalog


def stage_compute_s(out: Path) -> float:
    """Sum of every stage's compute time (manifests' elapsed_s) over all titles."""
    return sum(json.loads(p.read_text())["report"].get("elapsed_s", 0.0)
               for p in out.glob("*/.manifests/*.json") if p.stem in STAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        media, out = tmp / "media", tmp / "out"
        media.mkdir()
        catalog = make_titles(media, args.titles, args.minutes)
        server, env = start_server(tmp / "home")
        worker = None
        try:
            _prefect(env, "work-pool", "create", "filmrestore-process", "--type", "process")
            _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--name", "restore-title",
                     "--name", "restore-catalog")
            worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "filmrestore-process"], cwd=REPO,
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            sampler = RssSampler(worker.pid)
            sampler.start()
            params = json.dumps({"catalog": str(catalog), "media_root": str(media), "out": str(out),
                                 "parallel": args.parallel, "mode": "deployment"})
            start = time.perf_counter()
            subprocess.run([PREFECT, "deployment", "run", "restore-catalog/restore-catalog", "--params", params,
                            "--watch"], cwd=REPO, env=env, check=False, capture_output=True)
            wall_s = time.perf_counter() - start
            sampler.stop.set()
            sampler.join()
        finally:
            for proc in (worker, server):
                if proc is not None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=60)
        summary = json.loads((out / "catalogue.summary.json").read_text())["titles"]
        n_ok = sum(r["status"] == "Completed" for r in summary)
        compute_s = stage_compute_s(out)
        programme_s = 60.0 * args.minutes * args.titles
    rows = [("titles completed", f"{n_ok} / {args.titles}"),
            ("title length (min)", f"{args.minutes:g}"),
            ("parallel titles", str(args.parallel)),
            ("catalogue wall time (s)", f"{wall_s:.1f}"),
            ("titles per hour", f"{3600.0 * n_ok / wall_s:.1f}"),
            ("x real time (programme / wall)", f"{programme_s / wall_s:.1f}"),
            ("sum of stage compute (s)", f"{compute_s:.1f}"),
            ("orchestration overhead (s)", f"{wall_s - compute_s / args.parallel:.1f}"),
            ("overhead per title (s)", f"{(wall_s - compute_s / args.parallel) / args.titles:.1f}"),
            ("peak RSS worker tree (MiB)", f"{sampler.peak_tree_bytes / 2**20:.0f}"),
            ("peak RSS one process (MiB)", f"{sampler.peak_single_bytes / 2**20:.0f}")]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|------")
    for key, value in rows:
        print(f"{key:<{width}} | {value}")


if __name__ == "__main__":
    main()
