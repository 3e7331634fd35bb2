"""Stage 5, render: stems + programme gain -> 7.1.4 bed, ADM BWF, stem deliverables, fold-downs.

One streaming pass writes every deliverable: the bed goes through the
true-peak limiter (its look-ahead delay is compensated, so the bed stays in
sync with the stems), the stems get the programme gain only, so music +
effects is exactly the M&E of the delivered mix before limiting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore.audio import AudioWriter, iter_aligned_blocks
from filmrestore.manifest import FileRecord, StageManifest
from filmrestore.tasks.common import log_stage, progress_reporter, run_stage, task_options
from filmrestore.tasks.loudness import LoudnessMeter, TruePeakLimiter, get_preset, iter_speech_activity, verdict
from filmrestore.tasks.normalize import BLOCK_FRAMES, render_input, stem_paths
from filmrestore.upmix.adm import AdmBedWriter
from filmrestore.upmix.foldown import fold_down, octave_band_levels_db
from filmrestore.upmix.layouts import BED_7_1_4
from filmrestore.upmix.render import BedRenderer

FOLDOWN_TOLERANCE_DB = 1.0  # per octave band, stereo fold-down vs the input mix (DESIGN.md)


class _DelayCompensated:
    """Drop a processor's first ``latency`` output frames and add its flushed tail, so output aligns with input."""

    def __init__(self, process: Callable[[np.ndarray], np.ndarray], flush: Callable[[], np.ndarray], latency: int):
        self._process, self._flush, self._to_drop = process, flush, latency

    def process(self, block: np.ndarray) -> np.ndarray:
        out = self._process(block)
        drop = min(self._to_drop, out.shape[1])
        self._to_drop -= drop
        return out[:, drop:]

    def flush(self) -> np.ndarray:
        return self._flush()[:, self._to_drop :]


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


class _Deliverables:
    """The writers of every file the render stage produces."""

    def __init__(self, title_dir: Path, title: str, n_channels: int, sample_rate_hz: int) -> None:
        sr = sample_rate_hz
        self.bed = AudioWriter(title_dir / "bed_7.1.4.wav", sr, 12, "PCM_24", BED_7_1_4.channel_mask)
        self.adm = AdmBedWriter(title_dir / "adm.wav", BED_7_1_4, sr, title)
        self.stems = {name: AudioWriter(title_dir / "stems" / f"{name}.wav", sr, n_channels, "PCM_24")
                      for name in ("dialogue", "music", "effects", "me")}
        self.foldowns = {name: AudioWriter(title_dir / "foldown" / f"{name}.wav", sr, n, "PCM_24")
                         for name, n in (("stereo", 2), ("5.1", 6))}

    def all(self) -> dict[str, Any]:
        return {"bed_7.1.4": self.bed, "adm": self.adm, **{f"stems/{k}": w for k, w in self.stems.items()},
                **{f"foldown/{k}": w for k, w in self.foldowns.items()}}

    def write_bed(self, bed: np.ndarray) -> None:
        raw = self.bed.encode(bed)  # the same PCM goes into the plain bed and the ADM file
        self.bed.write_encoded(raw)
        self.adm.writer.write_encoded(raw)
        self.foldowns["stereo"].write(fold_down(bed, "stereo"))
        self.foldowns["5.1"].write(fold_down(bed, "5.1"))

    def close(self) -> dict[str, FileRecord]:
        records = {}
        for name, writer in self.all().items():
            writer.close()
            inner = writer.writer if isinstance(writer, AdmBedWriter) else writer
            records[name] = FileRecord.from_writer(inner)
        return records

    def abort(self) -> None:
        for writer in self.all().values():
            (writer.writer if isinstance(writer, AdmBedWriter) else writer).abort()


def render_deliverables(
    stems: dict[str, Any], gain_db: float, ceiling_dbtp: float, title_dir: Path, title: str,
    n_channels: int, sample_rate_hz: int, on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, FileRecord], dict[str, Any]]:
    """Stream the stems once into every deliverable; returns their records and the after-measurements."""
    gain = 10.0 ** (gain_db / 20.0)
    paths = stem_paths(stems)
    total = StageManifest.from_dict(stems).file("dialogue").n_frames
    renderer = BedRenderer(sample_rate_hz, min(n_channels, 2))
    lim = TruePeakLimiter(sample_rate_hz, 12, ceiling_dbtp)
    limiter = _DelayCompensated(lim.process, lim.flush, lim.latency_frames)
    meter = LoudnessMeter(sample_rate_hz, 12)
    mix_bands, stereo_bands = _BandEnergy(sample_rate_hz), _BandEnergy(sample_rate_hz)
    out = _Deliverables(title_dir, title, n_channels, sample_rate_hz)
    try:
        done = 0
        for blocks in iter_aligned_blocks(paths, BLOCK_FRAMES):
            scaled = {name: (x * gain).astype(np.float32) for name, x in blocks.items()}
            for name, x in scaled.items():
                out.stems[name].write(x)
            out.stems["me"].write(scaled["music"] + scaled["effects"])
            mix_bands.add(sum(render_input(scaled).values()))
            bed = limiter.process(renderer.process(render_input(scaled)))
            out.write_bed(bed)
            meter.process(bed)
            stereo_bands.add(fold_down(bed, "stereo"))
            done += next(iter(blocks.values())).shape[1]
            if on_progress:
                on_progress(done, total)
        tail = limiter.flush()
        out.write_bed(tail)
        meter.process(tail)
        records = out.close()
    except BaseException:
        out.abort()
        raise
    for speech in iter_speech_activity(paths["dialogue"]):
        meter.process_speech(speech)
    return records, {"bed": meter.result(), "foldown_check": foldown_check(mix_bands, stereo_bands)}


def run_render(
    stems: dict[str, Any], loudness: dict[str, Any], title_dir: str | Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[StageManifest, bool]:
    """Render the deliverables of a title with the gain the normalize stage chose."""
    title_dir = Path(title_dir)
    norm = StageManifest.from_dict(loudness).report
    spec_d = norm["spec"]
    params = {"stems": stems, "gain_db": norm["gain_db"], "spec": spec_d}

    def compute() -> StageManifest:
        spec = get_preset(spec_d["name"], spec_d["target_lufs"], spec_d["ceiling_dbtp"], spec_d["gate"])
        dialogue = StageManifest.from_dict(stems).file("dialogue")
        records, after = render_deliverables(
            stems, norm["gain_db"], spec.ceiling_dbtp, title_dir, title_dir.name,
            dialogue.n_channels, dialogue.sample_rate_hz, on_progress,
        )
        result = verdict(after["bed"], spec)
        result["preset"] = spec.name
        result["summary"] = _summary(after["bed"].to_dict(), spec_d)
        report = {"after": {"bed_7.1.4": after["bed"].to_dict()}, "verdict": result,
                  "foldown_check": after["foldown_check"]}
        return StageManifest("render", records, {"gain_db": norm["gain_db"], "spec": spec_d}, report)

    return run_stage(title_dir, "render", params, compute)


def _summary(after: dict[str, Any], spec: dict[str, Any]) -> str:
    measured = after["dialogue_lufs"] if spec["gate"] == "dialogue" and after["dialogue_lufs"] is not None \
        else after["integrated_lufs"]
    return (f"{measured:.1f} LUFS ({spec['gate']}-gated) for target {spec['target_lufs']:.1f}, "
            f"true peak {after['true_peak_dbtp']:.1f} dBTP for ceiling {spec['ceiling_dbtp']:.1f}")


def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    norm = p["loudness"]["report"]
    return {"stems": p["stems"], "gain_db": norm["gain_db"], "spec": norm["spec"]}


@task(**task_options("render", _key_params))
def render_task(stems: dict[str, Any], loudness: dict[str, Any], title_dir: str) -> dict[str, Any]:
    """Prefect wrapper: render the bed, the ADM file, the stem deliverables and the fold-downs."""
    progress = progress_reporter(title_dir, "render")
    manifest, reused = run_render(stems, loudness, title_dir, progress)
    log_stage("render", manifest, reused)
    return manifest.to_dict()
