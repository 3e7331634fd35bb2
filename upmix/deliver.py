"""Every deliverable of a title in one streaming pass: the 7.1.4 bed, the ADM BWF, the stem
deliverables (dialogue, music, effects, M&E) and the stereo and 5.1 fold-downs.

The true-peak limiter's gain is computed on the 7.1.4 mix and applied, aligned, to the mix
and to every ADM track alike (it is linked across channels), so the ADM renderer's render of
``adm.wav`` is the limited bed. The stems get the programme gain only, so music + effects is
exactly the M&E of the delivered mix before limiting. The bed is measured (BS.1770, dialogue
gated with the given speech mask) and its stereo fold-down checked against the input mix
per octave band as it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any

import numpy as np

from filmrestore import STEMS
from filmrestore.audio import AudioWriter, iter_aligned_blocks, read_channel_mask, read_info, read_layout
from filmrestore.loudness.limiter import TruePeakLimiter
from filmrestore.loudness.meter import LoudnessMeter
from filmrestore.loudness.speech import iter_speech_activity
from filmrestore.manifest import FileRecord
from filmrestore.upmix.adm.bw64 import AdmSceneWriter
from filmrestore.upmix.adm.scene import AdmScene
from filmrestore.upmix.foldown import downmix_to_stereo, fold_down, octave_band_levels_db
from filmrestore.layouts import BED_7_1_4
from filmrestore.upmix.plan import Plan
from filmrestore.upmix.render import SceneRenderer, SourceRouting

BLOCK_FRAMES = 480_000  # 10 s at 48 kHz: large enough for numpy, small enough for flat memory
FOLDOWN_TOLERANCE_DB = 1.0  # per octave band, stereo fold-down vs the input mix (DESIGN.md)


class _BandEnergy:
    """Accumulate octave-band energy of a stream (summed over channels) for the fold-down check."""

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.power = 0.0

    def add(self, x: np.ndarray) -> None:
        if x.shape[1] >= 8192:
            # Both streams are measured alike, so the cheap estimate (no overlap) compares them as well.
            levels = octave_band_levels_db(x, self.sample_rate_hz, overlap=0.0)
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


# ----------------------------------------------------------------------------- deliverables

class _Deliverables:
    """The writers of every file the render stage produces.

    :meth:`write` hands a block to one background thread that encodes (24-bit packing,
    compiled, GIL released), hashes and writes every file, while the caller renders the next
    block: on two cores the two halves of the work overlap. At most one block waits, so memory
    stays one block deep.
    """

    def __init__(self, title_dir: Path, title: str, n_channels: int, sample_rate_hz: int, scene: AdmScene,
                 stem_mask: int | None = None) -> None:
        sr = sample_rate_hz
        self.bed = AudioWriter(title_dir / "bed_7.1.4.wav", sr, 12, "PCM_24", BED_7_1_4.channel_mask)
        self.adm = AdmSceneWriter(title_dir / "adm.wav", scene, title)
        self.stems = {name: AudioWriter(title_dir / "stems" / f"{name}.wav", sr, n_channels, "PCM_24", stem_mask)
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

    def close(self) -> tuple[dict[str, FileRecord], list[tuple[str, str]]]:
        """Finish every file and leave it complete under its temporary name; returns the records
        (final names) and the renames that publish them as one set (``StageManifest.pending``,
        done by :func:`filmrestore.resume.run_stage`)."""
        self._wait()
        self._pool.shutdown()
        self.adm.close(publish=False)
        for name, writer in self.writers().items():
            if name != "adm":
                writer.close(publish=False)
        writers = self.writers()
        records = {name: FileRecord.from_writer(writer) for name, writer in writers.items()}
        return records, [(str(w.partial), str(w.path)) for w in writers.values()]

    def abort(self) -> None:
        """Drop every partial file (after the queued block, whose own error the caller's supersedes)."""
        if self._pending is not None:
            futures_wait([self._pending])
        self._pool.shutdown()
        for writer in self.writers().values():
            writer.abort()


def render_deliverables(
    stems: dict[str, str], gain_db: float, ceiling_dbtp: float, title_dir: Path, title: str, plan: Plan,
    scene: AdmScene, speech: np.ndarray | None = None, on_progress: Callable[[int, int], None] | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> tuple[dict[str, FileRecord], dict[str, Any]]:
    """Stream the stem files (``{stem: path}``, of one rate, channel count and length) once into
    every deliverable under ``title_dir``; returns their records and the after-measurements, with
    ``"renames"``: the files are complete under temporary names, and these ``(temporary, final)``
    renames publish them as one set (the caller's, see ``StageManifest.pending``)."""
    gain = np.float32(10.0 ** (gain_db / 20.0))
    paths = {name: stems[name] for name in STEMS}
    dialogue = read_info(paths["dialogue"])
    source = read_layout(paths["dialogue"]) if dialogue.n_channels > 2 else None  # kept in place
    renderer = SceneRenderer(dialogue.sample_rate_hz, dialogue.n_channels, plan, source=source)
    limiter = TruePeakLimiter(dialogue.sample_rate_hz, 12, ceiling_dbtp, n_linked=scene.n_tracks)
    meter = LoudnessMeter(dialogue.sample_rate_hz, 12)
    mix_bands, stereo_bands = _BandEnergy(dialogue.sample_rate_hz), _BandEnergy(dialogue.sample_rate_hz)
    out = _Deliverables(title_dir, title, dialogue.n_channels, dialogue.sample_rate_hz, scene,
                        read_channel_mask(paths["dialogue"]))
    rows = list(scene.track_rows)
    try:
        done = 0
        for blocks in iter_aligned_blocks(paths, block_frames):
            scaled = {name: x * gain for name, x in blocks.items()}
            scaled["me"] = scaled["music"] + scaled["effects"]
            stems_in = {name: scaled[name] for name in STEMS}
            total = sum(stems_in.values())
            mix_bands.add(total if source is None else downmix_to_stereo(total, source))  # the source's fold-down
            rendered = renderer.process(stems_in)
            mix, tracks = limiter.process_linked(rendered.mix, rendered.track_rows(rows))
            _deliver(out, meter, stereo_bands, scaled, mix, tracks)
            done += next(iter(blocks.values())).shape[1]
            if on_progress:
                on_progress(done, dialogue.n_frames)
        _deliver(out, meter, stereo_bands, {}, *limiter.flush_linked())
        records, renames = out.close()
    except BaseException:
        out.abort()
        raise
    masks = [speech] if speech is not None else iter_speech_activity(paths["dialogue"])
    for mask in masks:
        meter.process_speech(mask)
    return records, {"bed": meter.result(), "foldown_check": foldown_check(mix_bands, stereo_bands),
                     "renames": renames, "bed_channels": bed_channel_map(renderer.routing)}


def bed_channel_map(routing: SourceRouting | None) -> list[dict[str, str]]:
    """What each channel of the 7.1.4 bed plays: for a multichannel source, which source channel is
    kept there and what is synthesised (:meth:`SourceRouting.channel_map`); empty for mono/stereo."""
    return routing.channel_map() if routing is not None else []


def _deliver(out: _Deliverables, meter: LoudnessMeter, stereo_bands: _BandEnergy, stems: dict[str, np.ndarray],
             mix: np.ndarray, tracks: np.ndarray) -> None:
    """Queue a block of every deliverable, and measure the bed and its stereo fold-down meanwhile."""
    stereo = fold_down(mix, "stereo")
    out.write(stems, mix, tracks, stereo)
    meter.process(mix)
    stereo_bands.add(stereo)
