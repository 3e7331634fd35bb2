"""Clicks: impulses found as outliers of the forward and backward linear-prediction residual,
kept only when impulsive, not recurring at a pitch period and at most 1.25 ms long, and
repaired by least-squares AR interpolation (LSAR)."""

from __future__ import annotations


import numba
import numpy as np
from scipy import linalg, ndimage

from filmrestore.errors import ConfigError
from filmrestore.restoration.blocks import check_block, hann


CLICK_MIN_COUNT = 3  # apply the declicker when >= 3 clicks and >= 6 per minute were found
CLICK_MIN_RATE_PER_MIN = 6.0

CLICK_AR_ORDER = 24
CLICK_HOP_FRAMES = 8192  # detection runs on a fixed grid of hops, so blocks do not matter
CLICK_CONTEXT_FRAMES = 1536  # input either side of a hop (AR fit, periodicity test, repairs)
CLICK_MAX_GAP_FRAMES = 60  # 1.25 ms at 48 kHz: dust and splice clicks last <= 1 ms; longer is programme
CLICK_LEVEL_BLOCK_FRAMES = 256  # running-level resolution (5.3 ms at 48 kHz)
CLICK_LEVEL_FLOOR = 1e-6  # residual level never below -120 dBFS (digital silence)
CLICK_MERGE_FRAMES = 16  # outliers closer than this belong to one click
CLICK_EXTENT_SIGMA = 3.0  # a click extends over the residual outliers above 3 deviations
CLICK_FIT_CONTEXT_FRAMES = 256  # clean samples either side of a gap for its local AR fit
CLICK_CRACKLE_PER_HOP = 4  # a hop with >= 4 repairs (30 a second) is crackle: analyse it again
CLICK_MAX_PASSES = 3
LSAR_LOADING = 1e-4  # diagonal loading of the gap's AR fit (a floor 40 dB under the context):
# band-limited music fits near-unstable models whose interpolants overshoot by 20 dB and more
LSAR_MAX_OVERSHOOT = 2.0  # an interpolant peaking above twice its context's peak is refused
CLICK_PERIOD_S = (0.001, 0.025)  # pitch periods of voices and instruments (1 kHz down to 40 Hz)
CLICK_PERIOD_TOLERANCE_FRAMES = 8  # pitch-period jitter allowed between neighbouring periods
CLICK_PARTNER_RATIO = 0.5  # partner peaks of >= 50 % of the candidate's size make it periodic
CLICK_MODEL_FLOOR_DB = 30.0  # the AR model never predicts the programme better than this (see fit_ar)
CLICK_IMPULSE_TOP = 4  # an impulse puts most of its residual energy into a few frames:
CLICK_IMPULSE_SHARE = 0.6  # a group whose top 4 frames hold < 60 % of its energy ...
CLICK_SPREAD_FACTOR = 3.2  # ... must stand 3.2 thresholds out (programme transients spread)
CLICK_ONSET_FRAMES = 480  # 10 ms of programme either side of a click ...
CLICK_ONSET_GUARD_FRAMES = 96  # ... 2 ms away from it (past any click's tail) ...
CLICK_ONSET_RATIO = 100.0  # ... 20 dB apart in power: the programme starts or stops there,
CLICK_ONSET_LOUDNESS = 0.25  # if the louder side's RMS is >= 1/4 of the span's peak (its attack)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """r[k] = sum_n x[n] x[n + k] for k = 0..max_lag. [shape=(max_lag + 1,)]"""
    r = np.zeros(max_lag + 1)
    n = len(x)
    for k in range(max_lag + 1):
        acc = 0.0
        for i in range(n - k):
            acc += x[i] * x[i + k]
        r[k] = acc
    return r


def fit_ar(x: np.ndarray, order: int, floor_db: float = CLICK_MODEL_FLOOR_DB) -> np.ndarray | None:
    """AR coefficients ``a`` [shape=(order,)] with ``x[n] ~ sum_k a[k] x[n-1-k]``.

    Autocorrelation (Yule-Walker) method on a Hann-windowed frame, solved by
    Levinson recursion; None for a frame without energy. The white-noise
    correction adds a floor ``floor_db`` below the frame's power to the model,
    which caps its prediction gain near that figure: real recordings have a noise
    floor, but band-limited or resampled material (a 22.05 kHz transfer played at
    48 kHz, music with nothing above 3 kHz) predicts by 60 dB and more, and
    against such a tiny residual every fast programme edge looks like an impulse.
    """
    r = _autocorrelation(x * hann(len(x)), order)
    if r[0] <= 1e-20:
        return None
    r[0] *= 1.0 + 10.0 ** (-floor_db / 10.0)
    return linalg.solve_toeplitz(r[:order], r[1:order + 1])


@numba.njit(cache=True, nogil=True)
def _running_level(e: np.ndarray) -> np.ndarray:
    """Robust local level of a residual [shape=(n,)]: 1.4826 * median |e| per 256-frame block
    (the last block padded with its final value), the largest of each block and its two
    neighbours, floored at -120 dBFS."""
    n, size = len(e), CLICK_LEVEL_BLOCK_FRAMES
    n_blocks = -(-n // size)
    med = np.empty(n_blocks)
    block = np.empty(size)
    for b in range(n_blocks):
        for i in range(size):
            block[i] = abs(e[min(b * size + i, n - 1)])
        part = np.partition(block, size // 2)  # even size: the median is the mean of the middle two
        med[b] = 1.4826 * 0.5 * (part[:size // 2].max() + part[size // 2])
    out = np.empty(n)
    for b in range(n_blocks):
        level = max(med[max(b - 1, 0)], med[b], med[min(b + 1, n_blocks - 1)], CLICK_LEVEL_FLOOR)
        out[b * size:min((b + 1) * size, n)] = level
    return out


def _residuals(x: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Forward and backward prediction residuals of ``x`` [shape=(n,)], zero where undefined."""
    a = fit_ar(x, order)
    if a is None:
        return None
    return _prediction_errors(np.ascontiguousarray(x, dtype=np.float64), a)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _prediction_errors(x: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ef[n] = x[n] - sum_k a[k] x[n-1-k], eb[n] = x[n] - sum_k a[k] x[n+1+k]; 0 where undefined."""
    n, order = len(x), len(a)
    ef, eb = np.zeros(n), np.zeros(n)
    for i in range(order, n):
        acc = x[i]
        for k in range(order):
            acc -= a[k] * x[i - 1 - k]
        ef[i] = acc
    for i in range(n - order):
        acc = x[i]
        for k in range(order):
            acc -= a[k] * x[i + 1 + k]
        eb[i] = acc
    return ef, eb


@numba.njit(cache=True, nogil=True)
def _partner(peaks: np.ndarray, index: int, level: float, tolerance: int) -> bool:
    """Whether ``peaks`` reaches ``level`` within +- ``tolerance`` of ``index``."""
    for i in range(max(index - tolerance, 0), min(index + tolerance + 1, len(peaks))):
        if peaks[i] >= level:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _is_periodic(peaks: np.ndarray, m: int, size: float, lag_lo: int, lag_hi: int, tolerance: int,
                 strict: bool) -> bool:
    """Whether the residual peak of ``size`` at ``m`` recurs like a pitch pulse.

    ``peaks`` is the residual magnitude after a max filter of the period
    tolerance. Periodic means partner peaks (>= half the size) at a lag T in
    ``[lag_lo, lag_hi)``: at -T and +T (+- ``tolerance``), or at T and 2T on one side. ``strict``
    (for crackle, which puts some partner on each side of most of its clicks by
    chance) asks for a train: -T, +T and one of -2T, +2T, or T, 2T, 3T on one
    side. The multiples allow the period's jitter to add up (+- ``tolerance``
    more per period).
    """
    level = CLICK_PARTNER_RATIO * size
    n = len(peaks)
    for lag in range(lag_lo, lag_hi):
        left = m - lag >= 0 and peaks[m - lag] >= level
        right = m + lag < n and peaks[m + lag] >= level
        if not (left or right):
            continue
        both = left and _partner(peaks, m + lag, level, tolerance) if m + lag < n else False
        if not strict:
            if both or (left and m - 2 * lag >= 0 and peaks[m - 2 * lag] >= level) \
                    or (right and m + 2 * lag < n and peaks[m + 2 * lag] >= level):
                return True
            continue
        left2 = _partner(peaks, m - 2 * lag, level, tolerance) if m - 2 * lag >= 0 else False
        right2 = _partner(peaks, m + 2 * lag, level, tolerance) if m + 2 * lag < n else False
        if both and (left2 or right2):
            return True
        if left and left2 and m - 3 * lag >= 0 and _partner(peaks, m - 3 * lag, level, 2 * tolerance):
            return True
        if right and right2 and m + 3 * lag < n and _partner(peaks, m + 3 * lag, level, 2 * tolerance):
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _mean_square(x: np.ndarray, start: int, stop: int) -> float:
    """Mean of ``x[start:stop] ** 2`` within the array's bounds; 0 for an empty range."""
    start, stop = max(start, 0), min(stop, len(x))
    acc = 0.0
    for i in range(start, stop):
        acc += x[i] * x[i]
    return acc / (stop - start) if stop > start else 0.0


@numba.njit(cache=True, nogil=True)
def _is_onset(x: np.ndarray, g0: int, g1: int) -> bool:
    """Whether the programme starts (or stops) at ``x[g0:g1]``: 10 ms of it beyond a 2 ms
    guard after the span is 20 dB louder than the 10 ms just before it (or the reverse),
    and that louder side is as loud as the span itself (RMS >= 1/4 of its peak), so the
    span is the programme's own attack. A click is louder than the programme around it."""
    peak = 0.0
    for i in range(max(g0, 0), min(g1, len(x))):
        peak = max(peak, abs(x[i]))
    loud = (CLICK_ONSET_LOUDNESS * peak) ** 2
    before = _mean_square(x, g0 - CLICK_ONSET_FRAMES, g0)
    after = _mean_square(x, g1 + CLICK_ONSET_GUARD_FRAMES, g1 + CLICK_ONSET_GUARD_FRAMES + CLICK_ONSET_FRAMES)
    if after > CLICK_ONSET_RATIO * before and after >= loud:
        return True
    before = _mean_square(x, g0 - CLICK_ONSET_GUARD_FRAMES - CLICK_ONSET_FRAMES, g0 - CLICK_ONSET_GUARD_FRAMES)
    after = _mean_square(x, g1, g1 + CLICK_ONSET_FRAMES)
    return before > CLICK_ONSET_RATIO * after and before >= loud


@numba.njit(cache=True, nogil=True)
def _classify_groups(x: np.ndarray, ef: np.ndarray, ratio_f: np.ndarray, ratio_b: np.ndarray, threshold: float,
                     peaks: np.ndarray, lag_lo: int, lag_hi: int, strict: bool) -> tuple[np.ndarray, int]:
    """The clicks among the residual outliers, as ``(start, stop)`` rows [shape=(k, 2)], and
    how many more the strict periodicity test would keep (see :func:`_is_periodic`).

    One pass over the frames groups the outliers above ``CLICK_EXTENT_SIGMA`` (or the
    threshold) that lie within ``CLICK_MERGE_FRAMES`` of each other, then applies the
    rules of :func:`detect_clicks` to each group.
    """
    n = len(ef)
    out = np.empty((n // (CLICK_MERGE_FRAMES + 1) + 2, 2), np.int64)
    k = 0
    n_chance = 0  # clicks refused as pitch pulses by the loose test that the strict one keeps
    i = 0
    while i < n:
        if ratio_f[i] <= CLICK_EXTENT_SIGMA and ratio_b[i] <= CLICK_EXTENT_SIGMA:
            i += 1
            continue
        lo = i
        hi = i + 1  # one past the group's last outlier
        j = i + 1
        while j < n and j - hi < CLICK_MERGE_FRAMES:
            if ratio_f[j] > CLICK_EXTENT_SIGMA or ratio_b[j] > CLICK_EXTENT_SIGMA:
                hi = j + 1
            j += 1
        i = hi
        # the group's statistics
        has_f = False
        has_b = False
        peak = 0.0
        total = 0.0
        top = np.zeros(CLICK_IMPULSE_TOP)  # the largest squared residuals, descending
        m = lo
        m_size = -1.0
        first_f = -1
        last_b = -1
        for t in range(lo, hi):
            e2 = ef[t] * ef[t]
            total += e2
            for r in range(CLICK_IMPULSE_TOP):
                if e2 > top[r]:
                    for q in range(CLICK_IMPULSE_TOP - 1, r, -1):
                        top[q] = top[q - 1]
                    top[r] = e2
                    break
            if ratio_f[t] > threshold:
                has_f = True
                if abs(ef[t]) > m_size:
                    m, m_size = t, abs(ef[t])
            if ratio_b[t] > threshold:
                has_b = True
            peak = max(peak, ratio_f[t], ratio_b[t])
            if first_f < 0 and ratio_f[t] > CLICK_EXTENT_SIGMA:
                first_f = t
            if ratio_b[t] > CLICK_EXTENT_SIGMA:
                last_b = t
        if not (has_f and has_b):
            continue
        if top.sum() < CLICK_IMPULSE_SHARE * total and peak <= CLICK_SPREAD_FACTOR * threshold:
            continue  # a programme transient, not an impulse
        periodic = _is_periodic(peaks, m, abs(ef[m]), lag_lo, lag_hi, CLICK_PERIOD_TOLERANCE_FRAMES, strict)
        if periodic and (strict or _is_periodic(peaks, m, abs(ef[m]), lag_lo, lag_hi,
                                                CLICK_PERIOD_TOLERANCE_FRAMES, True)):
            continue  # a pitch pulse under either reading
        g0 = first_f if first_f >= 0 else lo
        g1 = last_b + 1 if last_b >= 0 else hi
        if g1 <= g0:
            g0, g1 = lo, hi
        if _is_onset(x, g0, g1):
            continue  # a cut or a note's attack after silence, not a click
        if periodic:  # refused by the loose test only: a click with chance partners, if crackle
            n_chance += 1
            continue
        out[k, 0] = max(g0 - 2, 0)
        out[k, 1] = min(g1 + 2, n)
        k += 1
    return out[:k], n_chance


def detect_clicks(x: np.ndarray, sample_rate_hz: int, order: int = CLICK_AR_ORDER,
                  threshold_sigma: float = 5.0, crackle: bool = False) -> list[tuple[int, int]]:
    """Clicks in one channel ``x`` [shape=(n,)] as ``(start, stop)`` frame ranges.

    An impulse at ``m`` makes the forward prediction residual jump at ``m`` (and
    ring for ``order`` frames after), the backward residual at ``m`` (ringing
    before). A click is a group of outliers (> 3 robust deviations of the running
    residual level, none further than 16 frames from the next) with both a
    forward and a backward outlier above ``threshold_sigma``, which

    - is impulsive: its 4 largest forward-residual frames hold >= 60 % of the
      group's residual energy, or else it stands out by 3.2 times the threshold.
      Plosives, drum hits and synthesiser edges excite the residual over many
      frames at a moderate level; a click puts a burst into a few;
    - does not recur at a pitch period (1-25 ms: the glottal pulses of voiced
      speech and the edges of a synthesiser's waveform look like clicks one at a
      time; with ``crackle``, only a train of three such pulses counts, since
      dense crackle gives most clicks a partner either side by chance);
    - is not where the programme starts or stops (10 ms of programme beyond a 2 ms
      guard 20 dB louder, or quieter, than the 10 ms before it, and about as loud
      as the span itself): a cut from silence into a tone excites the residual
      like a click.

    Since the forward residual rings after the impulse and the backward one
    before it, the click spans from the group's first forward to its last
    backward outlier, plus 2 frames either side.
    """
    return _detect(x, sample_rate_hz, order, threshold_sigma, crackle)[0]


def _detect(x: np.ndarray, sample_rate_hz: int, order: int, threshold_sigma: float, crackle: bool
            ) -> tuple[list[tuple[int, int]], int]:
    """:func:`detect_clicks`, and the number of clicks only the strict periodicity test keeps."""
    res = _residuals(x, order)
    if res is None:
        return [], 0
    ef, eb = res
    ratio_f, ratio_b = np.abs(ef) / _running_level(ef), np.abs(eb) / _running_level(eb)
    peaks = ndimage.maximum_filter1d(np.abs(ef), 2 * CLICK_PERIOD_TOLERANCE_FRAMES + 1)
    lag_lo, lag_hi = (int(round(p * sample_rate_hz)) for p in CLICK_PERIOD_S)
    gaps, n_chance = _classify_groups(np.ascontiguousarray(x, dtype=np.float64), ef, ratio_f, ratio_b,
                                      float(threshold_sigma), peaks, lag_lo, lag_hi, crackle)
    return [(int(g0), int(g1)) for g0, g1 in gaps], int(n_chance)


def _toeplitz_inverse_filter(a: np.ndarray, n: int) -> np.ndarray:
    """Prediction-error matrix [shape=(n - p, n)]: row i computes e[i + p] from x[i .. i + p]."""
    p = len(a)
    c = np.r_[-a[::-1], 1.0]
    rows = np.arange(n - p)
    mat = np.zeros((n - p, n))
    for j in range(p + 1):
        mat[rows, rows + j] = c[j]
    return mat


def _local_ar(x: np.ndarray, bad: np.ndarray, lo: int, hi: int, order: int) -> np.ndarray | None:
    """Least-squares (covariance-method) AR fit on ``x[lo:hi]`` using only rows free of ``bad``,
    with the normal equations loaded by ``LSAR_LOADING`` of their mean diagonal."""
    win = np.lib.stride_tricks.sliding_window_view(x[lo:hi], order + 1)
    ok = ~np.lib.stride_tricks.sliding_window_view(bad[lo:hi], order + 1).any(axis=1)
    if ok.sum() < 3 * order:
        return None
    rows = win[ok]
    design = rows[:, -2::-1]  # x[n-1], ..., x[n-p]
    gram = design.T @ design
    gram[np.diag_indices(order)] += LSAR_LOADING * np.trace(gram) / order + 1e-30
    return np.linalg.solve(gram, design.T @ rows[:, -1])


def lsar_interpolate(x: np.ndarray, bad: np.ndarray, gap: tuple[int, int], order: int = CLICK_AR_ORDER
                     ) -> bool:
    """Replace ``x[gap[0]:gap[1]]`` in place by least-squares AR interpolation (Vaseghi/Godsill).

    The AR model is fitted on up to 256 clean frames either side; the unknowns
    minimise the prediction-error energy over the gap and ``2*order`` frames of
    context either side (other ``bad`` frames there are treated as unknown too).
    Returns False, leaving ``x`` unchanged, when there is too little context or
    when the interpolant peaks above twice the peak of its context (a failed model).
    """
    g0, g1 = gap
    a = _local_ar(x, bad, max(g0 - CLICK_FIT_CONTEXT_FRAMES, 0),
                  min(g1 + CLICK_FIT_CONTEXT_FRAMES, len(x)), order)
    s0, s1 = max(g0 - 2 * order, 0), min(g1 + 2 * order, len(x))
    if a is None or s1 - s0 - (g1 - g0) < 2 * order:
        return False
    unknown = bad[s0:s1].copy()
    unknown[g0 - s0: g1 - s0] = True
    mat = _toeplitz_inverse_filter(a, s1 - s0)
    seg = x[s0:s1]
    rhs = -mat[:, ~unknown] @ seg[~unknown]
    a_unknown = mat[:, unknown]
    gram = a_unknown.T @ a_unknown  # normal equations: well conditioned for an AR inverse filter
    gram[np.diag_indices_from(gram)] += 1e-12 * np.trace(gram) / len(gram)
    est = linalg.solve(gram, a_unknown.T @ rhs, assume_a="pos", check_finite=False)
    filled = seg.copy()
    filled[unknown] = est
    context_peak = np.abs(seg[~unknown]).max()
    if np.abs(filled[g0 - s0: g1 - s0]).max() > LSAR_MAX_OVERSHOOT * context_peak:
        return False  # an interpolant twice as loud as its surroundings is the model's failure
    x[g0:g1] = filled[g0 - s0: g1 - s0]
    return True


def click_threshold_sigma(strength: float) -> float:
    """Outlier threshold in robust deviations: 5 at strength 1, 10 at strength 0."""
    return 10.0 - 5.0 * strength


class ClickRemover:
    """Streaming click detector and LSAR repairer [blocks of shape=(n_channels, n_frames)].

    Detection and repair run per channel on a fixed grid of 8192-frame hops,
    each seen with 1024 frames of context either side, so the output does not
    depend on the block sizes. Clicks starting inside a hop, at most 96 frames
    (2 ms at 48 kHz) long, are repaired in a work buffer that later hops see
    (so a click is never repaired twice). ``process`` returns the aligned output
    lagging by at most ``latency_frames``; ``flush`` returns the rest.
    ``n_clicks_repaired`` counts repaired (channel, click) pairs; with
    ``keep_positions`` their ``(channel, start, stop)`` are kept in ``positions``.
    """

    latency_frames = CLICK_HOP_FRAMES + CLICK_CONTEXT_FRAMES

    def __init__(self, sample_rate_hz: int, n_channels: int, strength: float = 1.0,
                 order: int = CLICK_AR_ORDER, keep_positions: bool = False) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"click strength must be in [0, 1], got {strength}")
        self.sample_rate_hz = sample_rate_hz
        self.n_channels = n_channels
        self.strength = float(strength)
        self.order = order
        self.threshold_sigma = click_threshold_sigma(strength)
        self.n_clicks_repaired = 0
        self.positions: list[tuple[int, int, int]] | None = [] if keep_positions else None
        self._buf = np.zeros((n_channels, 0))
        self._buf_start = 0  # absolute frame index of self._buf[:, 0]
        self._n_in = 0
        self._next_hop = 0
        self._emitted = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Take one block; return the output frames that are final (aligned, float32)."""
        x = check_block(block, self.n_channels)
        self._buf = np.concatenate([self._buf, x], axis=1)
        self._n_in += x.shape[1]
        return self._advance(final=False)

    def flush(self) -> np.ndarray:
        """Process the held-back frames; returns them (aligned, float32)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> np.ndarray:
        while self._next_hop < self._n_in:
            if not final and self._next_hop + CLICK_HOP_FRAMES + CLICK_CONTEXT_FRAMES > self._n_in:
                break
            if self.strength > 0.0:
                self._process_hop(self._next_hop)
            self._next_hop += CLICK_HOP_FRAMES
        ready = min(self._next_hop, self._n_in)
        out = self._buf[:, self._emitted - self._buf_start: ready - self._buf_start]
        self._emitted = ready
        keep_from = max(self._next_hop - CLICK_CONTEXT_FRAMES, 0)
        self._buf = self._buf[:, keep_from - self._buf_start:]
        self._buf_start = keep_from
        return out.astype(np.float32)

    def _process_hop(self, hop_start: int) -> None:
        w0 = max(hop_start - CLICK_CONTEXT_FRAMES, 0)
        w1 = min(hop_start + CLICK_HOP_FRAMES + CLICK_CONTEXT_FRAMES, self._n_in)
        window = self._buf[:, w0 - self._buf_start: w1 - self._buf_start]  # a view: repairs land in _buf
        for ch in range(self.n_channels):
            self._repair_channel(window[ch], ch, w0, hop_start)

    def _repair_channel(self, x: np.ndarray, ch: int, w0: int, hop_start: int) -> None:
        """Detect and repair the clicks of one channel's window in place. Crackle (>= 4 clicks
        in the hop, counting those the loose periodicity test refused) skews the window's AR model and residual level toward itself, and gives
        its clicks chance partners at pitch lags, so a hop that dense is analysed again once
        its first repairs are in, with the stricter periodicity test."""
        crackle = False
        for _ in range(CLICK_MAX_PASSES):
            repaired, n_chance = self._repair_pass(x, ch, w0, hop_start, crackle)
            if repaired + n_chance < CLICK_CRACKLE_PER_HOP:
                break
            crackle = True

    def _repair_pass(self, x: np.ndarray, ch: int, w0: int, hop_start: int, crackle: bool) -> tuple[int, int]:
        gaps, n_chance = _detect(x, self.sample_rate_hz, self.order, self.threshold_sigma, crackle)
        bad = np.zeros(len(x), bool)
        for g0, g1 in gaps:
            bad[g0:g1] = True
        repaired = 0
        for g0, g1 in gaps:
            owned = hop_start <= w0 + g0 < hop_start + CLICK_HOP_FRAMES
            if owned and g1 - g0 <= CLICK_MAX_GAP_FRAMES and lsar_interpolate(x, bad, (g0, g1), self.order):
                bad[g0:g1] = False  # repaired samples are clean context for the next gap
                repaired += 1
                if self.positions is not None:
                    self.positions.append((ch, w0 + g0, w0 + g1))
        self.n_clicks_repaired += repaired
        return repaired, n_chance


