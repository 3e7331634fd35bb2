"""Stage 5, normalize: measure the stems and the 7.1.4 render, choose one programme gain.

BS.1770 loudness is measured where the delivery spec measures it: on the 7.1.4 bed
rendered with the title's plan (the plan stage's ``plan.json``, as the render stage will
write it; channel weights, LFE excluded), gated on dialogue when the spec asks. One pass
over the stems feeds every meter and the scene renderer. Only the integrated loudness
decides the gain, so the stem and bed meters skip true peak; the restored mix keeps it
(it is the "before" figure a person compares).
The speech mask is computed once here and stored as segments in the report, so
the render stage gates its after-measurement without running the VAD again.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore import STEMS
from filmrestore.audio import iter_aligned_blocks, read_layout
from filmrestore.loudness.meter import LoudnessMeter
from filmrestore.loudness.specs import DeliverySpec, get_preset, programme_gain
from filmrestore.loudness.speech import iter_speech_activity, speech_segments
from filmrestore.manifest import StageManifest
from filmrestore.resume import run_stage
from filmrestore.tasks.common import log_stage, task_options
from filmrestore.tasks.plan import plan_digest, plan_of
from filmrestore.upmix.deliver import BLOCK_FRAMES
from filmrestore.upmix.plan import Plan
from filmrestore.upmix.render import SceneRenderer


@dataclass(frozen=True)
class ProgrammeGain:
    """What the normalize stage decided, as the render stage applies it."""

    gain_db: float  # the one programme gain, dB
    spec: DeliverySpec  # the delivery spec it was chosen for (its ceiling_dbtp is the limiter's)
    speech: dict[str, Any] | None  # the dialogue's speech mask: {"segments", "n_sub_blocks"}

    @classmethod
    def of(cls, manifest: StageManifest) -> ProgrammeGain:
        """Read from a normalize-stage manifest."""
        report = manifest.report
        return cls(report["gain_db"], DeliverySpec(**report["spec"]), report.get("speech"))


def stem_paths(stems: StageManifest) -> dict[str, str]:
    """The stem files of a separate-stage manifest, in STEMS order."""
    files = stems.files
    return {stem: files[stem].path for stem in STEMS}


def measure_programme(stems: StageManifest, plan: Plan, sample_rate_hz: int, n_channels: int) -> dict[str, Any]:
    """Loudness of each stem, of their sum (the restored mix) and of the unnormalised 7.1.4 render
    with ``plan``, plus the speech mask."""
    paths = stem_paths(stems)
    meters = {name: LoudnessMeter(sample_rate_hz, n_channels, true_peak=False) for name in STEMS}
    meters["mix"] = LoudnessMeter(sample_rate_hz, n_channels)
    meters["bed_7.1.4"] = LoudnessMeter(sample_rate_hz, 12, true_peak=False)
    source = read_layout(paths["dialogue"]) if n_channels > 2 else None  # a multichannel source kept in place
    renderer = SceneRenderer(sample_rate_hz, n_channels, plan, source=source)

    def meter_block(blocks: dict[str, np.ndarray], bed: np.ndarray) -> None:
        for name, block in blocks.items():
            meters[name].process(block)
        meters["mix"].process(sum(blocks.values()))
        meters["bed_7.1.4"].process(bed)

    # Both cores: the speech detector runs on its own, and each block is metered (compiled kernels,
    # GIL released) while the next one renders. Each meter still sees its blocks in order, so the
    # figures are those of one thread; at most one block waits, so memory stays flat.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="normalize") as pool:
        detected = pool.submit(lambda: np.concatenate([np.zeros(0, bool),
                                                       *iter_speech_activity(paths["dialogue"])]))
        pending: Future[None] | None = None
        for blocks in iter_aligned_blocks(paths, BLOCK_FRAMES):
            bed = renderer.process(blocks).mix
            if pending is not None:
                pending.result()
            pending = pool.submit(meter_block, blocks, bed)
        if pending is not None:
            pending.result()
        speech = detected.result()
    for meter in meters.values():
        meter.process_speech(speech)
    return {"reports": {name: meter.result() for name, meter in meters.items()},
            "speech": {"segments": speech_segments(speech), "n_sub_blocks": int(speech.size)}}


def run_normalize(
    restored: StageManifest,
    stems: StageManifest,
    plan: StageManifest,
    title_dir: str | Path,
    preset: str = "ebu-r128",
    target_lufs: float | None = None,
    ceiling_dbtp: float | None = None,
    gate: str | None = None,
) -> tuple[StageManifest, bool]:
    """Measure before normalisation (the bed with the plan-stage manifest ``plan``'s plan) and
    decide the programme gain toward ``preset``."""
    spec = get_preset(preset, target_lufs, ceiling_dbtp, gate)
    params = _key_params({"stems": stems, "plan": plan, "preset": preset, "target_lufs": target_lufs,
                          "ceiling_dbtp": ceiling_dbtp, "gate": gate})
    source = restored.file("restored")

    def compute() -> StageManifest:
        measured = measure_programme(stems, plan_of(plan), source.sample_rate_hz, source.n_channels)
        reports = measured["reports"]
        decision = programme_gain(reports["bed_7.1.4"], spec, source=source.path)
        report = {
            "spec": asdict(spec),
            "gain_db": round(decision.gain_db, 3),
            "measured_lufs": decision.measured_lufs,
            "target_lufs": decision.target_lufs,
            "basis": decision.basis,
            "dialogue_fallback": decision.dialogue_fallback,
            "fallback": decision.fallback,
            "before": {name: r.to_dict() for name, r in reports.items()},
            "before_series": {name: reports[name].series_to_dict() for name in ("bed_7.1.4", "mix")},
            "speech": measured["speech"],
        }
        return StageManifest("normalize", {}, {k: v for k, v in params.items() if k != "stems"}, report)

    return run_stage(title_dir, "normalize", params, compute)


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    """Stems, the plan's content and the delivery spec."""
    return {"plan": plan_digest(p["plan"]),
            **{k: p.get(k) for k in ("stems", "preset", "target_lufs", "ceiling_dbtp", "gate")}}


@task(**task_options("normalize", _key_params))
def normalize_task(
    restored: StageManifest, stems: StageManifest, plan: StageManifest, title_dir: str, preset: str = "ebu-r128",
    target_lufs: float | None = None, ceiling_dbtp: float | None = None, gate: str | None = None,
) -> StageManifest:
    """Prefect wrapper: loudness before normalisation, and the programme gain."""
    manifest, reused = run_normalize(restored, stems, plan, title_dir, preset, target_lufs, ceiling_dbtp, gate)
    log_stage("normalize", manifest, reused)
    return manifest
