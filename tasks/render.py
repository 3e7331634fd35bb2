"""Stage 6, render: stems + programme gain + plan -> 7.1.4 bed, ADM BWF, stem deliverables,
fold-downs (:func:`filmrestore.upmix.deliver.render_deliverables`), and the verdict.

The placement plan is the plan stage's ``plan.json`` (the one normalize measured the bed
with); this stage's cache key includes its content, so an edited plan re-renders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore.loudness.specs import verdict
from filmrestore.loudness.speech import mask_from_segments
from filmrestore.manifest import StageManifest
from filmrestore.resume import run_stage
from filmrestore.tasks.common import log_stage, progress_reporter, task_options
from filmrestore.tasks.normalize import ProgrammeGain, stem_paths
from filmrestore.tasks.plan import kept_channels, plan_digest, plan_of
from filmrestore.upmix.adm import get_profile, scene_for
from filmrestore.upmix.deliver import BLOCK_FRAMES, render_deliverables

def _speech_mask(speech: dict[str, Any] | None) -> np.ndarray | None:
    return mask_from_segments(speech["segments"], speech["n_sub_blocks"]) if speech else None


def run_render(
    stems: StageManifest, plan: StageManifest, loudness: StageManifest, title_dir: str | Path,
    adm_profile: str = "ebu", on_progress: Callable[[int, int], None] | None = None, programme_name: str | None = None,
) -> tuple[StageManifest, bool]:
    """Render the deliverables of a title with the gain the normalize stage chose and the plan
    of the plan-stage manifest ``plan``."""
    title_dir = Path(title_dir)
    gain = ProgrammeGain.of(loudness)
    name = programme_name or title_dir.name  # the ADM programme's name: the title as written
    params = _key_params({"stems": stems, "plan": plan, "loudness": loudness, "adm_profile": adm_profile,
                          "programme_name": name})

    def compute() -> StageManifest:
        placement = plan_of(plan)
        # A plan that does not fit fails before any output; the bed carries a multichannel source's kept channels.
        scene = scene_for(placement, get_profile(adm_profile), kept=kept_channels(stems))
        records, after = render_deliverables(
            stem_paths(stems), gain.gain_db, gain.spec.ceiling_dbtp, title_dir, name, placement, scene,
            _speech_mask(gain.speech), on_progress, BLOCK_FRAMES)
        result = verdict(after["bed"], gain.spec)
        result["summary"] = _summary(result)
        report = {"after": {"bed_7.1.4": after["bed"].to_dict()},
                  "after_series": {"bed_7.1.4": after["bed"].series_to_dict()}, "verdict": result,
                  "foldown_check": after["foldown_check"], "bed_channels": after["bed_channels"],
                  "plan": {k: v for k, v in plan.report.items() if k != "elapsed_s"}}
        manifest = StageManifest("render", records, {k: v for k, v in params.items() if k != "stems"}, report)
        manifest.pending = after["renames"]  # renamed into place as one set by run_stage
        return manifest

    return run_stage(title_dir, "render", params, compute)


def _summary(result: dict[str, Any]) -> str:
    """One line: what was measured against what, and why a dialogue-gated spec fell back."""
    def fmt(value: float | None) -> str:
        return "-inf" if value is None else f"{value:.1f}"

    why = f"; {result['fallback']}" if result.get("fallback") else ""
    return (f"{fmt(result['measured_lufs'])} LUFS ({result['gate']}-gated{why}) for target "
            f"{result['target_lufs']:.1f} +-{result['tolerance_lu']:g} LU, true peak {fmt(result['true_peak_dbtp'])} "
            f"dBTP for ceiling {result['ceiling_dbtp']:.1f}")


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    """The render's cache key: stems, gain, spec, ADM profile and the plan's content."""
    gain = ProgrammeGain.of(p["loudness"])
    return {"stems": p["stems"], "gain_db": gain.gain_db, "spec": asdict(gain.spec),
            "adm_profile": p.get("adm_profile", "ebu"), "plan": plan_digest(p["plan"]),
            "programme_name": p.get("programme_name") or Path(p["title_dir"]).name}


@task(**task_options("render", _key_params))
def render_task(stems: StageManifest, plan: StageManifest, loudness: StageManifest, title_dir: str,
                adm_profile: str = "ebu", programme_name: str | None = None) -> StageManifest:
    """Prefect wrapper: render the bed, the ADM file, the stem deliverables and the fold-downs."""
    progress = progress_reporter(title_dir, "render")
    manifest, reused = run_render(stems, plan, loudness, title_dir, adm_profile, progress, programme_name)
    log_stage("render", manifest, reused)
    return manifest
