"""The ``restore_catalog`` flow: a catalogue of titles -> one ``restore_title`` flow run per title.

Each title runs as its own flow run: a subflow in this process (``mode="subflow"``)
or, with ``mode="deployment"``, a run of the ``restore-title`` deployment that any
worker of its pool may pick up. At most ``parallel`` titles run at once; a title
that fails is reported and the others carry on. The summary goes to a table and a
markdown artifact and to ``OUT/<catalogue>.summary.json``.

Fan-out runs on the flow's task runner: threads by default, or a Dask cluster
(``prefect-dask``) with :func:`catalog_flow` ``(task_runner="dask")``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from filmrestore.audio import ensure_writable_dir
from filmrestore.errors import CatalogError, ConfigError, FilmrestoreError
from filmrestore.flows.catalog import CatalogEntry, read_catalog
from filmrestore.flows.api import prefect_api_url
from filmrestore.flows.restore_title import restore_title
from filmrestore.titles import finished_run, run_request
from filmrestore.manifest import write_json
from filmrestore.stagelog import STAGE_LOGGER, TITLE_LABEL

TITLE_DEPLOYMENT = "restore-title/restore-title"
Mode = Literal["subflow", "deployment"]
SUMMARY_COLUMNS = ("title", "status", "duration_s", "loudness_before_lufs", "loudness_after_lufs", "verdict",
                   "verdict_lufs", "verdict_gate", "qc_report", "message")


def summary_path(catalog: str | Path, out: str | Path) -> Path:
    """Where a catalogue's summary JSON goes: ``OUT/<catalogue stem>.summary.json``."""
    return Path(out) / f"{Path(catalog).stem}.summary.json"


def _qc_figures(title_dir: Path) -> dict[str, Any]:
    """Loudness before/after and verdict of a finished title, from its qc.json."""
    import json

    qc = json.loads((title_dir / "qc.json").read_text())
    before = qc["loudness"]["before"].get("bed_7.1.4", {})
    after = qc["loudness"]["after"].get("bed_7.1.4", {})
    verdict = qc["verdict"]
    return {"loudness_before_lufs": before.get("integrated_lufs"), "loudness_after_lufs": after.get("integrated_lufs"),
            "verdict": "PASS" if verdict.get("pass") else "FAIL",
            "verdict_lufs": verdict.get("measured_lufs"), "verdict_gate": verdict.get("gate"),
            "qc_report": str(title_dir / "qc.md")}


def title_failed(row: dict[str, Any]) -> bool:
    """A title failed when its run did not complete or its delivery FAILS its loudness spec."""
    return row["status"] != "Completed" or row.get("verdict") == "FAIL"


def title_row(entry: CatalogEntry, out: str | Path, status: str, message: str | None, flow_run_id: Any,
              run_time_s: float) -> dict[str, Any]:
    """One summary row: status (``Completed``, ``Failed``, ...), run time, loudness before/after
    and the QC report of a title; ``message`` says why a title did not complete."""
    row: dict[str, Any] = {k: None for k in SUMMARY_COLUMNS}
    row.update(title=entry.title, status=status, duration_s=round(run_time_s, 1), message="",
               flow_run_id=str(flow_run_id) if flow_run_id else None,
               worker=f"{socket.gethostname()}:{os.getpid()}")  # where the title's task ran
    title_dir = Path(out) / entry.title
    if status == "Completed" and (title_dir / "qc.json").is_file():
        row.update(_qc_figures(title_dir))
    else:
        row["message"] = message or status
    return row


def _run_time_s(flow_run_id: Any, fallback_s: float) -> float:
    """The child flow run's own run time (without queueing), from the API."""
    from prefect import get_client

    if flow_run_id is None:
        return fallback_s
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return run.total_run_time.total_seconds() if run.total_run_time else fallback_s


def _child_run(entry: CatalogEntry, out: str, mode: Mode, deployment: str) -> tuple[Any, State]:
    """Run one title as a subflow or as a deployment run; returns (flow run id, final state)."""
    params = entry.flow_parameters(out)
    if mode == "deployment":
        from prefect.deployments import run_deployment

        run = run_deployment(deployment, parameters=params, flow_run_name=f"restore {entry.title}",
                             timeout=None, poll_interval=2)
        return run.id, run.state
    state = restore_title(**params, return_state=True)
    return state.state_details.flow_run_id, state


@task(name="catalog-title", task_run_name="title {entry[title]}", cache_policy=NO_CACHE, retries=0)
def catalog_title(entry: dict[str, Any], out: str, mode: Mode, deployment: str) -> dict[str, Any]:
    """Restore one catalogue title in its own flow run; never raises for the title's own failure."""
    from prefect import get_run_logger

    parsed = CatalogEntry(**entry)
    start = time.perf_counter()
    flow_run_id, state = _child_run(parsed, out, mode, deployment)
    row = title_row(parsed, out, state.name, state.message, flow_run_id,
                    _run_time_s(flow_run_id, time.perf_counter() - start))
    log = get_run_logger()
    (log.info if state.is_completed() else log.error)("%s: %s %s", parsed.title, state.name, row["message"])
    return row


def fan_out(items: list[Any], submit: Callable[[Any], PrefectFuture], parallel: int) -> list[Any]:
    """Submit ``items`` keeping at most ``parallel`` in flight; results in completion order."""
    if parallel < 1:
        raise ConfigError(f"parallel must be at least 1, got {parallel}")
    pending, running, results = list(items), [], []
    while pending or running:
        while pending and len(running) < parallel:
            running.append(submit(pending.pop(0)))
        done = next(as_completed(running))
        running.remove(done)
        results.append(done.result())
    return results


def restore_title_here(entry: CatalogEntry, out: str) -> dict[str, Any]:
    """Restore one title in this process (no Prefect API): its summary row, never raising for
    the title's own failure (an expected error is its one-line message)."""
    start = time.perf_counter()
    TITLE_LABEL.set(entry.title)  # this worker thread's stage lines name their title
    params = entry.flow_parameters(out)
    try:
        if finished_run(Path(out) / entry.title, run_request(params)) is None:
            restore_title.fn(**params)
        else:  # finished earlier with these options, nothing changed since: a nightly batch skips it
            logging.getLogger(STAGE_LOGGER).info("%s: finished with these options and unchanged since, nothing "
                                                 "to run", entry.title, extra={"filmrestore_stage": True})
        status, message = "Completed", None
    except FilmrestoreError as exc:
        status, message = "Failed", str(exc)
    except Exception as exc:  # a bug in one title must not stop the others; the summary names it
        logging.getLogger(STAGE_LOGGER).exception("%s failed", entry.title)
        status, message = "Failed", f"{type(exc).__name__}: {exc}"
    return title_row(entry, out, status, message, None, time.perf_counter() - start)


def restore_catalog_here(entries: list[CatalogEntry], out: str, parallel: int) -> list[dict[str, Any]]:
    """:func:`restore_catalog`'s fan-out without Prefect: ``parallel`` titles at once on threads
    of this process (the same threads Prefect's default task runner would use); rows in
    catalogue order. Nothing outlives the process: there is no server to start or to leave behind."""
    if parallel < 1:
        raise ConfigError(f"parallel must be at least 1, got {parallel}")
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="title") as pool:
        return list(pool.map(lambda e: restore_title_here(e, out), entries))


def summary_markdown(catalog: str, rows: list[dict[str, Any]], ui_url: str | None) -> str:
    """The catalogue's summary as markdown, each title linking to its QC artifact in the UI."""
    from filmrestore.tasks.common import artifact_key

    n_ok = sum(not title_failed(r) for r in rows)
    lines = [f"# Catalogue `{Path(catalog).name}`", "", f"**{n_ok} of {len(rows)} titles completed and passed.**",
             "", "| title | status | run time (s) | loudness before (LUFS) | after (LUFS) | verdict | QC |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        qc = "–"
        if r["qc_report"]:
            key = artifact_key(r["title"], "qc")
            qc = (f"[{key}]({ui_url}/artifacts/key/{key}) " if ui_url else "") + f"`{r['qc_report']}`"
        status = r["status"] if not r["message"] else f"{r['status']}: {r['message']}"
        lines.append(f"| {r['title']} | {status} | {r['duration_s']} | {_fmt(r['loudness_before_lufs'])} "
                     f"| {_fmt(r['loudness_after_lufs'])} | {_verdict(r)} | {qc} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _verdict(row: dict[str, Any]) -> str:
    """``PASS (-27.1 LUFS dialogue-gated)``: the figure the verdict used, not the programme's."""
    if not row.get("verdict"):
        return "–"
    gate = f" {row['verdict_gate']}-gated" if row.get("verdict_gate") else ""
    return f"{row['verdict']} ({_fmt(row.get('verdict_lufs'))} LUFS{gate})"


def publish_summary(catalog: str, out: str, rows: list[dict[str, Any]]) -> Path:
    """Write the summary JSON and the table + markdown artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.settings import PREFECT_UI_URL

    from filmrestore.tasks.common import artifact_key

    path = write_json(summary_path(catalog, out), {"catalog": catalog, "titles": rows})
    key = artifact_key(Path(catalog).stem, "catalogue")
    table = [{k: r[k] for k in SUMMARY_COLUMNS} for r in rows]
    create_table_artifact(table, key=key, description=f"Catalogue {Path(catalog).name}: one row per title")
    create_markdown_artifact(summary_markdown(catalog, rows, PREFECT_UI_URL.value()), key=f"{key}-report"[:100],
                             description="Catalogue summary")
    return path


@flow(name="restore-catalog", flow_run_name="catalogue {catalog}", result_serializer="json")
def restore_catalog(
    catalog: str,
    media_root: str,
    out: str,
    parallel: int = 2,
    mode: Mode = "subflow",
    deployment: str = TITLE_DEPLOYMENT,
) -> State:
    """Restore every title of ``catalog`` (CSV/JSON, sources under ``media_root``) into ``out``.

    Completed when every title completed and passed its loudness spec; Failed (after every
    title ran) otherwise, naming the titles that failed or whose delivery FAILS.
    """
    entries = read_catalog(catalog, media_root)
    ensure_writable_dir(out)
    order = {e.title: i for i, e in enumerate(entries)}
    rows = fan_out(entries, lambda e: catalog_title.submit(e.to_dict(), out, mode, deployment), parallel)
    rows.sort(key=lambda r: order[r["title"]])
    path = publish_summary(catalog, out, rows)
    failed = [r["title"] for r in rows if title_failed(r)]
    summary = {"summary": str(path), "completed": len(rows) - len(failed), "failed": failed}
    if failed:
        return Failed(message=f"{len(failed)} of {len(rows)} titles failed or FAIL their spec: {', '.join(failed)}",
                      data=summary)
    return Completed(message=f"all {len(rows)} titles completed", data=summary)


def make_task_runner(kind: str, parallel: int, dask_address: str | None = None) -> Any:
    """The fan-out engine: ``threads`` (in this process) or ``dask`` (a LocalCluster, or ``dask_address``)."""
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=parallel)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # One single-threaded worker process per title in flight; no dashboard (nothing listens
        # beyond the loopback scheduler that LocalCluster starts).
        return DaskTaskRunner(cluster_kwargs={"n_workers": parallel, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    raise ConfigError(f"unknown task runner {kind!r}; expected threads or dask")


def catalog_flow(task_runner: str = "threads", parallel: int = 2, dask_address: str | None = None) -> Flow:
    """``restore_catalog`` with the chosen fan-out engine."""
    return restore_catalog.with_options(task_runner=make_task_runner(task_runner, parallel, dask_address))


def run_restore_catalog(
    catalog: str | Path, media_root: str | Path, out: str | Path, parallel: int = 2, mode: Mode = "subflow",
    deployment: str = TITLE_DEPLOYMENT, task_runner: str = "threads", dask_address: str | None = None,
) -> dict[str, Any]:
    """Validate the catalogue (refusing it before any run starts), run it, return the summary.

    With a Prefect API (:func:`~filmrestore.flows.api.prefect_api_url`) the
    catalogue is a ``restore_catalog`` flow run the UI shows; without one its titles run in
    this process (:func:`restore_catalog_here`), as ``filmrestore run`` does: no temporary
    server that could outlive a killed CLI. Deployment runs and Dask need the API."""
    import json

    from prefect.settings import PREFECT_API_URL, temporary_settings

    entries = read_catalog(catalog, media_root)
    ensure_writable_dir(out)
    catalog, out = str(Path(catalog).resolve()), str(Path(out).resolve())
    api = prefect_api_url()
    if api is None:
        needs = ("--mode deployment" if mode == "deployment" else
                 "--task-runner dask" if task_runner == "dask" else None)
        if needs:
            raise ConfigError(f"{needs} runs on a Prefect server: start one (filmrestore server) or set "
                              "PREFECT_API_URL")
        rows = restore_catalog_here(entries, out, parallel)
        write_json(summary_path(catalog, out), {"catalog": catalog, "titles": rows})
        return {"catalog": catalog, "titles": rows}
    with temporary_settings({PREFECT_API_URL: api}):
        state = catalog_flow(task_runner, parallel, dask_address)(
            catalog, str(Path(media_root).resolve()), out, parallel, mode, deployment, return_state=True)
    path = summary_path(catalog, out)
    if not path.is_file():
        raise CatalogError(f"{catalog}: the catalogue run ended {state.name} without a summary ({state.message})")
    return json.loads(path.read_text())
