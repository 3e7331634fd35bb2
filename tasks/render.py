"""Stage 5, render: stems + programme gain + plan -> 7.1.4 bed, ADM BWF, stem deliverables, fold-downs.

The placement plan is ``plan.json`` in the title folder: made from the
normalize stage's image analysis the first time, kept afterwards (an engineer
may edit it; a re-run then re-renders with it, since this stage's cache key
includes the plan's content, while separation's does not). A plan that does not
fit the ADM profile fails here, before any file is written.

One streaming pass writes every deliverable. The true-peak limiter's gain is
computed on the 7.1.4 mix and applied, delay-compensated, to the mix and to
every ADM track alike (it is linked across channels), so the ADM renderer's
render of ``adm.wav`` is the limited bed. The stems get the programme gain only,
so music + effects is exactly the M&E of the delivered mix before limiting.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore import STEMS
from filmrestore.audio import AudioWriter, iter_aligned_blocks
from filmrestore.errors import FilmrestoreError, PlanError
from filmrestore.loudness.limiter import TruePeakLimiter
from filmrestore.loudness.meter import LoudnessMeter
from filmrestore.loudness.specs import get_preset, verdict
from filmrestore.loudness.speech import iter_speech_activity, mask_from_segments
from filmrestore.manifest import FileRecord, StageManifest, write_json
from filmrestore.tasks.common import log_stage, progress_reporter, run_stage, task_options
from filmrestore.tasks.normalize import BLOCK_FRAMES, expand_runs, render_input, stem_paths
from filmrestore.upmix.adm import AdmScene, AdmSceneWriter, get_profile, scene_for
from filmrestore.upmix.foldown import fold_down, octave_band_levels_db
from filmrestore.upmix.layouts import BED_7_1_4
from filmrestore.upmix.plan import Plan, is_edited, load_plan, make_plan
from filmrestore.upmix.render import SceneRenderer

FOLDOWN_TOLERANCE_DB = 1.0  # per octave band, stereo fold-down vs the input mix (DESIGN.md)
PLAN_FILE = "plan.json"


class _BandEnergy:
    """Accumulate octave-band energy of a stream (summed over channels) for the fold-down check."""

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.power = 0.0

    def add(self, x: np.ndarray) -> None:
        if x.shape[1] >= 8192:
            levels = octave_band_levels_db(x, self.sample_rate_hz)
            self.power = self.power + x.shape[1] * np.sum(10.0 ** (levels / 10.0), axis=0)

    def levels_db(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(np.asarray(self.power, dtype=np.float64))


def foldown_check(mix: _BandEnergy, stereo: _BandEnergy) -> dict[str, Any]:
    """Compare the stereo fold-down's octave-band levels with the input mix's (both with the gain applied)."""
    diff = stereo.levels_db() - mix.levels_db()
    finite = diff[np.isfinite(diff)]
    worst = float(np.max(np.abs(finite))) if finite.size else 0.0
    return {"band_diff_db": [round(float(d), 2) if np.isfinite(d) else None for d in np.atleast_1d(diff)],
            "max_abs_diff_db": round(worst, 2), "tolerance_db": FOLDOWN_TOLERANCE_DB,
            "pass": worst <= FOLDOWN_TOLERANCE_DB}


# ----------------------------------------------------------------------------- the plan

def _stem_hashes(stems: dict[str, Any]) -> dict[str, str]:
    files = StageManifest.from_dict(stems).files
    return {name: files[name].content_hash for name in STEMS}


def resolve_plan(title_dir: str | Path, stems: dict[str, Any], norm_report: dict[str, Any]) -> tuple[Plan, bool]:
    """The plan this title renders with, and whether ``plan.json`` must be (re)written.

    An existing plan is kept if it was made for these stems or an engineer edited
    it (then it must still fit the programme's length); an unedited plan made for
    other stems is replaced by a fresh one.
    """
    dialogue = StageManifest.from_dict(stems).file("dialogue")
    hashes = _stem_hashes(stems)
    fresh = make_plan(dialogue.sample_rate_hz, dialogue.n_frames, STEMS,
                      expand_runs(norm_report.get("effects_ild_db", [])), generated={"stems": hashes})
    path = Path(title_dir) / PLAN_FILE
    if not path.is_file():
        return fresh, True
    current = load_plan(path)
    if current.generated.get("stems") == hashes or is_edited(current):
        if (current.n_frames, current.sample_rate_hz) != (dialogue.n_frames, dialogue.sample_rate_hz):
            raise PlanError(f"{path}: made for {current.n_frames} frames at {current.sample_rate_hz} Hz, "
                            f"but the stems have {dialogue.n_frames} at {dialogue.sample_rate_hz} Hz")
        return current, False
    return fresh, True


# ----------------------------------------------------------------------------- deliverables

class _Deliverables:
    """The writers of every file the render stage produces.

    :meth:`write` hands a block to one background thread that encodes (24-bit packing,
    compiled, GIL released), hashes and writes every file, while the caller renders the next
    block: on two cores the two halves of the work overlap. At most one block waits, so memory
    stays one block deep.
    """

    def __init__(self, title_dir: Path, title: str, n_channels: int, sample_rate_hz: int, scene: AdmScene) -> None:
        sr = sample_rate_hz
        self.bed = AudioWriter(title_dir / "bed_7.1.4.wav", sr, 12, "PCM_24", BED_7_1_4.channel_mask)
        self.adm = AdmSceneWriter(title_dir / "adm.wav", scene, title)
        self.stems = {name: AudioWriter(title_dir / "stems" / f"{name}.wav", sr, n_channels, "PCM_24")
                      for name in ("dialogue", "music", "effects", "me")}
        self.foldowns = {name: AudioWriter(title_dir / "foldown" / f"{name}.wav", sr, n, "PCM_24")
                         for name, n in (("stereo", 2), ("5.1", 6))}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-write")
        self._pending: Future[None] | None = None

    def writers(self) -> dict[str, AudioWriter]:
        return {"bed_7.1.4": self.bed, "adm": self.adm.writer, **{f"stems/{k}": w for k, w in self.stems.items()},
                **{f"foldown/{k}": w for k, w in self.foldowns.items()}}

    def write(self, stems: dict[str, np.ndarray], mix: np.ndarray, tracks: np.ndarray, stereo: np.ndarray) -> None:
        """Queue a block of every file: stems (by name), the bed ``mix``, the ADM ``tracks`` and the
        stereo fold-down of ``mix``; the arrays must not change afterwards."""
        self._wait()
        self._pending = self._pool.submit(self._write_now, stems, mix, tracks, stereo)

    def _write_now(self, stems: dict[str, np.ndarray], mix: np.ndarray, tracks: np.ndarray,
                   stereo: np.ndarray) -> None:
        for name, x in stems.items():
            self.stems[name].write(x)
        self.bed.write(mix)
        self.adm.write_tracks(tracks)
        self.foldowns["stereo"].write(stereo)
        self.foldowns["5.1"].write(fold_down(mix, "5.1"))

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> dict[str, FileRecord]:
        self._wait()
        self._pool.shutdown()
        self.adm.close()
        records = {}
        for name, writer in self.writers().items():
            if name != "adm":
                writer.close()
            records[name] = FileRecord.from_writer(writer)
        return records

    def abort(self) -> None:
        """Drop every partial file (after the queued block, whose own error the caller's supersedes)."""
        if self._pending is not None:
            futures_wait([self._pending])
        self._pool.shutdown()
        for writer in self.writers().values():
            writer.abort()


def render_deliverables(
    stems: dict[str, Any], gain_db: float, ceiling_dbtp: float, title_dir: Path, title: str, plan: Plan,
    scene: AdmScene, speech: np.ndarray | None = None, on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, FileRecord], dict[str, Any]]:
    """Stream the stems once into every deliverable; returns their records and the after-measurements."""
    gain = np.float32(10.0 ** (gain_db / 20.0))
    paths = stem_paths(stems)
    dialogue = StageManifest.from_dict(stems).file("dialogue")
    renderer = SceneRenderer(dialogue.sample_rate_hz, min(dialogue.n_channels, 2), plan)
    limiter = TruePeakLimiter(dialogue.sample_rate_hz, 12, ceiling_dbtp, n_linked=scene.n_tracks)
    meter = LoudnessMeter(dialogue.sample_rate_hz, 12)
    mix_bands, stereo_bands = _BandEnergy(dialogue.sample_rate_hz), _BandEnergy(dialogue.sample_rate_hz)
    out = _Deliverables(title_dir, title, dialogue.n_channels, dialogue.sample_rate_hz, scene)
    rows = list(scene.track_rows)
    try:
        done = 0
        for blocks in iter_aligned_blocks(paths, BLOCK_FRAMES):
            scaled = {name: x * gain for name, x in blocks.items()}
            scaled["me"] = scaled["music"] + scaled["effects"]
            stems_in = render_input({name: scaled[name] for name in STEMS})
            mix_bands.add(sum(stems_in.values()))
            rendered = renderer.process(stems_in)
            mix, tracks = limiter.process_linked(rendered.mix, rendered.track_rows(rows))
            _deliver(out, meter, stereo_bands, scaled, mix, tracks)
            done += next(iter(blocks.values())).shape[1]
            if on_progress:
                on_progress(done, dialogue.n_frames)
        _deliver(out, meter, stereo_bands, {}, *limiter.flush_linked())
        records = out.close()
    except BaseException:
        out.abort()
        raise
    masks = [speech] if speech is not None else iter_speech_activity(paths["dialogue"])
    for mask in masks:
        meter.process_speech(mask)
    return records, {"bed": meter.result(), "foldown_check": foldown_check(mix_bands, stereo_bands)}


def _deliver(out: _Deliverables, meter: LoudnessMeter, stereo_bands: _BandEnergy, stems: dict[str, np.ndarray],
             mix: np.ndarray, tracks: np.ndarray) -> None:
    """Queue a block of every deliverable, and measure the bed and its stereo fold-down meanwhile."""
    stereo = fold_down(mix, "stereo")
    out.write(stems, mix, tracks, stereo)
    meter.process(mix)
    stereo_bands.add(stereo)


def _speech_mask(norm: dict[str, Any]) -> np.ndarray | None:
    speech = norm.get("speech")
    return mask_from_segments(speech["segments"], speech["n_sub_blocks"]) if speech else None


def run_render(
    stems: dict[str, Any], loudness: dict[str, Any], title_dir: str | Path, adm_profile: str = "ebu",
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[StageManifest, bool]:
    """Render the deliverables of a title with the gain the normalize stage chose and the title's plan."""
    title_dir = Path(title_dir)
    norm = StageManifest.from_dict(loudness).report
    spec_d = norm["spec"]
    plan, write_plan = resolve_plan(title_dir, stems, norm)
    scene = scene_for(plan, get_profile(adm_profile))  # a plan that does not fit fails before any output
    if write_plan:
        write_json(title_dir / PLAN_FILE, plan.to_dict())
    params = _key_params({"stems": stems, "loudness": loudness, "title_dir": title_dir, "adm_profile": adm_profile})

    def compute() -> StageManifest:
        spec = get_preset(spec_d["name"], spec_d["target_lufs"], spec_d["ceiling_dbtp"], spec_d["gate"])
        records, after = render_deliverables(
            stems, norm["gain_db"], spec.ceiling_dbtp, title_dir, title_dir.name, plan, scene,
            _speech_mask(norm), on_progress)
        result = verdict(after["bed"], spec)
        result["preset"] = spec.name
        result["summary"] = _summary(after["bed"].to_dict(), spec_d)
        report = {"after": {"bed_7.1.4": after["bed"].to_dict()},
                  "after_series": {"bed_7.1.4": after["bed"].series_to_dict()}, "verdict": result,
                  "foldown_check": after["foldown_check"],
                  "plan": {"path": str(title_dir / PLAN_FILE), "objects": len(plan.objects),
                           "moving_objects": sum(not o.is_static for o in plan.objects),
                           "edited": is_edited(plan), "adm_profile": adm_profile,
                           "adm_tracks": scene.n_tracks}}
        return StageManifest("render", records, {k: v for k, v in params.items() if k != "stems"}, report)

    return run_stage(title_dir, "render", params, compute)


def _summary(after: dict[str, Any], spec: dict[str, Any]) -> str:
    measured = after["dialogue_lufs"] if spec["gate"] == "dialogue" and after["dialogue_lufs"] is not None \
        else after["integrated_lufs"]
    return (f"{measured:.1f} LUFS ({spec['gate']}-gated) for target {spec['target_lufs']:.1f}, "
            f"true peak {after['true_peak_dbtp']:.1f} dBTP for ceiling {spec['ceiling_dbtp']:.1f}")


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    """The render's cache key: stems, gain, spec, ADM profile and the plan's content (as it would render)."""
    norm = StageManifest.from_dict(p["loudness"]).report
    try:
        digest = resolve_plan(p["title_dir"], p["stems"], norm)[0].content_digest()
    except FilmrestoreError:
        digest = "invalid"  # no cache hit; the stage itself then reports the plan's problem
    return {"stems": p["stems"], "gain_db": norm["gain_db"], "spec": norm["spec"],
            "adm_profile": p.get("adm_profile", "ebu"), "plan": digest}


@task(**task_options("render", _key_params))
def render_task(stems: dict[str, Any], loudness: dict[str, Any], title_dir: str, adm_profile: str = "ebu"
                ) -> dict[str, Any]:
    """Prefect wrapper: render the bed, the ADM file, the stem deliverables and the fold-downs."""
    progress = progress_reporter(title_dir, "render")
    manifest, reused = run_render(stems, loudness, title_dir, adm_profile, progress)
    log_stage("render", manifest, reused)
    return manifest.to_dict()
