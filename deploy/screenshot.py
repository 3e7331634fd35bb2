"""Screenshot the Prefect UI showing a finished ``restore_title`` run and its artifacts.

    apt-get install -y chromium        # Debian's headless browser (not needed by CI)
    .venv/bin/python deploy/screenshot.py [--out docs] [--duration 8]

Starts a temporary Prefect server with its UI on loopback (own PREFECT_HOME,
SQLite), restores a generated demo clip through the ``restore_title`` flow
against it, then points headless Chromium at the flow run's page (its graph shows the
artifacts) and at the title's QC report artifact. Writes ``prefect-ui.png`` and ``prefect-ui-qc.png``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1 with the UI; returns once /api/health answers."""
    import httpx

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # The UI asks the API at the address these settings give (the --port flag alone is not enough).
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("the Prefect server did not start")


def restore_demo(work: Path, duration_s: float) -> str:
    """Run restore_title on a demo clip against the server in PREFECT_API_URL; returns the flow run id."""
    from filmrestore.demo import make_demo_clip
    from filmrestore.flows.restore_title import restore_title

    clip = make_demo_clip(work / "Feature (1962).mov", duration_s=duration_s, seed=1962)
    state = restore_title(str(clip), str(work / "out"), "feature_1962", return_state=True)
    if not state.is_completed():
        raise SystemExit(f"restore_title did not complete: {state.message}")
    return str(state.state_details.flow_run_id)


def artifact_id(key: str) -> str:
    """The id of the latest artifact with this key (its page renders the markdown)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return str(artifact.id)


def screenshot(url: str, path: Path, size: str = "1600,1100", wait_ms: int = 20_000) -> Path:
    """Headless Chromium with a fresh profile; virtual time lets the single-page app render."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=180)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    parser.add_argument("--duration", type=float, default=8.0, help="demo clip length, seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work, port = Path(tmp), free_port()
        server = start_server(work / "prefect_home", port)
        try:
            os.environ.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false")
            flow_run_id = restore_demo(work, args.duration)
            base = f"http://127.0.0.1:{port}"
            shots = [screenshot(f"{base}/runs/flow-run/{flow_run_id}", args.out / "prefect-ui.png"),
                     screenshot(f"{base}/artifacts/artifact/{artifact_id('feature-1962-qc')}",
                                args.out / "prefect-ui-qc.png", size="1400,4200", wait_ms=40_000)]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    for shot in shots:
        print(f"{shot} ({shot.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
