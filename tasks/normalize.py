"""Stage 4, normalize: measure the stems and the 7.1.4 render, choose one programme gain.

BS.1770 loudness is measured where the delivery spec measures it: on the final
7.1.4 render (channel weights, LFE excluded), gated on dialogue when the spec
asks. The bed is rendered here once, only to be measured, and again by the
render stage with the gain and the limiter: rendering costs far less than
keeping a 12-channel float intermediate of a whole film on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore.audio import iter_aligned_blocks
from filmrestore.manifest import StageManifest
from filmrestore.separation import STEMS
from filmrestore.tasks.common import log_stage, run_stage, task_options
from filmrestore.tasks.loudness import LoudnessMeter, get_preset, iter_speech_activity, programme_gain
from filmrestore.upmix.foldown import downmix_to_stereo
from filmrestore.upmix.render import BedRenderer

BLOCK_FRAMES = 480_000  # 10 s at 48 kHz: large enough for numpy, small enough for flat memory


def stem_paths(stems: dict[str, Any]) -> dict[str, str]:
    """The stem files of a separate-stage manifest, in STEMS order."""
    files = StageManifest.from_dict(stems).files
    return {stem: files[stem].path for stem in STEMS}


def render_input(blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stems as the bed renderer takes them: mono or stereo (a 5.1/7.1 source is folded to stereo)."""
    return {name: x if x.shape[0] <= 2 else downmix_to_stereo(x) for name, x in blocks.items()}


def measure_programme(stems: dict[str, Any], sample_rate_hz: int, n_channels: int) -> dict[str, Any]:
    """Loudness of each stem, of their sum (the restored mix) and of the unnormalised 7.1.4 render."""
    paths = stem_paths(stems)
    meters = {name: LoudnessMeter(sample_rate_hz, n_channels) for name in (*STEMS, "mix")}
    meters["bed_7.1.4"] = LoudnessMeter(sample_rate_hz, 12)
    renderer = BedRenderer(sample_rate_hz, min(n_channels, 2))
    for blocks in iter_aligned_blocks(paths, BLOCK_FRAMES):
        for name, block in blocks.items():
            meters[name].process(block)
        meters["mix"].process(sum(blocks.values()))
        meters["bed_7.1.4"].process(renderer.process(render_input(blocks)))
    for speech in iter_speech_activity(paths["dialogue"]):
        for meter in meters.values():
            meter.process_speech(speech)
    return {name: meter.result() for name, meter in meters.items()}


def run_normalize(
    restored: dict[str, Any],
    stems: dict[str, Any],
    title_dir: str | Path,
    preset: str = "ebu-r128",
    target_lufs: float | None = None,
    ceiling_dbtp: float | None = None,
    gate: str | None = None,
) -> tuple[StageManifest, bool]:
    """Measure before normalisation and decide the programme gain toward ``preset``."""
    spec = get_preset(preset, target_lufs, ceiling_dbtp, gate)
    params = {"stems": stems, "preset": preset, "target_lufs": target_lufs, "ceiling_dbtp": ceiling_dbtp, "gate": gate}
    source = StageManifest.from_dict(restored).file("restored")

    def compute() -> StageManifest:
        reports = measure_programme(stems, source.sample_rate_hz, source.n_channels)
        decision = programme_gain(reports["bed_7.1.4"], spec, source=source.path)
        report = {
            "spec": {"name": spec.name, "target_lufs": spec.target_lufs, "ceiling_dbtp": spec.ceiling_dbtp,
                     "gate": spec.gate, "tolerance_lu": spec.tolerance_lu},
            "gain_db": round(decision.gain_db, 3),
            "measured_lufs": decision.measured_lufs,
            "basis": decision.basis,
            "dialogue_fallback": decision.dialogue_fallback,
            "before": {name: r.to_dict() for name, r in reports.items()},
        }
        return StageManifest("normalize", {}, {k: v for k, v in params.items() if k != "stems"}, report)

    return run_stage(title_dir, "normalize", params, compute)


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p.get(k) for k in ("stems", "preset", "target_lufs", "ceiling_dbtp", "gate")}


@task(**task_options("normalize", _key_params))
def normalize_task(
    restored: dict[str, Any], stems: dict[str, Any], title_dir: str, preset: str = "ebu-r128",
    target_lufs: float | None = None, ceiling_dbtp: float | None = None, gate: str | None = None,
) -> dict[str, Any]:
    """Prefect wrapper: loudness before normalisation, and the programme gain."""
    manifest, reused = run_normalize(restored, stems, title_dir, preset, target_lufs, ceiling_dbtp, gate)
    log_stage("normalize", manifest, reused)
    return manifest.to_dict()
