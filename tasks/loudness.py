"""Loudness measurement (ITU-R BS.1770-4, EBU Tech 3341/3342) and normalisation.

Pure library code (no Prefect): a streaming meter for any channel count, a
speech-activity mask for dialogue-gated loudness, delivery presets, the
programme gain, a streaming look-ahead true-peak limiter and a pass/fail verdict.

Arrays are float ``(n_channels, n_frames)``. The meter keeps one float64 per
10 ms (5.8 MB for a two-hour film) plus filter state, so memory does not depend
on the block size and is tiny compared with the audio. Its per-sample work (K
filter, squares, true peak) runs in numba kernels, two channel groups on two
threads; ``true_peak=False`` skips the true peak for callers that only need loudness.

Streaming dialogue gating: feed the programme with :meth:`LoudnessMeter.process`
and, independently, the speech mask with :meth:`LoudnessMeter.process_speech`.
Both streams are aligned on the meter's 100 ms sub-block grid, counted from the
programme's first frame; :func:`speech_activity` returns exactly such a mask for
a block of the dialogue stem whose start lies on that grid.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import scipy.signal
from pyloudnorm.iirfilter import IIRfilter

from filmrestore.audio import iter_blocks, read_channel_mask, read_info
from filmrestore.threads import one_torch_thread
from filmrestore.errors import AudioFormatError, ConfigError, SilentProgrammeError

SUB_BLOCK_S = 0.1  # 100 ms: the step of the gating blocks and of LRA's short-term values (Tech 3341 §2.3)
FINE_BLOCKS_PER_SUB_BLOCK = 10  # the meter keeps 10 ms powers: M and S maxima slide in 10 ms steps
MOMENTARY_SUB_BLOCKS = 4  # 400 ms gating block, 75 % overlap (BS.1770-4 §2.8 eq. 3)
SHORT_TERM_SUB_BLOCKS = 30  # 3 s window (EBU Tech 3341 §2.2)
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 §2.8, Γa
RELATIVE_GATE_LU = -10.0  # BS.1770-4 §2.8, eq. 6
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342 §3
LRA_LOW_PERCENTILE = 10.0  # EBU Tech 3342 §3
LRA_HIGH_PERCENTILE = 95.0
LOUDNESS_OFFSET_DB = -0.691  # BS.1770-4 eq. 2
SURROUND_WEIGHT = 1.41  # BS.1770-4 Table 3: +1.5 dB for |azimuth| in 60..120 deg, elevation < 30 deg

# BS.1770-4 Annex 2: 48-tap interpolating FIR, 4 phases x 12 taps; row k = tap k, column = phase.
# The prototype is symmetric, so rows 6..11 are rows 5..0 reversed across phases.
_TRUE_PEAK_ROWS_0_5 = np.array([
    [0.0017089843750, -0.0291748046875, -0.0189208984375, -0.0083007812500],
    [0.0109863281250, 0.0292968750000, 0.0330810546875, 0.0148925781250],
    [-0.0196533203125, -0.0517578125000, -0.0582275390625, -0.0266113281250],
    [0.0332031250000, 0.0891113281250, 0.1015625000000, 0.0476074218750],
    [-0.0594482421875, -0.1665039062500, -0.2003173828125, -0.1022949218750],
    [0.1373291015625, 0.4650878906250, 0.7797851562500, 0.9721679687500],
])
_TRUE_PEAK_TAPS = np.concatenate([_TRUE_PEAK_ROWS_0_5, _TRUE_PEAK_ROWS_0_5[::-1, ::-1]])
OVERSAMPLING = 4
# Interleaved prototype h[4k + p] = tap k of phase p, as scipy.signal.upfirdn expects.
_TRUE_PEAK_FIR = _TRUE_PEAK_TAPS.reshape(-1).astype(np.float32)
_FIR_HISTORY_FRAMES = _TRUE_PEAK_TAPS.shape[0] - 1
_TRUE_PEAK_GAIN_BOUND = float(np.abs(_TRUE_PEAK_TAPS).sum(axis=0).max()) * 1.001  # rounding slack
# Phase p of input frame n estimates the signal at n - 5.875 + p / 4 (group delay 23.5 / 4).
TRUE_PEAK_DELAY_FRAMES = 6

LAYOUT_CHANNELS: dict[str, tuple[str, ...]] = {
    "mono": ("M",),
    "stereo": ("FL", "FR"),
    "3.0": ("FL", "FR", "FC"),
    "4.0": ("FL", "FR", "BL", "BR"),
    "5.0": ("FL", "FR", "FC", "BL", "BR"),
    "5.1": ("FL", "FR", "FC", "LFE", "BL", "BR"),
    "7.0": ("FL", "FR", "FC", "BL", "BR", "SL", "SR"),
    "7.1": ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
    "5.1.4": ("FL", "FR", "FC", "LFE", "BL", "BR", "TFL", "TFR", "TBL", "TBR"),
    "7.1.2": ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR", "TFL", "TFR"),
    "7.1.4": ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR", "TFL", "TFR", "TBL", "TBR"),
}
# 5 channels are L R C Ls Rs (the order of the ITU/EBU multichannel test material).
DEFAULT_LAYOUT_BY_COUNT = {1: "mono", 2: "stereo", 3: "3.0", 5: "5.0", 6: "5.1", 7: "7.0", 8: "7.1",
                           12: "7.1.4"}
# WAVE_FORMAT_EXTENSIBLE speaker bits, in the order channels appear in the file.
SPEAKER_BITS = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR",
                "TC", "TFL", "TFC", "TFR", "TBL", "TBC", "TBR")


def _azimuth_deg(name: str, names: tuple[str, ...]) -> float:
    """Azimuth of a loudspeaker for the BS.1770-4 weights (only |azimuth| 60-120 deg matters).

    BL/BR are the surrounds at +-110 deg (BS.775) when the layout has no side pair, else the
    rears at +-135 deg (BS.2051 4+7+0, where SL/SR are the sides at +-90 deg).
    """
    if name in ("SL", "SR"):
        return 90.0
    if name in ("BL", "BR"):
        return 135.0 if "SL" in names else 110.0
    return 180.0 if name == "BC" else 0.0


# ----------------------------------------------------------------------------- channel weights

def _weight_for(azimuth_deg: float, elevation_deg: float) -> float:
    """BS.1770-4 Table 3 / §2.4: 1.41 for 60 <= |azimuth| <= 120 deg below 30 deg elevation."""
    if elevation_deg < 30.0 and 60.0 <= abs(azimuth_deg) <= 120.0:
        return SURROUND_WEIGHT
    return 1.0


def _weights(names: tuple[str, ...]) -> np.ndarray:
    """LFE 0 (excluded, BS.1770-4 §2.4), heights (T...) 1.0, the rest by azimuth."""
    return np.asarray([0.0 if name == "LFE" else 1.0 if name.startswith("T")
                       else _weight_for(_azimuth_deg(name, names), 0.0) for name in names], dtype=np.float64)


def layout_from_mask(mask: int) -> tuple[str, ...]:
    """Channel names, in file order, of a WAVE_FORMAT_EXTENSIBLE speaker mask."""
    return tuple(name for bit, name in enumerate(SPEAKER_BITS) if mask >> bit & 1)


def channel_weights_for(n_channels: int, layout: str | None = None, channel_mask: int | None = None
                        ) -> np.ndarray:
    """BS.1770-4 channel weights G_i for a WAV-ordered layout. [shape=(n_channels,)]

    ``layout`` is one of :data:`LAYOUT_CHANNELS`; without it, the file's speaker mask
    (``channel_mask``, when it names ``n_channels`` speakers) decides, else the channel count
    (1, 2, 3, 5, 6, 7, 8, 12; 5 is L R C Ls Rs). LFE gets weight 0 (excluded, BS.1770-4
    §2.4); heights 1.0; a loudspeaker at 60-120 deg azimuth 1.41.
    """
    if layout is None and channel_mask:
        names = layout_from_mask(channel_mask)
        if len(names) == n_channels:
            return _weights(names)
    if layout is None:
        layout = DEFAULT_LAYOUT_BY_COUNT.get(n_channels)
        if layout is None:
            raise ConfigError(f"no default loudness layout for {n_channels} channels; "
                              f"name one of {sorted(LAYOUT_CHANNELS)} or pass channel_weights")
    if layout not in LAYOUT_CHANNELS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUT_CHANNELS)}")
    names = LAYOUT_CHANNELS[layout]
    if len(names) != n_channels:
        raise ConfigError(f"layout {layout!r} has {len(names)} channels, not {n_channels}")
    return _weights(names)


# ----------------------------------------------------------------------------- filters

def k_weighting_sos(sample_rate_hz: float) -> np.ndarray:
    """The two K-weighting biquads of BS.1770-4 §2.1 (pre-filter shelf, RLB high-pass). [shape=(2, 6)]

    pyloudnorm's "DeMan" design (as in libebur128) reproduces the Recommendation's Tables 1
    and 2 exactly at 48 kHz and re-derives them at other rates; pyloudnorm's default
    "K-weighting" cookbook shelf reads a 1 kHz tone 0.035 dB low.
    """
    stages = (IIRfilter(3.99984385397, 0.7071752369554193, 1681.9744509555319, sample_rate_hz,
                        "high_shelf_DeMan"),
              IIRfilter(0.0, 0.5003270373253953, 38.13547087613982, sample_rate_hz, "high_pass_DeMan"))
    return np.array([np.concatenate([s.b, s.a]) for s in stages])


# ----------------------------------------------------------------------------- compiled kernels
#
# The meter and the limiter spend their time in per-sample work: two biquads, a square and a
# sum per sample, and the 48-tap interpolation wherever a true peak may hide. numpy needs
# several passes over a block for that (each a memory round trip); these numba kernels make
# one pass per channel, keep the filter state in float64 whatever the input's dtype, and
# release the GIL so that channel groups run on both cores.

_TAPS_F64 = np.ascontiguousarray(_TRUE_PEAK_TAPS, dtype=np.float64)  # [k, phase]: y_p[n] = sum_k h[k,p] x[n-k]


@numba.njit(cache=True, nogil=True, fastmath=False)
def _hot_frames_from_history(history: np.ndarray, c: int, floor: float, bound: float) -> int:
    """How many first frames of the next block see a history sample that may reach ``floor``."""
    hot = 0
    for j in range(history.shape[1]):  # history[c, j] is the sample at time j - 11
        if abs(history[c, j]) * bound > floor:
            hot = j + 1
    return hot


@numba.njit(cache=True, nogil=True)
def _interpolated_peak(x: np.ndarray, history: np.ndarray, c: int, n: int, taps: np.ndarray) -> float:
    """max over the 4 phases of |BS.1770-4 Annex 2 interpolation| at frame ``n`` of channel ``c``."""
    n_taps, n_phases = taps.shape
    best = 0.0
    if n >= n_taps - 1:  # all 12 inputs in this block: no branch in the inner loop
        for p in range(n_phases):
            s = 0.0
            for k in range(n_taps):
                s += taps[k, p] * x[c, n - k]
            best = max(best, abs(s))
        return best
    n_hist = history.shape[1]
    for p in range(n_phases):
        s = 0.0
        for k in range(n_taps):
            j = n - k
            s += taps[k, p] * (x[c, j] if j >= 0 else history[c, n_hist + j])
        best = max(best, abs(s))
    return best


@numba.njit(cache=True, nogil=True)
def _push_history(x: np.ndarray, history: np.ndarray, c: int) -> None:
    """history[c] <- the last 11 samples of (history[c], x[c])."""
    n_hist, n = history.shape[1], x.shape[1]
    if n >= n_hist:
        for j in range(n_hist):
            history[c, j] = x[c, n - n_hist + j]
    else:
        for j in range(n_hist - n):
            history[c, j] = history[c, j + n]
        for j in range(n):
            history[c, n_hist - n + j] = x[c, j]


_GROUP = 4  # channels filtered together: four independent recursions keep the pipeline busy


@numba.njit(cache=True, nogil=True)
def _k_weighted_squares(x: np.ndarray, c0: int, c1: int, sos: np.ndarray, zi: np.ndarray, sub_frames: int,
                        n_partial: int, partial: np.ndarray, out_ms: np.ndarray) -> None:
    """K-weight channels c0..c1-1, square and sum into 100 ms sub-blocks, four channels at a time.

    ``zi`` [shape=(C, 2, 2)] biquad states (transposed direct form II, float64), ``partial``
    [shape=(C,)] the running sums of the unfinished sub-block (``n_partial`` frames in it),
    ``out_ms`` [shape=(C, K)] receives the mean squares of the K sub-blocks this block completes.
    A group short of four channels repeats its last one (computed, not stored).
    """
    b10, b11, b12, a11, a12 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
    b20, b21, b22, a21, a22 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
    n_frames = x.shape[1]
    s10, s11 = np.empty(_GROUP), np.empty(_GROUP)
    s20, s21 = np.empty(_GROUP), np.empty(_GROUP)
    acc, rows = np.empty(_GROUP), np.empty(_GROUP, np.int64)
    for c in range(c0, c1, _GROUP):
        for g in range(_GROUP):
            rows[g] = min(c + g, c1 - 1)
            s10[g], s11[g] = zi[rows[g], 0, 0], zi[rows[g], 0, 1]
            s20[g], s21[g] = zi[rows[g], 1, 0], zi[rows[g], 1, 1]
            acc[g] = partial[rows[g]]
        count, k = n_partial, 0
        for n in range(n_frames):
            for g in range(_GROUP):
                v = float(x[rows[g], n])
                y = b10 * v + s10[g]
                s10[g] = b11 * v - a11 * y + s11[g]
                s11[g] = b12 * v - a12 * y
                w = b20 * y + s20[g]
                s20[g] = b21 * y - a21 * w + s21[g]
                s21[g] = b22 * y - a22 * w
                acc[g] += w * w
            count += 1
            if count == sub_frames:
                for g in range(_GROUP):
                    out_ms[rows[g], k] = acc[g] / sub_frames
                    acc[g] = 0.0
                k += 1
                count = 0
        for g in range(min(_GROUP, c1 - c)):
            zi[c + g, 0, 0], zi[c + g, 0, 1] = s10[g], s11[g]
            zi[c + g, 1, 0], zi[c + g, 1, 1] = s20[g], s21[g]
            partial[c + g] = acc[g]


@numba.njit(cache=True, nogil=True)
def _channel_true_peaks(x: np.ndarray, c0: int, c1: int, taps: np.ndarray, bound: float,
                        history: np.ndarray, peak: np.ndarray) -> None:
    """Running per-channel true peak ``peak`` (never below the sample peak), channels c0..c1-1.

    Frame n's 4 interpolated values are computed only when one of x[n-11..n] exceeds
    ``peak / bound`` (each phase gains at most ``bound``, so otherwise they cannot exceed it).
    """
    for c in range(c0, c1):
        pk = peak[c]
        hot = _hot_frames_from_history(history, c, pk, bound)
        level = pk / bound
        for n in range(x.shape[1]):
            a = abs(float(x[c, n]))
            if a > level:  # rare once the peak is known
                if a > pk:
                    pk = a
                    level = pk / bound
                hot = 12  # frames n .. n+11 interpolate with x[n]
            if hot > 0:
                hot -= 1
                ip = _interpolated_peak(x, history, c, n, taps)
                if ip > pk:
                    pk = ip
                    level = pk / bound
        peak[c] = pk
        _push_history(x, history, c)


@numba.njit(cache=True, nogil=True)
def _meter_kernel(x: np.ndarray, c0: int, c1: int, sos: np.ndarray, zi: np.ndarray, sub_frames: int,
                  n_partial: int, partial: np.ndarray, out_ms: np.ndarray, true_peak: bool,
                  taps: np.ndarray, bound: float, history: np.ndarray, peak: np.ndarray) -> None:
    """One block of the meter for channels c0..c1-1: sub-block powers, and the true peak."""
    _k_weighted_squares(x, c0, c1, sos, zi, sub_frames, n_partial, partial, out_ms)
    if true_peak:
        _channel_true_peaks(x, c0, c1, taps, bound, history, peak)


@numba.njit(cache=True, nogil=True)
def _frame_peak_kernel(x: np.ndarray, c0: int, c1: int, taps: np.ndarray, bound: float,
                       floor: np.ndarray, history: np.ndarray, out: np.ndarray) -> None:
    """out[row, n] = max(out[row, n], interpolated peak of frame n) where it may exceed floor[c].

    ``out`` has one row per channel, or one row for all (the max over channels).
    """
    per_channel = out.shape[0] > 1
    for c in range(c0, c1):
        row = c if per_channel else 0
        fl = floor[c]
        hot = _hot_frames_from_history(history, c, fl, bound)
        for n in range(x.shape[1]):
            if abs(x[c, n]) * bound > fl:
                hot = 12
            if hot > 0:
                hot -= 1
                ip = _interpolated_peak(x, history, c, n, taps)
                if ip > out[row, n]:
                    out[row, n] = ip
        _push_history(x, history, c)


_POOL: ThreadPoolExecutor | None = None
_MIN_PARALLEL_SAMPLES = 200_000  # below this a thread hand-off costs more than it saves


def _run_over_channels(kernel: Callable[..., None], x: np.ndarray, *args: Any) -> None:
    """Run ``kernel(x, c0, c1, *args)`` over all channels, in two threads when worthwhile."""
    global _POOL
    n_channels = x.shape[0]
    if n_channels < 2 or x.size < _MIN_PARALLEL_SAMPLES or (os.cpu_count() or 1) < 2:
        kernel(x, 0, n_channels, *args)
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loudness")
    half = n_channels // 2
    future = _POOL.submit(kernel, x, half, n_channels, *args)
    kernel(x, 0, half, *args)
    future.result()


def _as_kernel_input(block: np.ndarray) -> np.ndarray:
    """C-contiguous float32 or float64 (no copy when it already is one)."""
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(block, dtype=dtype)


class TruePeakOversampler:
    """Streaming 4x interpolation with the BS.1770-4 Annex 2 FIR; state carried across blocks.

    :meth:`process` gives every interpolated value (scipy ``upfirdn``, float32), for
    references and the end-of-stream tail. :meth:`frame_peaks` and :meth:`channel_peaks`
    compute (in float64, compiled) only the frames whose 12 inputs can reach a floor.
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self._history = np.zeros((n_channels, _FIR_HISTORY_FRAMES), dtype=np.float64)

    def process(self, block: np.ndarray) -> np.ndarray:
        """[shape=(C, T)] -> oversampled [shape=(C, T, 4)]; phase p of frame n uses x[n-11..n]."""
        n_frames = block.shape[1]
        extended = np.concatenate([self._history.astype(np.float32), block.astype(np.float32)], axis=1)
        self._history = extended[:, extended.shape[1] - _FIR_HISTORY_FRAMES:].astype(np.float64)
        upsampled = scipy.signal.upfirdn(_TRUE_PEAK_FIR, extended, up=OVERSAMPLING, axis=-1)
        start = _FIR_HISTORY_FRAMES * OVERSAMPLING  # first output whose 12 taps all see input
        steady = upsampled[:, start:start + OVERSAMPLING * n_frames]
        return steady.reshape(self.n_channels, n_frames, OVERSAMPLING)

    def frame_peaks(self, block: np.ndarray, floor: np.ndarray | float, per_channel: bool = True
                    ) -> np.ndarray:
        """Per-frame max |oversampled| over the 4 phases. [shape=(C, T)], or (1, T) max over channels.

        Exact wherever it can exceed ``floor`` (per channel or scalar); elsewhere 0.
        """
        x = _as_kernel_input(block)
        out = np.zeros((self.n_channels if per_channel else 1, x.shape[1]))
        floors = np.broadcast_to(np.asarray(floor, dtype=np.float64), (self.n_channels,)).copy()
        _run_over_channels(_frame_peak_kernel, x, _TAPS_F64, _TRUE_PEAK_GAIN_BOUND, floors,
                           self._history, out)
        return out

    def channel_peaks(self, block: np.ndarray, floor: np.ndarray | float) -> np.ndarray:
        """Per-channel max |oversampled| of the block, exact where above ``floor``, else 0. [shape=(C,)]"""
        return self.frame_peaks(block, floor).max(axis=1, initial=0.0)

    def tail_peak(self) -> np.ndarray:
        """Per-channel peak of the interpolation past the last frame (as if zeros followed)."""
        probe = TruePeakOversampler(self.n_channels)
        probe._history = self._history.copy()
        tail = probe.process(np.zeros((self.n_channels, _FIR_HISTORY_FRAMES), dtype=np.float32))
        return np.abs(tail).max(axis=(1, 2)).astype(np.float64)


# ----------------------------------------------------------------------------- report

def _to_db(power: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


def _loudness(mean_square: np.ndarray | float) -> np.ndarray | float:
    """BS.1770-4 eq. 2/4: L = -0.691 + 10 log10(sum_i G_i z_i)."""
    return LOUDNESS_OFFSET_DB + _to_db(mean_square)


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 3)


@dataclass
class LoudnessReport:
    """What the meter found. Loudness in LUFS, range in LU, peaks in dBTP; -inf for silence."""

    integrated_lufs: float
    momentary_max_lufs: float
    short_term_max_lufs: float
    lra_lu: float
    true_peak_dbtp: float
    true_peak_per_channel_dbtp: list[float]
    channels: int
    duration_s: float
    dialogue_lufs: float | None = None
    short_term_series_s: list[float] = field(default_factory=list, repr=False)
    short_term_series_lufs: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no series); -inf becomes None."""
        return {
            "integrated_lufs": _finite_or_none(self.integrated_lufs),
            "momentary_max_lufs": _finite_or_none(self.momentary_max_lufs),
            "short_term_max_lufs": _finite_or_none(self.short_term_max_lufs),
            "lra_lu": _finite_or_none(self.lra_lu),
            "true_peak_dbtp": _finite_or_none(self.true_peak_dbtp),
            "true_peak_per_channel_dbtp": [_finite_or_none(v) for v in self.true_peak_per_channel_dbtp],
            "dialogue_lufs": _finite_or_none(self.dialogue_lufs),
            "channels": int(self.channels),
            "duration_s": round(float(self.duration_s), 6),
        }

    def series_to_dict(self) -> dict[str, list[float | None]]:
        """Short-term loudness at 1 s steps, for plots (time = end of each 3 s window)."""
        return {"time_s": [round(t, 3) for t in self.short_term_series_s],
                "short_term_lufs": [_finite_or_none(v) for v in self.short_term_series_lufs]}


# ----------------------------------------------------------------------------- gating maths

def _window_means(sub_ms: np.ndarray, n_sub_blocks: int) -> np.ndarray:
    """Mean of every run of ``n_sub_blocks`` consecutive sub-block powers (hop 100 ms)."""
    if len(sub_ms) < n_sub_blocks:
        return np.zeros(0)
    csum = np.concatenate([[0.0], np.cumsum(sub_ms)])
    return np.maximum(csum[n_sub_blocks:] - csum[:-n_sub_blocks], 0.0) / n_sub_blocks


def gated_loudness(block_power: np.ndarray) -> float:
    """BS.1770-4 §2.8 integrated loudness from gating-block powers sum_i G_i z_ij.

    Absolute gate: l_j > -70 LUFS; relative gate: l_j > (loudness of the absolute-gated
    blocks) - 10 LU (eq. 6, 7). Returns -inf when no block passes.
    """
    levels = _loudness(block_power)
    above_absolute = levels > ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        return -math.inf
    relative_gate = _loudness(block_power[above_absolute].mean()) + RELATIVE_GATE_LU
    kept = above_absolute & (levels > relative_gate)
    return float(_loudness(block_power[kept].mean()))


def loudness_range(short_term_power: np.ndarray) -> float:
    """EBU Tech 3342 §3: LRA from short-term (3 s) powers taken every 100 ms, in LU.

    Absolute gate -70 LUFS, relative gate -20 LU below the power mean of the absolute-gated
    values, then the spread between the 10th and 95th percentiles of the remaining loudness.
    """
    levels = _loudness(short_term_power)
    above_absolute = levels > ABSOLUTE_GATE_LUFS
    if above_absolute.sum() < 2:
        return 0.0
    relative_gate = _loudness(short_term_power[above_absolute].mean()) + LRA_RELATIVE_GATE_LU
    kept = levels[above_absolute & (levels >= relative_gate)]
    low, high = np.percentile(kept, [LRA_LOW_PERCENTILE, LRA_HIGH_PERCENTILE])
    return float(high - low)


def _max_loudness(power: np.ndarray) -> float:
    return float(_loudness(power.max())) if len(power) else -math.inf


def _speech_blocks(speech: np.ndarray, n_blocks: int) -> np.ndarray:
    """A 400 ms gating block is speech-active when at least half its sub-blocks are."""
    counts = _window_means(speech.astype(np.float64), MOMENTARY_SUB_BLOCKS)[:n_blocks]
    return counts >= 0.5


# ----------------------------------------------------------------------------- meter

class LoudnessMeter:
    """Streaming BS.1770-4 / EBU R128 meter for any channel count.

    Feed ``process(block)`` with consecutive [shape=(n_channels, T)] blocks of any size,
    optionally ``process_speech(mask)`` with a per-100 ms speech mask (see module doc),
    then call ``result()`` (it may be called at any time; the meter keeps running).
    ``true_peak=False`` skips the 4x-oversampled peak (the report's true peaks are then NaN,
    JSON null): about 1.5-4x faster where only the loudness is needed.
    """

    def __init__(self, sample_rate_hz: int, n_channels: int,
                 channel_weights: np.ndarray | list[float] | None = None, *, true_peak: bool = True) -> None:
        if sample_rate_hz <= 0 or n_channels <= 0:
            raise ConfigError(f"meter needs a positive rate and channel count, "
                              f"got {sample_rate_hz} Hz, {n_channels} channels")
        weights = channel_weights_for(n_channels) if channel_weights is None else channel_weights
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (n_channels,):
            raise ConfigError(f"{len(self.weights)} channel weights for {n_channels} channels")
        self.sample_rate_hz = sample_rate_hz
        self.n_channels = n_channels
        self.true_peak = true_peak
        self.sub_block_frames = int(round(SUB_BLOCK_S * sample_rate_hz))
        self._fine_frames = max(1, int(round(SUB_BLOCK_S * sample_rate_hz / FINE_BLOCKS_PER_SUB_BLOCK)))
        sos = k_weighting_sos(sample_rate_hz)
        self._sos = np.ascontiguousarray(sos / sos[:, 3:4])  # a0 = 1
        self._zi = np.zeros((n_channels, self._sos.shape[0], 2))
        self._partial_sum = np.zeros(n_channels)
        self._partial_frames = 0
        self._fine_power: list[np.ndarray] = []  # weighted sum_i G_i z_i per 10 ms
        self._speech: list[np.ndarray] = []
        self._speech_given = False
        self._tp_history = np.zeros((n_channels, _FIR_HISTORY_FRAMES))
        self._peak = np.zeros(n_channels)
        self.n_frames = 0

    def process(self, block: np.ndarray) -> None:
        """Add the next [shape=(n_channels, T)] block of the programme (linear full scale)."""
        if block.ndim != 2 or block.shape[0] != self.n_channels:
            raise ValueError(f"meter expects ({self.n_channels}, frames) blocks, got {block.shape}")
        if block.shape[1] == 0:
            return
        x = _as_kernel_input(block)
        n_complete = (self._partial_frames + x.shape[1]) // self._fine_frames
        mean_squares = np.empty((self.n_channels, n_complete))
        _run_over_channels(_meter_kernel, x, self._sos, self._zi, self._fine_frames,
                           self._partial_frames, self._partial_sum, mean_squares, self.true_peak,
                           _TAPS_F64, _TRUE_PEAK_GAIN_BOUND, self._tp_history, self._peak)
        self._partial_frames = (self._partial_frames + x.shape[1]) % self._fine_frames
        if n_complete:
            self._fine_power.append(self.weights @ mean_squares)  # BS.1770-4 eq. 4: sum_i G_i z_i
        self.n_frames += block.shape[1]

    def process_speech(self, speech: np.ndarray) -> None:
        """Append a boolean speech mask for the next sub-blocks (100 ms each) of the programme."""
        self._speech.append(np.asarray(speech, dtype=bool).reshape(-1))
        self._speech_given = True

    def fine_block_power(self) -> np.ndarray:
        """Weighted power of every complete 10 ms block so far. [shape=(n_fine_blocks,)]"""
        return np.concatenate(self._fine_power) if self._fine_power else np.zeros(0)

    def sub_block_power(self) -> np.ndarray:
        """Weighted power of every complete 100 ms sub-block so far. [shape=(n_sub_blocks,)]"""
        fine = self.fine_block_power()
        n_sub = len(fine) // FINE_BLOCKS_PER_SUB_BLOCK
        return fine[:n_sub * FINE_BLOCKS_PER_SUB_BLOCK].reshape(n_sub, -1).mean(axis=1)

    def loudness_series(self, window_s: float) -> np.ndarray:
        """Loudness (LUFS) of every ``window_s`` window ending on a 10 ms step: 0.4 s is the
        momentary, 3 s the short-term loudness of EBU Tech 3341. [shape=(n_windows,)]"""
        n_fine = int(round(window_s / SUB_BLOCK_S * FINE_BLOCKS_PER_SUB_BLOCK))
        return _loudness(_window_means(self.fine_block_power(), n_fine))

    def true_peak_per_channel_dbtp(self) -> np.ndarray:
        """True peak per channel so far, including the interpolation tail, in dBTP (NaN if not metered)."""
        if not self.true_peak:
            return np.full(self.n_channels, np.nan)
        tail = TruePeakOversampler(self.n_channels)
        tail._history = self._tp_history.copy()
        peak = np.maximum(self._peak, tail.tail_peak())
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(peak)

    def result(self) -> LoudnessReport:
        """The report over everything processed so far."""
        fine = self.fine_block_power()
        sub_power = self.sub_block_power()
        momentary = _window_means(sub_power, MOMENTARY_SUB_BLOCKS)  # BS.1770 gating blocks
        short_term = _window_means(sub_power, SHORT_TERM_SUB_BLOCKS)  # Tech 3342: 10 Hz
        peaks_dbtp = self.true_peak_per_channel_dbtp()
        times_s, series = self._short_term_series(short_term)
        # Maxima slide in 10 ms steps, so a burst off the 100 ms grid still reads its level.
        fine_momentary = _window_means(fine, MOMENTARY_SUB_BLOCKS * FINE_BLOCKS_PER_SUB_BLOCK)
        fine_short_term = _window_means(fine, SHORT_TERM_SUB_BLOCKS * FINE_BLOCKS_PER_SUB_BLOCK)
        return LoudnessReport(
            integrated_lufs=gated_loudness(momentary),
            momentary_max_lufs=_max_loudness(fine_momentary),
            short_term_max_lufs=_max_loudness(fine_short_term),
            lra_lu=loudness_range(short_term),
            true_peak_dbtp=float(np.max(peaks_dbtp)),
            true_peak_per_channel_dbtp=[float(v) for v in peaks_dbtp],
            channels=self.n_channels,
            duration_s=self.n_frames / self.sample_rate_hz,
            dialogue_lufs=self._dialogue_loudness(momentary),
            short_term_series_s=times_s,
            short_term_series_lufs=series,
        )

    def _short_term_series(self, short_term: np.ndarray) -> tuple[list[float], list[float]]:
        """Short-term values whose 3 s window ends on a whole second."""
        ends = np.arange(len(short_term)) + SHORT_TERM_SUB_BLOCKS
        on_second = ends % round(1 / SUB_BLOCK_S) == 0
        times_s = (ends[on_second] * SUB_BLOCK_S).tolist()
        return times_s, [float(v) for v in _loudness(short_term[on_second])]

    def _dialogue_loudness(self, momentary: np.ndarray) -> float | None:
        """Integrated loudness over speech-active gating blocks (same gates); None if no speech."""
        if not self._speech_given:
            return None
        mask = np.zeros(len(momentary) + MOMENTARY_SUB_BLOCKS - 1, dtype=bool)
        given = np.concatenate(self._speech)[:len(mask)]
        mask[:len(given)] = given
        active = _speech_blocks(mask, len(momentary))
        value = gated_loudness(momentary[active])
        return value if math.isfinite(value) else None


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
    return _to_db(power)


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


# ----------------------------------------------------------------------------- measuring

def measure_array(x: np.ndarray, sample_rate_hz: int, layout: str | None = None,
                  speech: np.ndarray | None = None,
                  channel_weights: np.ndarray | list[float] | None = None,
                  true_peak: bool = True) -> LoudnessReport:
    """Measure a whole [shape=(C, T)] array (``speech``: optional per-100 ms mask).

    Weights come from ``channel_weights`` if given, else from ``layout`` / the channel count.
    """
    x = np.atleast_2d(x)
    if channel_weights is None:
        channel_weights = channel_weights_for(x.shape[0], layout)
    meter = LoudnessMeter(sample_rate_hz, x.shape[0], channel_weights, true_peak=true_peak)
    meter.process(x)
    if speech is not None:
        meter.process_speech(speech)
    return meter.result()


def measure_file(path: str | Path, block_frames: int = 480_000, layout: str | None = None,
                 dialogue_path: str | Path | None = None,
                 on_progress: Callable[[int, int], None] | None = None, *,
                 dialogue_from_programme: bool = False, true_peak: bool = True) -> LoudnessReport:
    """Stream a WAV/BW64 file through the meter and report it.

    Dialogue gating: with ``dialogue_path`` (a dialogue stem of the same length) speech is
    found in the stem (:func:`speech_activity`, ``source="stem"``); else with
    ``dialogue_from_programme`` silero-vad listens to the programme itself
    (``source="programme"``, a second read of the file); else ``dialogue_lufs`` is None.
    ``on_progress(done_frames, total_frames)`` is called after each block.
    """
    info = read_info(path)
    if info.n_frames == 0:
        raise AudioFormatError(path, "has no samples to measure")
    meter = LoudnessMeter(info.sample_rate_hz, info.n_channels,
                          channel_weights_for(info.n_channels, layout, read_channel_mask(path)), true_peak=true_peak)
    for block in iter_blocks(path, block_frames):
        meter.process(block)
        if on_progress is not None:
            on_progress(meter.n_frames, info.n_frames)
    if dialogue_path is not None:
        _check_same_rate(info.sample_rate_hz, dialogue_path)
        for mask in iter_speech_activity(dialogue_path):
            meter.process_speech(mask)
    elif dialogue_from_programme:
        for mask in iter_speech_activity(path, source="programme"):
            meter.process_speech(mask)
    return meter.result()


def _check_same_rate(sample_rate_hz: int, dialogue_path: str | Path) -> None:
    dialogue_rate_hz = read_info(dialogue_path).sample_rate_hz
    if dialogue_rate_hz != sample_rate_hz:
        raise AudioFormatError(dialogue_path, f"dialogue stem at {dialogue_rate_hz} Hz, "
                               f"programme at {sample_rate_hz} Hz")


# ----------------------------------------------------------------------------- presets and gain

Gate = Literal["programme", "dialogue"]


@dataclass(frozen=True)
class DeliverySpec:
    """A delivery target: integrated loudness, true-peak ceiling and what the loudness gates on."""

    name: str
    target_lufs: float
    ceiling_dbtp: float
    gate: Gate
    tolerance_lu: float = 1.0


PRESETS: dict[str, DeliverySpec] = {
    "ebu-r128": DeliverySpec("ebu-r128", -23.0, -1.0, "programme"),  # EBU R 128 (2020)
    "atsc-a85": DeliverySpec("atsc-a85", -24.0, -2.0, "programme"),  # ATSC A/85:2013
    "netflix": DeliverySpec("netflix", -27.0, -2.0, "dialogue"),  # Netflix sound mix spec
}


def get_preset(name: str, target: float | None = None, ceiling: float | None = None,
               gate: str | None = None) -> DeliverySpec:
    """A preset by name with optional overrides; ``name="custom"`` needs ``target``."""
    if name == "custom":
        if target is None:
            raise ConfigError("preset 'custom' needs a target loudness (LUFS)")
        base = DeliverySpec("custom", target, -1.0, "programme")
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ConfigError(f"unknown loudness preset {name!r}; expected one of "
                          f"{sorted(PRESETS) + ['custom']}")
    spec = DeliverySpec(base.name, base.target_lufs if target is None else float(target),
                        base.ceiling_dbtp if ceiling is None else float(ceiling),
                        base.gate if gate is None else gate, base.tolerance_lu)  # type: ignore[arg-type]
    _validate_spec(spec)
    return spec


def _validate_spec(spec: DeliverySpec) -> None:
    if spec.gate not in ("programme", "dialogue"):
        raise ConfigError(f"preset {spec.name!r}: gate must be 'programme' or 'dialogue', "
                          f"got {spec.gate!r}")
    if not (-70.0 < spec.target_lufs < 0.0):
        raise ConfigError(f"preset {spec.name!r}: target {spec.target_lufs} LUFS out of (-70, 0)")
    if not (-20.0 <= spec.ceiling_dbtp <= 0.0):
        raise ConfigError(f"preset {spec.name!r}: ceiling {spec.ceiling_dbtp} dBTP out of [-20, 0]")


@dataclass(frozen=True)
class GainDecision:
    """The one programme gain, and what loudness it was derived from."""

    gain_db: float
    measured_lufs: float
    basis: Gate
    dialogue_fallback: bool  # True when the spec gates on dialogue but no speech was found


def _measured_for(report: LoudnessReport, spec: DeliverySpec) -> tuple[float, Gate, bool]:
    if spec.gate == "dialogue":
        if report.dialogue_lufs is not None and math.isfinite(report.dialogue_lufs):
            return report.dialogue_lufs, "dialogue", False
        return report.integrated_lufs, "programme", True
    return report.integrated_lufs, "programme", False


def programme_gain(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> GainDecision:
    """Gain toward ``spec.target_lufs``; raises :class:`SilentProgrammeError` on silence."""
    measured, basis, fallback = _measured_for(report, spec)
    if not math.isfinite(measured):
        raise SilentProgrammeError(source, "is silent (integrated loudness -inf LUFS); "
                                   "refusing to amplify silence toward the target")
    return GainDecision(spec.target_lufs - measured, measured, basis, fallback)


def programme_gain_db(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> float:
    """One gain in dB toward the target (see :func:`programme_gain` for the basis and flag)."""
    return programme_gain(report, spec, source).gain_db


def verdict(report_after: LoudnessReport, spec: DeliverySpec) -> dict[str, Any]:
    """Pass/fail of a normalised programme against its spec (loudness within tolerance, TP <= ceiling)."""
    measured, basis, fallback = _measured_for(report_after, spec)
    loudness_ok = math.isfinite(measured) and abs(measured - spec.target_lufs) <= spec.tolerance_lu
    peak_ok = report_after.true_peak_dbtp <= spec.ceiling_dbtp
    return {
        "preset": spec.name, "gate": basis, "dialogue_fallback": fallback,
        "target_lufs": spec.target_lufs, "measured_lufs": _finite_or_none(measured),
        "tolerance_lu": spec.tolerance_lu, "loudness_pass": bool(loudness_ok),
        "ceiling_dbtp": spec.ceiling_dbtp, "true_peak_dbtp": _finite_or_none(report_after.true_peak_dbtp),
        "true_peak_pass": bool(peak_ok), "pass": bool(loudness_ok and peak_ok),
    }


# ----------------------------------------------------------------------------- limiter

class _Delay:
    """A streaming delay line of ``n_frames`` along the last axis (float32)."""

    def __init__(self, shape: tuple[int, ...], n_frames: int) -> None:
        self._buffer = np.zeros((*shape, n_frames), np.float32)
        self._n_frames = n_frames

    def process(self, x: np.ndarray) -> np.ndarray:
        extended = np.concatenate([self._buffer, x], axis=-1)
        self._buffer = extended[..., extended.shape[-1] - self._n_frames:]
        return extended[..., :x.shape[-1]]


@numba.njit(cache=True, nogil=True)
def _limiter_detect_kernel(x: np.ndarray, c0: int, c1: int, taps: np.ndarray, bound: float,
                           floor: float, history: np.ndarray, split: int,
                           os_peak: np.ndarray, sample_peak: np.ndarray) -> None:
    """Per frame, max over channels c0..c1-1 of |x| (``sample_peak``) and of the interpolated
    peak where it may exceed ``floor`` (``os_peak``, else 0). Row 0 for channels below
    ``split``, row 1 from it (the two threads of :func:`_run_over_channels`)."""
    for c in range(c0, c1):
        row = 0 if c < split else 1
        for n in range(x.shape[1]):  # vectorisable: no state
            sample_peak[row, n] = max(sample_peak[row, n], abs(float(x[c, n])))
        hot = _hot_frames_from_history(history, c, floor, bound)
        level = floor / bound
        for n in range(x.shape[1]):
            if abs(x[c, n]) > level:  # rarely taken on programme below the ceiling
                hot = 12
            if hot > 0:
                hot -= 1
                ip = _interpolated_peak(x, history, c, n, taps)
                if ip > os_peak[row, n]:
                    os_peak[row, n] = ip
        _push_history(x, history, c)


@numba.njit(cache=True, nogil=True)
def _limiter_gain_kernel(os_peak: np.ndarray, sample_peak: np.ndarray, threshold_db: float,
                         threshold_lin: float, release_coef: float, state: np.ndarray, sample_delay: np.ndarray,
                         hold_values: np.ndarray, hold_times: np.ndarray, smooth_ring: np.ndarray,
                         gain: np.ndarray) -> None:
    """The limiter's per-frame gain (linear) from its detector, state carried in the arrays.

    req[n] = max(0, 20 log10 max(os[n], os[n-1], |x|[n-6]) - threshold); hold = max of req over
    the last L frames (monotonic queue ``hold_values``/``hold_times``, L = len(smooth_ring));
    att[n] = max(hold[n], release_coef * att[n-1]); gain = 10^(-mean(att[n-L+1..n]) / 20).
    ``state`` = [previous os peak, att, running sum of the ring, frame counter, queue head,
    queue length, ring position, sample-delay position].
    """
    lookahead = smooth_ring.shape[0]
    prev_os, att, ring_sum = state[0], state[1], state[2]
    t, head, size, ring_pos, delay_pos = int(state[3]), int(state[4]), int(state[5]), int(state[6]), int(state[7])
    capacity = hold_values.shape[0]
    n_delay = sample_delay.shape[0]
    for n in range(os_peak.shape[0]):
        delayed = sample_delay[delay_pos]
        sample_delay[delay_pos] = sample_peak[n]
        delay_pos = (delay_pos + 1) % n_delay
        peak = max(os_peak[n], prev_os, delayed)
        prev_os = os_peak[n]
        req = 20.0 * math.log10(peak) - threshold_db if peak > threshold_lin else 0.0
        # sliding max over the last `lookahead` frames: drop expired, then dominated entries
        while size > 0 and hold_times[head] <= t - lookahead:
            head = (head + 1) % capacity
            size -= 1
        while size > 0 and hold_values[(head + size - 1) % capacity] <= req:
            size -= 1
        hold_values[(head + size) % capacity] = req
        hold_times[(head + size) % capacity] = t
        size += 1
        hold = hold_values[head]
        att = max(hold, release_coef * att)
        if att < 1e-12:
            att = 0.0
        ring_sum += att - smooth_ring[ring_pos]
        smooth_ring[ring_pos] = att
        ring_pos = (ring_pos + 1) % lookahead
        if ring_pos == 0:  # once per window, re-sum exactly (no drift over a feature film)
            ring_sum = 0.0
            for i in range(lookahead):
                ring_sum += smooth_ring[i]
        gain[n] = 10.0 ** (-ring_sum / lookahead / 20.0) if ring_sum > 0.0 else 1.0
        t += 1
    state[0], state[1], state[2], state[3] = prev_os, att, ring_sum, t
    state[4], state[5], state[6], state[7] = head, size, ring_pos, delay_pos


class TruePeakLimiter:
    """Streaming look-ahead true-peak limiter, gain linked across channels.

    Detector: the BS.1770-4 Annex 2 4x oversampled peak (and the sample peak) around each
    frame. Required attenuation a[n] = max(0, peak_db - (ceiling - margin)); held at its max
    over the look-ahead, released exponentially (``release_ms`` time constant, in dB), then
    smoothed by a moving average as long as the look-ahead, so the gain is down before
    the peak arrives and never above the requirement of any frame. Output is delayed by
    :attr:`latency_frames`; call :meth:`flush` at the end for the last frames.

    The detector and the gain run as compiled kernels (one pass per channel, the two halves
    of the channels on two threads); the interpolation runs only where a frame's 12 inputs
    can reach the threshold, so programme well below the ceiling costs little.
    """

    SAFETY_MARGIN_DB = 0.15

    def __init__(self, sample_rate_hz: int, n_channels: int, ceiling_dbtp: float,
                 lookahead_ms: float = 5.0, release_ms: float = 100.0) -> None:
        if lookahead_ms <= 0 or release_ms <= 0:
            raise ConfigError(f"limiter look-ahead {lookahead_ms} ms and release {release_ms} ms "
                              f"must be positive")
        self.n_channels = n_channels
        self.ceiling_dbtp = ceiling_dbtp
        self.lookahead_frames = max(1, int(round(lookahead_ms * sample_rate_hz / 1000)))
        self.latency_frames = TRUE_PEAK_DELAY_FRAMES + self.lookahead_frames - 1
        self._threshold_db = ceiling_dbtp - self.SAFETY_MARGIN_DB
        self._threshold_lin = 10.0 ** (self._threshold_db / 20.0)
        self._release_coef = math.exp(-1.0 / (release_ms * sample_rate_hz / 1000))
        self._history = np.zeros((n_channels, _FIR_HISTORY_FRAMES))
        self._state = np.zeros(8)
        self._sample_delay = np.zeros(TRUE_PEAK_DELAY_FRAMES)
        self._hold_values = np.zeros(self.lookahead_frames + 1)
        self._hold_times = np.zeros(self.lookahead_frames + 1, np.int64)
        self._smooth_ring = np.zeros(self.lookahead_frames)
        self._audio = _Delay((n_channels,), self.latency_frames)

    def gain(self, x: np.ndarray) -> np.ndarray:
        """Advance the detector by [shape=(C, T)]; the linear gain of the delayed frames. [shape=(T,)]"""
        n_frames = x.shape[1]
        os_peak = np.zeros((2, n_frames))
        sample_peak = np.zeros((2, n_frames))
        _run_over_channels(_limiter_detect_kernel, x, _TAPS_F64, _TRUE_PEAK_GAIN_BOUND,
                           self._threshold_lin, self._history, self.n_channels // 2, os_peak, sample_peak)
        gain = np.empty(n_frames)
        _limiter_gain_kernel(os_peak.max(axis=0), sample_peak.max(axis=0), self._threshold_db,
                             self._threshold_lin, self._release_coef, self._state, self._sample_delay, self._hold_values,
                             self._hold_times, self._smooth_ring, gain)
        return gain

    def gain_db(self, x: np.ndarray) -> np.ndarray:
        """As :meth:`gain`, in dB."""
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(self.gain(_as_kernel_input(x)))

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit [shape=(C, T)] -> [shape=(C, T)] float32, delayed by ``latency_frames``."""
        if block.ndim != 2 or block.shape[0] != self.n_channels:
            raise ValueError(f"limiter expects ({self.n_channels}, frames) blocks, got {block.shape}")
        if block.shape[1] == 0:
            return np.zeros((self.n_channels, 0), np.float32)
        x = _as_kernel_input(block)
        gain = self.gain(x).astype(np.float32)
        delayed = self._audio.process(x.astype(np.float32, copy=False))
        delayed *= gain  # a fresh array: the delay line keeps its own copy
        return delayed

    def flush(self) -> np.ndarray:
        """The last ``latency_frames`` frames of output. [shape=(C, latency_frames)]"""
        return self.process(np.zeros((self.n_channels, self.latency_frames), np.float32))
