"""Stage 3, separate: the restored soundtrack -> dialogue, music and effects stems."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from prefect import task

from filmrestore import DEFAULT_SEPARATOR
from filmrestore.errors import ConfigError
from filmrestore.manifest import StageManifest
from filmrestore.separation import STEMS, get_separator, resolve_device, separate_file, weights_fingerprint
from filmrestore.resume import run_stage
from filmrestore.tasks.common import in_prefect_run, log_stage, progress_reporter, task_options


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    # The device is left out on purpose: CPU and GPU runs give the same stems
    # within tolerance, so a GPU box may resume a run a CPU box started.
    # The checkpoint's content, not just its path: retraining into the same file, a new shipped
    # model behind the default, or new inference settings in its JSON redo the stems; an edit
    # of its training notes does not.
    # The shifts enter through the settings they resolve to (none asked: the checkpoint's).
    hashes = weights_fingerprint(p["separator"], p.get("checkpoint"), p.get("shifts"))
    return {"restored": p["restored"], "separator": p["separator"], "checkpoint": p.get("checkpoint"),
            "checkpoint_hash": hashes["weights"], "checkpoint_settings_hash": hashes["weights_settings"]}


def run_separate(
    restored: StageManifest,
    title_dir: str | Path,
    separator: str = DEFAULT_SEPARATOR,
    device: str | torch.device = "auto",
    checkpoint: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    shifts: int | None = None,
) -> tuple[StageManifest, bool]:
    """Separate ``restored`` (a restore-stage manifest) into ``work/stems/<stem>.wav`` on ``device``
    (a name is resolved here; the task passes the device it resolved); ``shifts``: see
    :func:`~filmrestore.separation.get_separator`."""
    params = {"restored": restored, "separator": separator, "checkpoint": checkpoint, "shifts": shifts}
    source = restored.file("restored")

    def compute() -> StageManifest:
        model = get_separator(separator, checkpoint, shifts)
        torch_device = device if isinstance(device, torch.device) else resolve_device(device)
        out_paths = {stem: Path(title_dir) / "work" / "stems" / f"{stem}.wav" for stem in STEMS}
        records = separate_file(model, source.path, out_paths, device=torch_device, on_progress=on_progress)
        report = {"separator": separator, "device": str(torch_device)}
        return StageManifest("separate", records, _key_params(params), report)

    return run_stage(title_dir, "separate", _key_params(params), compute)


def separated_on_disk(restored: StageManifest, title_dir: str | Path, separator: str, checkpoint: str | None,
                      where: str, shifts: int | None = None) -> StageManifest:
    """The stems another flow run (``where``) separated into ``title_dir``, checked as a resumed
    stage is (the manifest's key and every file's content hash); nothing is computed here."""
    params = {"restored": restored, "separator": separator, "checkpoint": checkpoint, "shifts": shifts}

    def absent() -> StageManifest:
        raise ConfigError(f"{title_dir}: the stems of {where} are not in this title folder: its workers must "
                          "mount the same output folder as the title flow's")

    manifest, _ = run_stage(title_dir, "separate", _key_params(params), absent)
    log_stage("separate", manifest, reused=False)
    return manifest


def uses_gpu(device: torch.device) -> bool:
    """Whether a separation on ``device`` runs on a GPU."""
    return device.type == "cuda"


SLOT_SETTING = "FILMRESTORE_SEPARATION_SLOT"  # "gpu" (default) or "always"


def takes_slot(device: torch.device) -> bool:
    """Whether a separation on ``device`` holds a ``gpu`` slot: on a GPU, and on the CPU too where
    the site says ``FILMRESTORE_SEPARATION_SLOT=always`` (separations one at a time on a shared
    CPU box); otherwise a CPU separation has nothing to queue for."""
    return uses_gpu(device) or os.environ.get(SLOT_SETTING, "gpu") == "always"


GPU_LIMIT = "gpu"  # Prefect global concurrency limit: as many slots as separations a site may run at once
GPU_LEASE_S = 60.0  # the server's minimum; renewed every 45 s while the stage runs


@task(**task_options("separate", _key_params), tags=["gpu"])
def separate_task(
    restored: StageManifest, title_dir: str, separator: str, device: str, checkpoint: str | None = None,
    shifts: int | None = None,
) -> StageManifest:
    """Prefect wrapper: separation with a progress artifact, holding one slot of the ``gpu`` limit
    while it runs on a GPU (:func:`takes_slot`).

    Without a ``gpu`` global concurrency limit on the server the stage runs unlimited
    (``strict=False``: Prefect logs a warning). The slot's lease is renewed while the
    stage runs; a killed worker's slot comes back when its lease expires.
    """
    from contextlib import nullcontext

    from prefect.concurrency.sync import concurrency

    # The device is resolved once, here, on the machine that runs the stage ("auto" on a worker
    # means that worker's GPU). In-process, without an API, there is nothing to share the GPU with;
    # on the CPU no GPU to share.
    torch_device = resolve_device(device)
    slot = concurrency(GPU_LIMIT, occupy=1, lease_duration=GPU_LEASE_S, strict=False) \
        if in_prefect_run() and takes_slot(torch_device) else nullcontext()
    with slot:
        progress = progress_reporter(title_dir, "separate")  # created once the slot is held
        manifest, reused = run_separate(restored, title_dir, separator, torch_device, checkpoint, progress, shifts)
    log_stage("separate", manifest, reused)
    return manifest
