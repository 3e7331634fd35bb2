"""Speech activity for dialogue-gated loudness: silero-vad on the dialogue stem (or on the
programme), as a mask on the meter's 100 ms sub-block grid."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.signal

from filmrestore.audio import iter_blocks, read_info
from filmrestore.errors import ConfigError
from filmrestore.loudness.meter import SUB_BLOCK_S, to_db
from filmrestore.threads import one_torch_thread

# ----------------------------------------------------------------------------- speech activity

# silero-vad's own get_speech_timestamps defaults, applied to the vectorised model's output.
VAD_THRESHOLD = 0.5  # speech starts at p >= 0.5 ...
VAD_NEG_THRESHOLD = 0.35  # ... and ends after p < 0.35 for at least
VAD_MIN_SILENCE_S = 0.1
VAD_MIN_SPEECH_S = 0.25  # shorter segments are dropped
VAD_PAD_S = 0.03  # segments widened by 30 ms either side


@functools.lru_cache(maxsize=1)
def _vad_models() -> tuple[Any, Any]:
    """(SileroVAD, Decimate3) of separation/vad.py, loaded once from the silero-vad wheel.

    The vectorised model runs every 32 ms chunk's encoder at once and the LSTM in one call
    (about 12x faster than silero's per-chunk loop) and never imports ``silero_vad``, whose
    import sets torch to one thread for the whole process.
    """
    from filmrestore.separation.vad import Decimate3, SileroVAD

    return SileroVAD().eval(), Decimate3().eval()


def vad_probabilities(mono: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, float]:
    """silero-vad speech probability of each 32 ms chunk of a mono signal [shape=(T,)].

    Returns (probabilities [shape=(ceil(T_16k / 512),)], chunk duration in s).
    """
    import torch

    from filmrestore.separation.vad import VAD_CHUNK_FRAMES, VAD_RATE_HZ

    vad, decimate = _vad_models()
    with torch.inference_mode(), one_torch_thread():
        if sample_rate_hz == 3 * VAD_RATE_HZ:
            mono16k = decimate(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None])
        else:
            g = math.gcd(VAD_RATE_HZ, sample_rate_hz)
            resampled = scipy.signal.resample_poly(mono, VAD_RATE_HZ // g, sample_rate_hz // g)
            mono16k = torch.from_numpy(resampled.astype(np.float32))[None]
        if mono16k.shape[1] == 0:
            return np.zeros(0), VAD_CHUNK_FRAMES / VAD_RATE_HZ
        probs = vad(mono16k)[0].numpy().astype(np.float64)
    return probs, VAD_CHUNK_FRAMES / VAD_RATE_HZ


def vad_segments(probs: np.ndarray, chunk_s: float) -> list[tuple[float, float]]:
    """Speech segments (start_s, end_s) from chunk probabilities, with silero's hysteresis rules."""
    segments: list[tuple[float, float]] = []
    start: int | None = None
    quiet_since: int | None = None
    min_quiet = max(1, int(math.ceil(VAD_MIN_SILENCE_S / chunk_s)))

    def close(end: int) -> None:
        if start is not None and (end - start) * chunk_s >= VAD_MIN_SPEECH_S:
            segments.append((max(0.0, start * chunk_s - VAD_PAD_S), end * chunk_s + VAD_PAD_S))

    for i, p in enumerate(probs):
        if p >= VAD_THRESHOLD:
            quiet_since = None
            start = i if start is None else start
        elif start is not None and p < VAD_NEG_THRESHOLD:
            quiet_since = i if quiet_since is None else quiet_since
            if i + 1 - quiet_since >= min_quiet:
                close(quiet_since)
                start = quiet_since = None
    close(len(probs))
    return segments


def _sub_block_levels_dbfs(dialogue: np.ndarray, sub_block_frames: int) -> np.ndarray:
    """Mean-square level of each complete sub-block, averaged over channels, in dBFS."""
    n_sub = dialogue.shape[1] // sub_block_frames
    frames = dialogue[:, :n_sub * sub_block_frames].astype(np.float64)
    power = (frames ** 2).reshape(dialogue.shape[0], n_sub, sub_block_frames).mean(axis=(0, 2))
    return to_db(power)


def _vad_sub_blocks(audio: np.ndarray, sample_rate_hz: int, sub_block_frames: int) -> np.ndarray:
    """Sub-blocks that overlap a silero-vad speech segment (mono downmix). [shape=(T // sub,)] bool"""
    probs, chunk_s = vad_probabilities(audio.astype(np.float64).mean(axis=0), sample_rate_hz)
    n_sub = audio.shape[1] // sub_block_frames
    return mask_from_segments(vad_segments(probs, chunk_s), n_sub)


def speech_segments(mask: np.ndarray) -> list[list[float]]:
    """Compact JSON form of a per-100 ms speech mask: ``[[start_s, end_s], ...]`` of its runs.

    :func:`mask_from_segments` turns it back into the same mask, so a stage can keep the
    speech activity in its manifest and another reuse it without running the VAD again.
    """
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [[round(float(a) * SUB_BLOCK_S, 1), round(float(b) * SUB_BLOCK_S, 1)]
            for a, b in zip(edges[::2], edges[1::2])]


def mask_from_segments(segments: list[list[float]] | list[tuple[float, float]], n_sub_blocks: int
                       ) -> np.ndarray:
    """Per-100 ms mask [shape=(n_sub_blocks,)] bool: sub-blocks that overlap a (start_s, end_s) segment."""
    mask = np.zeros(n_sub_blocks, dtype=bool)
    for start_s, end_s in segments:
        first = max(0, int(math.floor(start_s / SUB_BLOCK_S + 1e-9)))
        last = min(n_sub_blocks, int(math.ceil(end_s / SUB_BLOCK_S - 1e-9)))
        mask[first:last] = True
    return mask


SpeechSource = Literal["stem", "programme"]


def speech_activity(dialogue: np.ndarray, sample_rate_hz: int, *, source: SpeechSource = "stem",
                    clear_margin_db: float = 20.0, vad_margin_db: float = 10.0,
                    floor_cap_dbfs: float = -50.0, min_level_dbfs: float = -70.0) -> np.ndarray:
    """Per-100 ms speech mask of a dialogue stem block. [shape=(T // sub_block_frames,)] bool

    ``dialogue`` [shape=(C, T)]. With ``source="programme"`` (a full mix, no stem) the mask is
    silero-vad's speech segments alone, above ``min_level_dbfs``: level says nothing about
    speech in a mix. With ``source="stem"`` the rule, per sub-block of level L (dBFS, mean
    over channels), is:

    - floor F = min(10th percentile of the non-silent sub-block levels, ``floor_cap_dbfs``):
      the stem's residual between lines, capped so that a stem without pauses still has one;
    - *clear*: L >= F + ``clear_margin_db`` -> speech. The stem is already the separator's
      speech estimate, so content far above its own floor is dialogue even when the VAD
      (trained on clean natural speech) misses it: band-limited optical dialogue under noise,
      or a synthetic speech-like test signal;
    - *uncertain*: F + ``vad_margin_db`` <= L < F + clear margin -> speech only where silero-vad
      hears speech: this is where music/effects leakage lives, and the VAD arbitrates it;
    - never below ``min_level_dbfs`` (the BS.1770 absolute gate would drop it anyway).
    """
    sub_block_frames = int(round(SUB_BLOCK_S * sample_rate_hz))
    levels = _sub_block_levels_dbfs(dialogue, sub_block_frames)
    audible = levels > min_level_dbfs
    if not audible.any():
        return np.zeros(len(levels), dtype=bool)
    if source == "programme":
        return _vad_sub_blocks(dialogue, sample_rate_hz, sub_block_frames) & audible
    if source != "stem":
        raise ConfigError(f"speech source must be 'stem' or 'programme', got {source!r}")
    floor_db = min(float(np.percentile(levels[np.isfinite(levels)], 10)), floor_cap_dbfs)
    clear = levels >= floor_db + clear_margin_db
    uncertain = (levels >= floor_db + vad_margin_db) & ~clear
    if uncertain.any():
        uncertain &= _vad_sub_blocks(dialogue, sample_rate_hz, sub_block_frames)
    return (clear | uncertain) & audible


def iter_speech_activity(path: str | Path, block_s: float = 60.0, source: SpeechSource = "stem"
                         ) -> Iterator[np.ndarray]:
    """Speech masks of a dialogue stem file (or a programme, see :func:`speech_activity`),
    block by block on the 100 ms grid."""
    info = read_info(path)
    sub_block_frames = int(round(SUB_BLOCK_S * info.sample_rate_hz))
    block_frames = max(1, int(block_s / SUB_BLOCK_S)) * sub_block_frames
    for block in iter_blocks(path, block_frames):
        yield speech_activity(block, info.sample_rate_hz, source=source)


