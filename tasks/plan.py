"""Stage 4, plan: the placement plan (``plan.json``) the bed is measured and rendered with.

Between separate and normalize, so that normalize measures the 7.1.4 bed the render will
write, and an edited plan re-measures and re-renders. The plan is made from the effects
stem's interchannel level difference (per 0.5 s) the first time and kept afterwards: an
engineer may edit it, and a re-run then goes on with the edited plan (this stage's cache
key covers an edited plan's content). An unedited plan made for other stems is replaced.
A plan that does not fit the ADM profile fails here, before normalize and render run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from filmrestore import STEMS
from filmrestore.errors import PlanError
from filmrestore.manifest import StageManifest, write_json
from filmrestore.resume import manifest_path, run_stage
from filmrestore.tasks.common import log_stage, task_options
from filmrestore.upmix.adm import get_profile, scene_for
from filmrestore.upmix.analysis import analyse_effects, kept_bed_channels
from filmrestore.upmix.plan import EVENT_FEEDS, Plan, is_edited, load_plan, make_plan, run_length

PLAN_FILE = "plan.json"
# What a fresh plan is made by; a plan.json made by other rules (and not edited) is made again.
# 2: effect events are objects of their own.
PLAN_RULES = 2


def resolve_plan(title_dir: str | Path, stems: StageManifest) -> tuple[Plan, list[list[float]] | None]:
    """The plan this title renders with, and the effects' ILD series (run-length ``[[dB, blocks],
    ...]``) when the plan is a fresh one that ``plan.json`` must get (None when the existing plan
    is kept).

    An existing plan is kept if it was made for these stems or an engineer edited
    it (then it must still fit the programme's length); an unedited plan made for
    other stems is replaced by a fresh one.
    """
    dialogue = stems.file("dialogue")
    hashes = {name: stems.file(name).content_hash for name in STEMS}
    path = Path(title_dir) / PLAN_FILE
    if path.is_file():
        current = load_plan(path)
        made_for_these = current.generated.get("stems") == hashes and current.generated.get("rules") == PLAN_RULES
        if made_for_these or is_edited(current):
            if (current.n_frames, current.sample_rate_hz) != (dialogue.n_frames, dialogue.sample_rate_hz):
                raise PlanError(f"{path}: made for {current.n_frames} frames at {current.sample_rate_hz} Hz, "
                                f"but the stems have {dialogue.n_frames} at {dialogue.sample_rate_hz} Hz")
            return current, None
    ild_db, events = analyse_effects(stems.file("effects").path)
    runs = run_length(ild_db)  # 0.5 dB steps: a feature's series in a few entries
    ild = [float(v) for v, n in runs for _ in range(int(n))]
    plan = make_plan(dialogue.sample_rate_hz, dialogue.n_frames, STEMS, ild,
                     generated={"stems": hashes, "rules": PLAN_RULES}, events=events)
    return plan, runs


def kept_channels(stems: StageManifest) -> frozenset[str]:
    """The bed channels that play a multichannel source's own channels (none for mono or stereo)."""
    return kept_bed_channels(stems.file("dialogue").path)


def plan_of(manifest: StageManifest) -> Plan:
    """The plan a plan-stage manifest describes, read back from its ``plan.json``.

    Raises :class:`PlanError` when the file changed since the stage ran (run the stage again).
    """
    report = manifest.report
    plan = load_plan(report["path"])
    if plan.content_digest() != plan_digest(manifest):
        raise PlanError(f"{report['path']}: changed since the plan stage read it; run the title again")
    return plan


def plan_digest(manifest: StageManifest) -> str:
    """The content digest of the plan a plan-stage manifest describes: what normalize and render
    key their caches on, so an edited plan re-measures and re-renders."""
    return manifest.report["digest"]


def _edited_digest(title_dir: str | Path) -> str | None:
    """The content digest of ``plan.json`` when an engineer edited it, else None (also when
    it is unreadable: the stage itself then reports the problem)."""
    path = Path(title_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        plan = load_plan(path)
    except PlanError:
        return "invalid"
    return plan.content_digest() if is_edited(plan) else None


def run_plan(stems: StageManifest, title_dir: str | Path, adm_profile: str = "ebu") -> tuple[StageManifest, bool]:
    """Stage 4: make or keep ``plan.json`` and check it against the ADM profile (resumable)."""
    title_dir = Path(title_dir)
    if not (title_dir / PLAN_FILE).is_file():
        manifest_path(title_dir, "plan").unlink(missing_ok=True)  # a deleted plan.json is made again
    params = {**_key_params({"stems": stems, "adm_profile": adm_profile, "title_dir": title_dir}), "plan_present": True}

    def compute() -> StageManifest:
        plan, ild_runs = resolve_plan(title_dir, stems)
        scene = scene_for(plan, get_profile(adm_profile), kept=kept_channels(stems))  # a plan that does not fit fails here
        if ild_runs is not None:
            title_dir.mkdir(parents=True, exist_ok=True)
            write_json(title_dir / PLAN_FILE, plan.to_dict())
            plan = load_plan(title_dir / PLAN_FILE)  # as normalize and render will read it
        report = {"path": str(title_dir / PLAN_FILE), "digest": plan.content_digest(),
                  "objects": len(plan.objects), "moving_objects": sum(not o.is_static for o in plan.objects),
                  "event_objects": sum(o.feed in EVENT_FEEDS for o in plan.objects),
                  "events": max((sum(b.gain > 0 for b in o.blocks) for o in plan.objects if o.feed in EVENT_FEEDS),
                                default=0),  # the pair plays the same events
                  "edited": is_edited(plan), "adm_profile": adm_profile, "adm_tracks": scene.n_tracks,
                  "effects_ild_db": ild_runs}
        return StageManifest("plan", {}, {"adm_profile": adm_profile}, report)

    return run_stage(title_dir, "plan", params, compute)


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    """Stems, ADM profile and, when an engineer edited ``plan.json``, its content; a missing
    ``plan.json`` never matches (the stage runs again and writes it)."""
    title_dir = Path(p["title_dir"])
    return {"stems": p["stems"], "adm_profile": p.get("adm_profile", "ebu"),
            "edited_plan": _edited_digest(title_dir), "plan_present": (title_dir / PLAN_FILE).is_file()}


@task(**task_options("plan", _key_params))
def plan_task(stems: StageManifest, title_dir: str, adm_profile: str = "ebu") -> StageManifest:
    """Prefect wrapper: the placement plan."""
    manifest, reused = run_plan(stems, title_dir, adm_profile)
    log_stage("plan", manifest, reused)
    return manifest
