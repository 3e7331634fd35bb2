"""Stage 7 (with ``--remux``), remux: the source's pictures with the restored deliverables
(:mod:`filmrestore.remux`) in ``<title>/remux.mkv`` or ``remux.mov``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from filmrestore.audio import fingerprint_source
from filmrestore.manifest import StageManifest
from filmrestore.remux import AUDIO_TRACKS, remux
from filmrestore.resume import run_stage
from filmrestore.tasks.common import log_stage, task_options


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    return {"source": str(p["source"]), "fingerprint": fingerprint_source(p["source"]),
            "extracted": p["extracted"], "rendered": p["rendered"], "container": p.get("container", "mkv")}


def run_remux(source: str | Path, extracted: list[StageManifest], rendered: list[StageManifest],
              title_dir: str | Path, container: str = "mkv") -> tuple[StageManifest, bool]:
    """Remux the title's deliverables with the source's pictures: per audio stream restored, in
    the source's order (the title folder's first), its extract- and render-stage manifests."""
    params = _key_params({"source": source, "extracted": extracted, "rendered": rendered, "container": container})

    def compute() -> StageManifest:
        sets = []
        for ex, rd in zip(extracted, rendered):
            report, files = ex.report, rd.files
            label = f"stream {report.get('audio_index')}" + (f", {report['language']}" if report.get("language") else "")
            sets.append(({name: files[name].path for name, _, _ in AUDIO_TRACKS}, report.get("language"), label))
        (first, language, _), more = sets[0], sets[1:]
        record, report = remux(source, first, Path(title_dir) / f"remux.{container}", language, container, more)
        return StageManifest("remux", {"remux": record}, {"container": container}, report)

    return run_stage(title_dir, "remux", params, compute)


@task(**task_options("remux", _key_params))
def remux_task(source: str, extracted: list[StageManifest], rendered: list[StageManifest], title_dir: str,
               container: str = "mkv") -> StageManifest:
    """Prefect wrapper: the remux of a rendered title."""
    manifest, reused = run_remux(source, extracted, rendered, title_dir, container)
    log_stage("remux", manifest, reused)
    return manifest
