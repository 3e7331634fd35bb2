"""The meter's and the limiter's per-sample work: the K-weighting filters, the BS.1770-4
Annex 2 true-peak interpolator and the numba kernels that run them, two channel groups on
two threads."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import scipy.signal
from pyloudnorm.iirfilter import IIRfilter

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
FIR_HISTORY_FRAMES = _TRUE_PEAK_TAPS.shape[0] - 1
TRUE_PEAK_GAIN_BOUND = float(np.abs(_TRUE_PEAK_TAPS).sum(axis=0).max()) * 1.001  # rounding slack
# Phase p of input frame n estimates the signal at n - 5.875 + p / 4 (group delay 23.5 / 4).
TRUE_PEAK_DELAY_FRAMES = 6

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

TAPS_F64 = np.ascontiguousarray(_TRUE_PEAK_TAPS, dtype=np.float64)  # [k, phase]: y_p[n] = sum_k h[k,p] x[n-k]


@numba.njit(cache=True, nogil=True, fastmath=False)
def hot_frames_from_history(history: np.ndarray, c: int, floor: float, bound: float) -> int:
    """How many first frames of the next block see a history sample that may reach ``floor``."""
    hot = 0
    for j in range(history.shape[1]):  # history[c, j] is the sample at time j - 11
        if abs(history[c, j]) * bound > floor:
            hot = j + 1
    return hot


@numba.njit(cache=True, nogil=True)
def interpolated_peak(x: np.ndarray, history: np.ndarray, c: int, n: int, taps: np.ndarray) -> float:
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
def push_history(x: np.ndarray, history: np.ndarray, c: int) -> None:
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
        hot = hot_frames_from_history(history, c, pk, bound)
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
                ip = interpolated_peak(x, history, c, n, taps)
                if ip > pk:
                    pk = ip
                    level = pk / bound
        peak[c] = pk
        push_history(x, history, c)


@numba.njit(cache=True, nogil=True)
def meter_kernel(x: np.ndarray, c0: int, c1: int, sos: np.ndarray, zi: np.ndarray, sub_frames: int,
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
        hot = hot_frames_from_history(history, c, fl, bound)
        for n in range(x.shape[1]):
            if abs(x[c, n]) * bound > fl:
                hot = 12
            if hot > 0:
                hot -= 1
                ip = interpolated_peak(x, history, c, n, taps)
                if ip > out[row, n]:
                    out[row, n] = ip
        push_history(x, history, c)


_POOL: ThreadPoolExecutor | None = None
_MIN_PARALLEL_SAMPLES = 200_000  # below this a thread hand-off costs more than it saves


def run_over_channels(kernel: Callable[..., None], x: np.ndarray, *args: Any) -> None:
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


def as_kernel_input(block: np.ndarray) -> np.ndarray:
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
        self._history = np.zeros((n_channels, FIR_HISTORY_FRAMES), dtype=np.float64)

    def process(self, block: np.ndarray) -> np.ndarray:
        """[shape=(C, T)] -> oversampled [shape=(C, T, 4)]; phase p of frame n uses x[n-11..n]."""
        n_frames = block.shape[1]
        extended = np.concatenate([self._history.astype(np.float32), block.astype(np.float32)], axis=1)
        self._history = extended[:, extended.shape[1] - FIR_HISTORY_FRAMES:].astype(np.float64)
        upsampled = scipy.signal.upfirdn(_TRUE_PEAK_FIR, extended, up=OVERSAMPLING, axis=-1)
        start = FIR_HISTORY_FRAMES * OVERSAMPLING  # first output whose 12 taps all see input
        steady = upsampled[:, start:start + OVERSAMPLING * n_frames]
        return steady.reshape(self.n_channels, n_frames, OVERSAMPLING)

    def frame_peaks(self, block: np.ndarray, floor: np.ndarray | float, per_channel: bool = True
                    ) -> np.ndarray:
        """Per-frame max |oversampled| over the 4 phases. [shape=(C, T)], or (1, T) max over channels.

        Exact wherever it can exceed ``floor`` (per channel or scalar); elsewhere 0.
        """
        x = as_kernel_input(block)
        out = np.zeros((self.n_channels if per_channel else 1, x.shape[1]))
        floors = np.broadcast_to(np.asarray(floor, dtype=np.float64), (self.n_channels,)).copy()
        run_over_channels(_frame_peak_kernel, x, TAPS_F64, TRUE_PEAK_GAIN_BOUND, floors,
                           self._history, out)
        return out

    def channel_peaks(self, block: np.ndarray, floor: np.ndarray | float) -> np.ndarray:
        """Per-channel max |oversampled| of the block, exact where above ``floor``, else 0. [shape=(C,)]"""
        return self.frame_peaks(block, floor).max(axis=1, initial=0.0)

    def tail_peak(self) -> np.ndarray:
        """Per-channel peak of the interpolation past the last frame (as if zeros followed)."""
        probe = TruePeakOversampler(self.n_channels)
        probe._history = self._history.copy()
        tail = probe.process(np.zeros((self.n_channels, FIR_HISTORY_FRAMES), dtype=np.float32))
        return np.abs(tail).max(axis=(1, 2)).astype(np.float64)


