"""``filmrestore catalog``, ``filmrestore server`` and ``filmrestore worker``.

``server`` and ``worker`` are thin helpers over the ``prefect`` CLI with this
project's defaults (loopback only, the ``gpu`` concurrency limit, the process
work pool of ``deploy/prefect.yaml``); everything they do can be done with the
plain ``prefect`` commands that README lists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from filmrestore.cli.app import app, console, expected_errors

DEFAULT_POOL = "filmrestore-process"


class Mode(str, Enum):
    subflow = "subflow"
    deployment = "deployment"


class TaskRunner(str, Enum):
    threads = "threads"
    dask = "dask"


@app.command()
@expected_errors
def catalog(
    manifest: Annotated[Path, typer.Argument(help="Catalogue, CSV or JSON: title, source, preset, options.")],
    media_root: Annotated[Path, typer.Option("--media-root", help="Every source must lie under this folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder; each title goes to OUT/<title>/.")],
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Titles restored at once.")] = 2,
    mode: Annotated[Mode, typer.Option("--mode", help="subflow: here; deployment: on the workers.")] = Mode.subflow,
    deployment: Annotated[str, typer.Option("--deployment", help="restore-title deployment (--mode deployment).")]
    = "restore-title/restore-title",
    task_runner: Annotated[TaskRunner, typer.Option("--task-runner", help="Fan-out engine.")] = TaskRunner.threads,
    dask_address: Annotated[Optional[str], typer.Option("--dask-address", help="Existing Dask scheduler.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue's summary as JSON on stdout.")] = False,
) -> None:
    """Restore every title of a catalogue; a broken title fails alone. Exit 1 if any title failed or
    its delivery FAILS its loudness spec."""
    import json

    from filmrestore.flows.restore_catalog import run_restore_catalog, title_failed

    summary = run_restore_catalog(manifest, media_root, out, parallel, mode.value, deployment, task_runner.value,
                                  dask_address)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    failed = 0
    for row in summary["titles"]:
        ok = not title_failed(row)
        failed += not ok
        done = row["status"] == "Completed"
        detail = (f"{row['verdict']} ({row['verdict_lufs']} LUFS {row['verdict_gate']}-gated), {row['qc_report']}"
                  if done else row["message"])
        console.print(f"{row['title']:<24} {'[green]' if ok else '[red]'}{row['status']}[/] "
                      f"{row['duration_s']} s  {detail}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _prefect() -> list[str]:
    """The prefect CLI of this environment."""
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.is_file() else [shutil.which("prefect") or "prefect"]


@app.command()
def server(
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback unless you mean otherwise.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 4200,
) -> None:
    """Start a Prefect server (UI + API) for filmrestore, bound to 127.0.0.1 by default."""
    env = {**os.environ, "PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] the Prefect API has no authentication; {host}:{port} is reachable "
                      "from the network", highlight=False)
    console.print(f"UI and API on http://{host}:{port}  (set PREFECT_API_URL=http://{host}:{port}/api)")
    raise typer.Exit(subprocess.call([*_prefect(), "server", "start", "--host", host, "--port", str(port)], env=env))


def ensure_gpu_limit(slots: int) -> str:
    """Create the ``gpu`` global concurrency limit with ``slots`` if the server has none; say what is there."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    from filmrestore.tasks.separate import GPU_LIMIT

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            return f"concurrency limit {GPU_LIMIT!r}: {limit.limit} slot(s) (kept)"
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            return f"concurrency limit {GPU_LIMIT!r}: created with {slots} slot(s)"


def _default_gpu_slots() -> int:
    import torch

    return max(1, torch.cuda.device_count())


@app.command()
def worker(
    pool: Annotated[str, typer.Option("--pool", help="Work pool to serve.")] = DEFAULT_POOL,
    gpu_slots: Annotated[Optional[int], typer.Option(
        "--gpu-slots", help="Slots of the 'gpu' limit if it does not exist yet (default: CUDA devices, at least 1).")]
    = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Flow runs at once on this worker.")] = None,
) -> None:
    """Start a process worker for filmrestore's pool, creating the pool and the 'gpu' limit when missing."""
    console.print(ensure_gpu_limit(gpu_slots if gpu_slots is not None else _default_gpu_slots()), highlight=False)
    args = [*_prefect(), "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        args += ["--limit", str(limit)]
    # Become the prefect worker (exec, no child): SIGTERM from docker stop, Kubernetes or a
    # service manager reaches it directly, and it shuts down its flow runs cleanly. Prefect turns
    # SIGTERM into SIGINT, so an ignored SIGINT inherited from the launcher (a shell's background
    # job, nohup ... &) would leave it deaf to SIGTERM: both go back to their defaults first.
    import signal

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args[0], args)
