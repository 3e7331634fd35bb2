"""Stage 1, extract: the resumable stage over :mod:`filmrestore.media` and its Prefect task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task

from filmrestore.audio import fingerprint_source
from filmrestore.manifest import StageManifest
from filmrestore.media import extract_audio
from filmrestore.resume import run_stage
from filmrestore.tasks.common import log_stage, progress_reporter, task_options


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    return {"source": str(p["source"]), "fingerprint": fingerprint_source(p["source"]), "stream": p.get("stream")}


def run_extract(source: str | Path, title_dir: str | Path, stream: int | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[StageManifest, bool]:
    """Stage 1: decode the title's audio stream to ``work/soundtrack.wav`` (resumable)."""
    params = _key_params({"source": source, "stream": stream})

    def compute() -> StageManifest:
        record, report = extract_audio(source, Path(title_dir) / "work" / "soundtrack.wav", stream, on_progress)
        return StageManifest("extract", {"soundtrack": record}, params, report)

    return run_stage(title_dir, "extract", params, compute)


@task(**task_options("extract", _key_params))
def extract_task(source: str, title_dir: str, stream: int | None = None) -> StageManifest:
    """Prefect wrapper: extract with a progress artifact."""
    manifest, reused = run_extract(source, title_dir, stream, progress_reporter(title_dir, "extract"))
    log_stage("extract", manifest, reused)
    return manifest
