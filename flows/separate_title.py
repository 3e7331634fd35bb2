"""The separate stage as a flow run of its own, so that a GPU is held only while it separates.

On Kubernetes a flow-run pod holds the GPU it asked for from start to end: a title flow whose
pod asks for one keeps it through extract, restore, normalise and render, which never use it.
With ``separation_deployment`` set, the title flow (on a CPU pool) runs its separate stage as a
run of that deployment of :func:`separate_title`, whose pod asks for the GPU, and waits for it.
The stems land in the title folder on the volume both pods mount; the title flow then reads
them back through the stage's manifest (the resume check: content hashes included) and
computes nothing. A separation run that does not complete fails the stage (and its retries
start another run); stems that are not there afterwards mean the pools do not share the output
folder, said in one line.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from filmrestore import DEFAULT_SEPARATOR
from filmrestore.flows.restore_title import Device, Separator
from filmrestore.manifest import StageManifest
from filmrestore.tasks.common import retry_transient
from filmrestore.tasks.separate import separate_task, separated_on_disk


@flow(name="separate-title", flow_run_name="separate {title_dir}", log_prints=False, result_serializer="json")
def separate_title(restored: dict[str, Any], title_dir: str, separator: Separator = DEFAULT_SEPARATOR,
                   device: Device = "auto", checkpoint: str | None = None,
                   shifts: int | None = None) -> dict[str, Any]:
    """Separate a title's restored soundtrack into dialogue, music and effects stems: the separate
    stage of a restore-title run, run where the GPUs are.

    Args:
        restored: The restore stage's manifest (the title flow passes it).
        title_dir: The title folder, as this flow's workers see it (the same volume as the title flow's).
        separator: neural (the shipped band-split model) or dsp.
        device: Where separation runs: auto (a GPU when there is one), cpu or cuda.
        checkpoint: Another neural separator checkpoint (.safetensors); empty: the shipped one.
        shifts: Neural: passes averaged, each on the STFT grid moved by a fraction of a hop; empty: the checkpoint's.
    """
    return separate_task(StageManifest.from_dict(restored), title_dir, separator, device, checkpoint,
                         shifts).to_dict()


@task(name="separate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def separate_elsewhere_task(deployment: str, restored: StageManifest, title_dir: str, separator: str, device: str,
                            checkpoint: str | None, shifts: int | None = None) -> StageManifest:
    """The separate stage of a title flow, as a run of ``deployment`` (a deployment of
    :func:`separate_title`): start it, wait for it, read back the stems it wrote into ``title_dir``."""
    from prefect.deployments import run_deployment

    parameters = {"restored": restored.to_dict(), "title_dir": title_dir, "separator": separator,
                  "device": device, "checkpoint": checkpoint, "shifts": shifts}
    run = run_deployment(deployment, parameters=parameters, timeout=None)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "without a state"
        raise RuntimeError(f"{title_dir}: the separation run {run.name!r} of {deployment} ended {state}")
    return separated_on_disk(restored, title_dir, separator, checkpoint, deployment, shifts)
