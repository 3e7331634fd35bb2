"""Real parts: a Prefect server, deploy/prefect.yaml deployed with `prefect deploy`, process workers.

Run alone with ``pytest -m orchestration``. The server runs on loopback with a
temporary PREFECT_HOME and SQLite; workers are subprocesses that the tests start
and kill. Checks go through the Prefect API, as an engineer would see them in the UI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from filmrestore.audio import hash_file
from filmrestore.resume import MANIFEST_DIR
from filmrestore.tasks.separate import SLOT_SETTING
from filmrestore.tasks.common import artifact_key

pytestmark = [pytest.mark.integration, pytest.mark.orchestration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
TITLE_DEPLOYMENT = "restore-title/restore-title"
CATALOG_DEPLOYMENT = "restore-catalog/restore-catalog"
DELIVERABLES = ("bed_7.1.4.wav", "adm.wav", "stems/dialogue.wav", "stems/music.wav", "stems/effects.wav",
                "stems/me.wav", "foldown/stereo.wav", "foldown/5.1.wav")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    env: dict[str, str]
    home: Path

    def cli(self, *args: str, timeout_s: float = 120) -> str:
        proc = subprocess.run([PREFECT, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([PREFECT, "worker", "start", "--pool", "filmrestore-process", "--name", name],
                                cwd=REPO, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the Prefect server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {url} not healthy after {timeout_s} s")


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and every process it started (its flow-run subprocesses), like a lost machine."""
    import psutil

    parent = psutil.Process(proc.pid)
    victims = [parent, *parent.children(recursive=True)]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Prefect server on loopback (temporary home, SQLite) with deploy/prefect.yaml deployed."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
               PREFECT_LOGGING_LEVEL="INFO", PREFECT_WORKER_QUERY_SECONDS="1")
    log = open(home / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, proc)
        srv = Server(url, {**env, "PREFECT_API_URL": url}, home)
        srv.cli("work-pool", "create", "filmrestore-process", "--type", "process")
        srv.cli("work-pool", "create", "filmrestore-docker", "--type", "docker")
        srv.cli("work-pool", "create", "filmrestore-k8s", "--type", "kubernetes",
                "--base-job-template", "deploy/k8s/base-job-template.json")
        srv.cli("global-concurrency-limit", "create", "gpu", "--limit", "1")
        srv.cli("--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml", timeout_s=300)
        yield srv
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Any]:
    """A sync Prefect client of the test server (and settings pointing this process at it)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def worker(server: Server) -> Iterator[subprocess.Popen]:
    proc = server.start_worker("worker-1", {SLOT_SETTING: "always"})  # CPU separations queue for the gpu slot too
    yield proc
    if proc.poll() is None:
        _kill_tree(proc)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated titles under one media root; 'broken' is a picture without a soundtrack."""
    from filmrestore.demo import make_demo_clip
    from test_catalog import silent_video

    root = tmp_path_factory.mktemp("media")
    make_demo_clip(root / "reel_a.mov", duration_s=3.0, seed=11)
    make_demo_clip(root / "reel_b.mkv", duration_s=3.0, seed=12)
    silent_video(root / "broken.mov")
    (root / "nightly.csv").write_text("title,source,preset,options\n"
                                      "reel_a,reel_a.mov,ebu-r128,\n"
                                      'reel_b,reel_b.mkv,atsc-a85,"{""device"": ""cpu""}"\n'
                                      "broken,broken.mov,,\n")
    return root


def _wait_final(api: Any, flow_run_id: Any, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = api.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout_s} s")


def _task_runs(api: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return api.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _artifact(api: Any, key: str) -> Any:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    found = api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key!r}"
    return found[0]


@pytest.fixture(scope="module")
def nightly(server: Server, api: Any, worker: subprocess.Popen, media: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The catalogue deployment run on the worker, each title a run of the restore-title deployment."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment

    out = tmp_path_factory.mktemp("restored")
    params = {"catalog": str(media / "nightly.csv"), "media_root": str(media), "out": str(out), "parallel": 2,
              "mode": "deployment", "deployment": TITLE_DEPLOYMENT}
    parent = run_deployment(CATALOG_DEPLOYMENT, parameters=params, timeout=0)
    parent = _wait_final(api, parent.id)
    children = [r for r in api.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=["restore-title"]))) if r.parameters.get("out") == str(out)]
    return {"parent": parent, "children": {r.parameters["title"]: r for r in children}, "out": out}


def test_catalogue_on_a_worker_isolates_the_broken_title(nightly: dict[str, Any], api: Any) -> None:
    parent, children, out = nightly["parent"], nightly["children"], nightly["out"]
    assert sorted(children) == ["broken", "reel_a", "reel_b"]
    assert {t: r.state.type.value for t, r in children.items()} == \
        {"reel_a": "COMPLETED", "reel_b": "COMPLETED", "broken": "FAILED"}
    broken = children["broken"].state.message
    assert "NoAudioStreamError" in broken and "broken.mov" in broken and "no audio stream" in broken
    # The catalogue run reports the failure by name, after the other titles finished.
    assert parent.state.type.value == "FAILED" and parent.state.message == "1 of 3 titles failed or FAIL their spec: broken"
    for title in ("reel_a", "reel_b"):
        assert all((out / title / name).is_file() for name in DELIVERABLES)
        assert (out / title / "qc" / "loudness.png").is_file() and "![layout](qc/layout.png)" in \
            (out / title / "qc.md").read_text()


def test_catalogue_artifacts_are_in_the_api(nightly: dict[str, Any], api: Any) -> None:
    summary = _artifact(api, artifact_key("nightly", "catalogue"))
    assert summary.type == "table"
    rows = {r["title"]: r for r in json.loads(summary.data)}
    assert {t: r["status"] for t, r in rows.items()} == {"reel_a": "Completed", "reel_b": "Completed",
                                                         "broken": "Failed"}
    assert abs(rows["reel_a"]["loudness_after_lufs"] - (-23.0)) <= 1.0  # ebu-r128
    assert abs(rows["reel_b"]["loudness_after_lufs"] - (-24.0)) <= 1.0  # atsc-a85
    assert rows["reel_a"]["qc_report"].endswith("reel_a/qc.md") and rows["broken"]["qc_report"] is None
    assert "no audio stream" in rows["broken"]["message"]
    report = _artifact(api, artifact_key("nightly", "catalogue") + "-report")
    assert "**2 of 3 titles completed and passed.**" in report.data and rows["reel_a"]["qc_report"] in report.data
    for title in ("reel_a", "reel_b"):
        qc = _artifact(api, artifact_key(title, "qc"))
        assert qc.type == "markdown" and f"# QC: {title}" in qc.data and "loudness.png" in qc.data
        assert _artifact(api, artifact_key(title, "loudness")).type == "table"
        progress = _artifact(api, artifact_key(title, "separate-progress"))
        assert progress.type == "progress" and progress.data == 100.0


def _attempt_logs(api: Any, flow_run_id: Any, since: Any) -> str:
    """The messages a flow run logged since ``since`` (one attempt), through the API."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp

    logs = api.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]),
                                              timestamp=LogFilterTimestamp(after_=since)))
    return "\n".join(log.message for log in logs)


def _manifest_mtimes(title_dir: Path) -> dict[str, int]:
    """The stage manifests' modification times (the finished run's record is not a stage's)."""
    from filmrestore.titles import RUN_RECORD

    return {p.stem: p.stat().st_mtime_ns for p in (title_dir / MANIFEST_DIR).glob("*.json")
            if p != title_dir / RUN_RECORD}


def test_the_separation_runs_as_a_flow_run_of_its_own_where_a_deployment_is_named(
        server: Server, api: Any, nightly: dict[str, Any], worker: subprocess.Popen, media: Path,
        tmp_path: Path) -> None:
    """With separation_deployment, the title's separate stage is a run of the separate-title
    deployment on the worker (as on Kubernetes, where its pod alone asks for the GPU); the title
    flow, here in this process, reads the stems it wrote back and computes none: the deliverables
    are those of the catalogue's run of the same title."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from filmrestore.flows.restore_title import run_restore_title

    with temporary_settings({PREFECT_API_URL: server.url}):
        result = run_restore_title(media / "reel_a.mov", tmp_path, "reel_a", preset="ebu-r128",
                                   separation_deployment="separate-title/separate-title")
    assert result["verdict"]["pass"]
    runs = [r for r in api.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=["separate-title"]))) if r.parameters.get("title_dir") == str(tmp_path / "reel_a")]
    assert len(runs) == 1 and runs[0].state.is_completed()
    separate = json.loads((tmp_path / "reel_a" / MANIFEST_DIR / "separate.json").read_text())
    assert separate["report"]["device"] == "cpu" and separate["files"]["dialogue"]["content_hash"]
    for name in DELIVERABLES:
        assert hash_file(tmp_path / "reel_a" / name) == hash_file(nightly["out"] / "reel_a" / name), name


def test_killed_worker_retry_resumes_at_separation_with_identical_deliverables(
        server: Server, api: Any, nightly: dict[str, Any], worker: subprocess.Popen, media: Path,
        tmp_path: Path) -> None:
    from prefect.deployments import run_deployment
    from prefect.states import Crashed, Scheduled

    clean_dir = nightly["out"] / "reel_a"  # the catalogue's run of this title is the clean reference
    params = {"source": str(media / "reel_a.mov"), "out": str(tmp_path), "title": "reel_a", "preset": "ebu-r128"}
    # Hold the only gpu slot, so the title is caught inside its separation stage, waiting for the slot
    # (the worker has FILMRESTORE_SEPARATION_SLOT=always: on this CPU machine too).
    held = api.increment_concurrency_slots_with_lease(names=["gpu"], slots=1, mode="concurrency",
                                                      lease_duration=300).json()
    assert [limit["name"] for limit in held["limits"]] == ["gpu"]
    try:
        run = run_deployment(TITLE_DEPLOYMENT, parameters=params, timeout=0)
        deadline = time.monotonic() + 180
        while not any(t.name.startswith("separate") and t.state and t.state.is_running()
                      for t in _task_runs(api, run.id)):
            assert time.monotonic() < deadline, "the title never reached the separation stage"
            time.sleep(0.3)
        _kill_tree(worker)
    finally:
        api.release_concurrency_slots_with_lease(held["lease_id"])
    title_dir = tmp_path / "reel_a"
    before = _manifest_mtimes(title_dir)
    assert sorted(before) == ["extract", "restore"]  # separation had not finished: nothing of it on disk
    assert api.read_flow_run(run.id).state.is_running()  # the server does not know the worker died
    # What Prefect's zombie detection would record, then the UI's "Retry" (AwaitingRetry, forced).
    api.set_flow_run_state(run.id, Crashed(message="worker killed by the test"), force=True)
    api.set_flow_run_state(run.id, Scheduled(name="AwaitingRetry", message="Retry from the UI"), force=True)
    new_worker = server.start_worker("worker-2")
    try:
        final = _wait_final(api, run.id)
    finally:
        _kill_tree(new_worker)
    assert final.state.is_completed(), final.state.message
    assert final.run_count == 2
    after = _manifest_mtimes(title_dir)
    assert {s: after[s] for s in ("extract", "restore")} == before  # not recomputed
    assert sorted(after) == ["extract", "normalize", "plan", "render", "restore", "separate"]
    retried = _attempt_logs(api, run.id, since=final.start_time)
    assert "extract reused from a previous run" in retried and "restore reused from a previous run" in retried
    assert "separate done in" in retried  # the interrupted stage is the first one computed again
    for name in DELIVERABLES:
        assert hash_file(title_dir / name) == hash_file(clean_dir / name), name


@pytest.fixture()
def bare_server(tmp_path: Path) -> Iterator[Server]:
    """A fresh Prefect server with nothing registered (no pools, no limits, no deployments)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/prefect.db")
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, proc)
        yield Server(url, {**env, "PREFECT_API_URL": url}, tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.mark.integration
def test_the_compose_register_step_registers_a_bare_server_and_the_worker_takes_sigterm(bare_server: Server) -> None:
    """deploy/register.sh (the compose stack's register service) on a server with nothing on it:
    it must succeed (prefect deploy --all failed on the Docker and Kubernetes pools that no one
    created), twice; then `filmrestore worker` is the prefect worker itself and stops on SIGTERM."""
    env = {**bare_server.env, "PREFECT": PREFECT, "GPU_SLOTS": "2"}
    for _ in range(2):  # idempotent
        run = subprocess.run(["sh", "deploy/register.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: bare_server.url}), get_client(sync_client=True) as client:
        assert sorted(d.name for d in client.read_deployments()) == ["restore-catalog", "restore-title", "separate-title"]
        assert [p.name for p in client.read_work_pools()] == ["filmrestore-process"]
        assert client.read_global_concurrency_limit_by_name("gpu").limit == 2

    cli = Path(sys.executable).with_name("filmrestore")
    log = (bare_server.home / "worker.log").open("w")  # a file: an unread pipe would fill and block the worker

    def launched_in_the_background() -> None:  # as from `nohup filmrestore worker &`: SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    worker = subprocess.Popen([str(cli), "worker"], cwd=REPO, env=bare_server.env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=launched_in_the_background)
    try:
        import psutil

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "prefect" not in " ".join(psutil.Process(worker.pid).cmdline()[1:3]):
            time.sleep(0.2)
        command = psutil.Process(worker.pid).cmdline()  # the same process, now the prefect worker
        assert Path(command[1]).name == "prefect" and command[2:4] == ["worker", "start"], command
        with temporary_settings({PREFECT_API_URL: bare_server.url}), get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not client.read_workers_for_work_pool("filmrestore-process"):
                time.sleep(0.5)  # up: it has sent its first heartbeat (a signal during start-up proves nothing)
            assert client.read_workers_for_work_pool("filmrestore-process"), (bare_server.home / "worker.log").read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) is not None, (bare_server.home / "worker.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
