"""The streaming look-ahead true-peak limiter."""

from __future__ import annotations

import math

import numba
import numpy as np

from filmrestore.errors import ConfigError
from filmrestore.loudness.kernels import (
    FIR_HISTORY_FRAMES,
    TAPS_F64,
    TRUE_PEAK_DELAY_FRAMES,
    TRUE_PEAK_GAIN_BOUND,
    hot_frames_from_history,
    interpolated_peak,
    push_history,
    run_over_channels,
)

@numba.njit(cache=True, nogil=True)
def _limiter_detect_kernel(x: np.ndarray, c0: int, c1: int, taps: np.ndarray, bound: float,
                           floor: float, history: np.ndarray, split: int,
                           os_peak: np.ndarray, sample_peak: np.ndarray) -> None:
    """Per frame, max over channels c0..c1-1 of |x| (``sample_peak``) and of the interpolated
    peak where it may exceed ``floor`` (``os_peak``, else 0). Row 0 for channels below
    ``split``, row 1 from it (the two threads of :func:`run_over_channels`)."""
    for c in range(c0, c1):
        row = 0 if c < split else 1
        for n in range(x.shape[1]):  # vectorisable: no state
            sample_peak[row, n] = max(sample_peak[row, n], abs(float(x[c, n])))
        hot = hot_frames_from_history(history, c, floor, bound)
        level = floor / bound
        for n in range(x.shape[1]):
            if abs(x[c, n]) > level:  # rarely taken on programme below the ceiling
                hot = 12
            if hot > 0:
                hot -= 1
                ip = interpolated_peak(x, history, c, n, taps)
                if ip > os_peak[row, n]:
                    os_peak[row, n] = ip
        push_history(x, history, c)


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
    the peak arrives and never above the requirement of any frame.

    One delay convention: output is *aligned* with input. The look-ahead holds back
    :attr:`latency_frames` frames, so the first blocks return that many frames fewer than
    they were given, and :meth:`flush` returns the rest: the outputs concatenated have the
    input's length and no time shift, whatever the block sizes.

    ``n_linked`` extra rows (e.g. the ADM file's object tracks) can ride along: the gain is
    detected on the block's channels only and applied to both (:meth:`process_linked`).

    The detector and the gain run as compiled kernels (one pass per channel, the two halves
    of the channels on two threads); the interpolation runs only where a frame's 12 inputs
    can reach the threshold, so programme well below the ceiling costs little.
    """

    SAFETY_MARGIN_DB = 0.15

    def __init__(self, sample_rate_hz: int, n_channels: int, ceiling_dbtp: float,
                 lookahead_ms: float = 5.0, release_ms: float = 100.0, n_linked: int = 0) -> None:
        if lookahead_ms <= 0 or release_ms <= 0:
            raise ConfigError(f"limiter look-ahead {lookahead_ms} ms and release {release_ms} ms "
                              f"must be positive")
        self.n_channels, self.n_linked = n_channels, n_linked
        self.ceiling_dbtp = ceiling_dbtp
        self.lookahead_frames = max(1, int(round(lookahead_ms * sample_rate_hz / 1000)))
        self.latency_frames = TRUE_PEAK_DELAY_FRAMES + self.lookahead_frames - 1
        self._threshold_db = ceiling_dbtp - self.SAFETY_MARGIN_DB
        self._threshold_lin = 10.0 ** (self._threshold_db / 20.0)
        self._release_coef = math.exp(-1.0 / (release_ms * sample_rate_hz / 1000))
        self._history = np.zeros((n_channels, FIR_HISTORY_FRAMES))
        self._state = np.zeros(8)
        self._sample_delay = np.zeros(TRUE_PEAK_DELAY_FRAMES)
        self._hold_values = np.zeros(self.lookahead_frames + 1)
        self._hold_times = np.zeros(self.lookahead_frames + 1, np.int64)
        self._smooth_ring = np.zeros(self.lookahead_frames)
        self._delay = np.zeros((n_channels + n_linked, self.latency_frames), np.float32)
        self._to_drop = self.latency_frames

    def gain(self, x: np.ndarray) -> np.ndarray:
        """Advance the detector by [shape=(C, T)]; the linear gain of the frames ``latency_frames``
        earlier. [shape=(T,)]"""
        n_frames = x.shape[1]
        os_peak = np.zeros((2, n_frames))
        sample_peak = np.zeros((2, n_frames))
        run_over_channels(_limiter_detect_kernel, x, TAPS_F64, TRUE_PEAK_GAIN_BOUND,
                          self._threshold_lin, self._history, self.n_channels // 2, os_peak, sample_peak)
        gain = np.empty(n_frames)
        _limiter_gain_kernel(os_peak.max(axis=0), sample_peak.max(axis=0), self._threshold_db,
                             self._threshold_lin, self._release_coef, self._state, self._sample_delay, self._hold_values,
                             self._hold_times, self._smooth_ring, gain)
        return gain

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit [shape=(C, T)] -> [shape=(C, T')] float32, aligned with the input (see the class)."""
        if self.n_linked:
            raise ValueError(f"this limiter carries {self.n_linked} linked rows: use process_linked")
        return self.process_linked(block, [])[0]

    def process_linked(self, block: np.ndarray, linked: np.ndarray | list[np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(block [shape=(C, T)], linked [shape=(n_linked, T)] or its rows) -> both limited by
        the block's gain, aligned with the input. float32.

        Each output row is written once, ``delayed input * gain`` straight from its source row
        (no stacked copy of all rows); the last ``latency_frames`` frames of every row carry over.
        """
        if block.ndim != 2 or block.shape[0] != self.n_channels or len(linked) != self.n_linked:
            raise ValueError(f"limiter expects ({self.n_channels}, frames) blocks and {self.n_linked} linked "
                             f"rows, got {block.shape} and {len(linked)}")
        n, n_mix = block.shape[1], self.n_channels
        gain = self.gain(np.ascontiguousarray(block, dtype=np.float32)).astype(np.float32)
        rows = [*block, *linked]
        head = min(self.latency_frames, n)  # output frames still taken from the delay line
        out = np.empty((n_mix, n), np.float32)
        linked_out = np.empty((self.n_linked, n), np.float32)
        for i, row in enumerate(rows):
            target = out[i] if i < n_mix else linked_out[i - n_mix]
            np.multiply(self._delay[i, :head], gain[:head], out=target[:head])
            np.multiply(row[:n - head], gain[head:], out=target[head:])
        self._carry(rows, n)
        drop = min(self._to_drop, n)
        self._to_drop -= drop
        return out[:, drop:], linked_out[:, drop:]

    def _carry(self, rows: list[np.ndarray], n: int) -> None:
        """Keep the last ``latency_frames`` frames of (delay line, block) per row."""
        latency = self.latency_frames
        if n >= latency:
            for i, row in enumerate(rows):
                self._delay[i] = row[n - latency:]
        else:
            self._delay = np.concatenate([self._delay[:, n:], np.vstack(rows).astype(np.float32)], axis=1)

    def flush(self) -> np.ndarray:
        """The frames still held back. [shape=(C, latency_frames)] (fewer if less was given)"""
        return self.flush_linked()[0]

    def flush_linked(self) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`flush`, with the linked rows."""
        n = self.latency_frames
        return self.process_linked(np.zeros((self.n_channels, n), np.float32),
                                   np.zeros((self.n_linked, n), np.float32))
