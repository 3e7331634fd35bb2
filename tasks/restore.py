"""Stage 2, restore: the resumable stage over :mod:`filmrestore.restoration` and its Prefect task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from filmrestore.manifest import StageManifest
from filmrestore.restoration.blocks import Progress
from filmrestore.restoration.restorer import plan_restoration, read_detection_sample, restore_file
from filmrestore.resume import run_stage
from filmrestore.tasks.common import log_stage, progress_reporter, task_options


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    return {"extracted": p["extracted"], "strength": p.get("strength", 1.0)}


def run_restore(extracted: StageManifest, title_dir: str | Path, strength: float = 1.0,
                on_progress: Progress | None = None) -> tuple[StageManifest, bool]:
    """Stage 2: restore ``work/soundtrack.wav`` into ``work/restored.wav`` (resumable)."""
    params = _key_params({"extracted": extracted, "strength": strength})
    soundtrack = extracted.file("soundtrack")

    def compute() -> StageManifest:
        sample = read_detection_sample(soundtrack.path)
        plan = plan_restoration(sample, soundtrack.sample_rate_hz, strength)
        record, report = restore_file(soundtrack.path, Path(title_dir) / "work" / "restored.wav", plan, on_progress)
        return StageManifest("restore", {"restored": record}, {"strength": strength}, report)

    return run_stage(title_dir, "restore", params, compute)


@task(**task_options("restore", _key_params))
def restore_task(extracted: StageManifest, title_dir: str, strength: float = 1.0) -> StageManifest:
    """Prefect wrapper: restoration with a progress artifact."""
    manifest, reused = run_restore(extracted, title_dir, strength, progress_reporter(title_dir, "restore"))
    log_stage("restore", manifest, reused)
    return manifest
