"""What every Prefect task of a stage shares: the cache key function over the stage manifests of
:mod:`filmrestore.resume`, retries, progress and artifacts, and the stage log line."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filmrestore.errors import is_transient
from filmrestore.manifest import StageManifest
from filmrestore.resume import load_valid_manifest, stage_key
from filmrestore.stagelog import STAGE_LOGGER, stage_label, terminal_progress

def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run: only there are artifacts, the run logger and
    concurrency slots served by an API (a stage called in-process has none of them)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def prefect_cache_key(stage: str, key_params: Callable[[dict[str, Any]], dict[str, Any]]):
    """A Prefect ``cache_key_fn`` that hits only while the stage's outputs are intact on disk.

    The key also covers the content hashes of the outputs on disk, so a cached
    Prefect result always describes the files that are really there.
    """

    def cache_key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        params = key_params(parameters)
        key = stage_key(stage, params)
        manifest = load_valid_manifest(parameters["title_dir"], stage, key)
        if manifest is None:
            return None
        outputs = sorted(rec.content_hash for rec in manifest.files.values())
        # The title folder too: results persist across sessions, and a manifest names its own paths.
        where = str(Path(parameters["title_dir"]).resolve())
        return hashlib.blake2b(f"{key}:{outputs}:{where}".encode(), digest_size=16).hexdigest()

    return cache_key_fn


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unexpected faults, never our own specific errors."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - any other fault may be transient (I/O, GPU OOM, ...)
        return is_transient(exc)
    return False


def artifact_key(title_dir: str | Path, what: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    title = re.sub(r"[^a-z0-9-]+", "-", Path(title_dir).name.lower()).strip("-")
    return f"{title}-{what}"[:100]


def progress_reporter(title_dir: str | Path, stage: str, step: float = 0.02
                      ) -> Callable[[int, int], None] | None:
    """An ``on_progress(done, total)`` callback that updates a Prefect progress artifact (None
    outside a Prefect run: there is no API to send it to).

    Updates are sent only every ``step`` of progress so a long film does not
    flood the API with one request per block.
    """
    if not in_prefect_run():
        return terminal_progress(stage)
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact_id = create_progress_artifact(
        0.0, key=artifact_key(title_dir, f"{stage}-progress"), description=f"{stage}: {Path(title_dir).name}"
    )
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if fraction - last[0] >= step or fraction >= 1.0:
            last[0] = fraction
            update_progress_artifact(artifact_id, round(100.0 * fraction, 1))

    return on_progress


def task_options(stage: str, key_params: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Prefect ``@task`` options shared by every stage."""
    return {
        "name": stage,
        "retries": 2,
        "retry_delay_seconds": 5,
        "retry_condition_fn": retry_transient,
        "cache_key_fn": prefect_cache_key(stage, key_params),
        "persist_result": True,
        "result_serializer": "json",
    }


def log_stage(stage: str, manifest: StageManifest, reused: bool) -> None:
    """Log one line per stage: through Prefect's run logger inside a run (the UI shows it), else
    through the ``filmrestore.stages`` logger."""
    how = "reused from a previous run" if reused else f"done in {manifest.report.get('elapsed_s', 0):.1f} s"
    if in_prefect_run():
        from prefect import get_run_logger

        logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
    else:
        logger = logging.getLogger(STAGE_LOGGER)
    # Marked, so that the CLI's terminal keeps these lines while it leaves Prefect's own chatter out.
    logger.info("%s %s: %s", stage_label(stage), how, ", ".join(sorted(manifest.files)),
                          extra={"filmrestore_stage": True})
