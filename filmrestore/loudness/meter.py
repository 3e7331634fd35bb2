"""The streaming loudness meter (ITU-R BS.1770-4, EBU Tech 3341/3342) and its report.

A meter for any channel count: integrated, momentary and short-term loudness, loudness
range, true peak per channel and, given a speech mask, dialogue-gated loudness.

Arrays are float ``(n_channels, n_frames)``. The meter keeps one float64 per
10 ms (5.8 MB for a two-hour film) plus filter state, so memory does not depend
on the block size and is tiny compared with the audio. Its per-sample work (K
filter, squares, true peak) runs in numba kernels, two channel groups on two
threads; ``true_peak=False`` skips the true peak for callers that only need loudness.

Streaming dialogue gating: feed the programme with :meth:`LoudnessMeter.process`
and, independently, the speech mask with :meth:`LoudnessMeter.process_speech`.
Both streams are aligned on the meter's 100 ms sub-block grid, counted from the
programme's first frame; :func:`filmrestore.loudness.speech.speech_activity` returns exactly such a mask for
a block of the dialogue stem whose start lies on that grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from filmrestore.errors import ConfigError
from filmrestore.loudness.channels import channel_weights_for
from filmrestore.loudness.kernels import (
    FIR_HISTORY_FRAMES,
    TAPS_F64,
    TRUE_PEAK_GAIN_BOUND,
    TruePeakOversampler,
    as_kernel_input,
    k_weighting_sos,
    meter_kernel,
    run_over_channels,
)

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

# ----------------------------------------------------------------------------- report

def to_db(power: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


def _loudness(mean_square: np.ndarray | float) -> np.ndarray | float:
    """BS.1770-4 eq. 2/4: L = -0.691 + 10 log10(sum_i G_i z_i)."""
    return LOUDNESS_OFFSET_DB + to_db(mean_square)


def finite_or_none(value: float | None) -> float | None:
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
    #: Share of the gating blocks above the absolute gate that are speech (None without a mask).
    dialogue_share: float | None = None
    short_term_series_s: list[float] = field(default_factory=list, repr=False)
    short_term_series_lufs: list[float] = field(default_factory=list, repr=False)
    #: The loudest momentary (400 ms) value of each second (time = the second's end).
    momentary_series_s: list[float] = field(default_factory=list, repr=False)
    momentary_series_lufs: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no series); -inf becomes None."""
        return {
            "integrated_lufs": finite_or_none(self.integrated_lufs),
            "momentary_max_lufs": finite_or_none(self.momentary_max_lufs),
            "short_term_max_lufs": finite_or_none(self.short_term_max_lufs),
            "lra_lu": finite_or_none(self.lra_lu),
            "true_peak_dbtp": finite_or_none(self.true_peak_dbtp),
            "true_peak_per_channel_dbtp": [finite_or_none(v) for v in self.true_peak_per_channel_dbtp],
            "dialogue_lufs": finite_or_none(self.dialogue_lufs),
            "dialogue_share": finite_or_none(self.dialogue_share),
            "channels": int(self.channels),
            "duration_s": round(float(self.duration_s), 6),
        }

    def series_to_dict(self) -> dict[str, list[float | None]]:
        """Short-term loudness at 1 s steps (time = end of each 3 s window) and the momentary
        maximum of each second, for plots."""
        return {"time_s": [round(t, 3) for t in self.short_term_series_s],
                "short_term_lufs": [finite_or_none(v) for v in self.short_term_series_lufs],
                "momentary_time_s": [round(t, 3) for t in self.momentary_series_s],
                "momentary_max_lufs": [finite_or_none(v) for v in self.momentary_series_lufs]}


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
        self._tp_history = np.zeros((n_channels, FIR_HISTORY_FRAMES))
        self._peak = np.zeros(n_channels)
        self.n_frames = 0

    def process(self, block: np.ndarray) -> None:
        """Add the next [shape=(n_channels, T)] block of the programme (linear full scale)."""
        if block.ndim != 2 or block.shape[0] != self.n_channels:
            raise ValueError(f"meter expects ({self.n_channels}, frames) blocks, got {block.shape}")
        if block.shape[1] == 0:
            return
        x = as_kernel_input(block)
        n_complete = (self._partial_frames + x.shape[1]) // self._fine_frames
        mean_squares = np.empty((self.n_channels, n_complete))
        run_over_channels(meter_kernel, x, self._sos, self._zi, self._fine_frames,
                           self._partial_frames, self._partial_sum, mean_squares, self.true_peak,
                           TAPS_F64, TRUE_PEAK_GAIN_BOUND, self._tp_history, self._peak)
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
        momentary_s, momentary_series = self._momentary_series(momentary)
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
            dialogue_share=self._dialogue_share(momentary),
            short_term_series_s=times_s,
            short_term_series_lufs=series,
            momentary_series_s=momentary_s,
            momentary_series_lufs=momentary_series,
        )

    def _short_term_series(self, short_term: np.ndarray) -> tuple[list[float], list[float]]:
        """Short-term values whose 3 s window ends on a whole second."""
        ends = np.arange(len(short_term)) + SHORT_TERM_SUB_BLOCKS
        on_second = ends % round(1 / SUB_BLOCK_S) == 0
        times_s = (ends[on_second] * SUB_BLOCK_S).tolist()
        return times_s, [float(v) for v in _loudness(short_term[on_second])]

    def _momentary_series(self, momentary: np.ndarray) -> tuple[list[float], list[float]]:
        """The loudest momentary block ending in each second (0, 1], (1, 2], ...: (ends_s, LUFS)."""
        if not len(momentary):
            return [], []
        per_second = round(1 / SUB_BLOCK_S)
        ends = np.arange(len(momentary)) + MOMENTARY_SUB_BLOCKS  # in sub-blocks
        second = (ends - 1) // per_second  # 0-based second each block ends in
        n = int(second[-1]) + 1
        peak = np.zeros(n)
        np.maximum.at(peak, second, momentary)
        return [float(k + 1) for k in range(n)], [float(v) for v in _loudness(peak)]

    def _speech_active(self, momentary: np.ndarray) -> np.ndarray | None:
        """Per gating block, whether it is speech-active; None when no mask was given."""
        if not self._speech_given:
            return None
        mask = np.zeros(len(momentary) + MOMENTARY_SUB_BLOCKS - 1, dtype=bool)
        given = np.concatenate(self._speech)[:len(mask)]
        mask[:len(given)] = given
        return _speech_blocks(mask, len(momentary))

    def _dialogue_loudness(self, momentary: np.ndarray) -> float | None:
        """Integrated loudness over speech-active gating blocks (same gates); None if no speech."""
        active = self._speech_active(momentary)
        if active is None:
            return None
        value = gated_loudness(momentary[active])
        return value if math.isfinite(value) else None

    def _dialogue_share(self, momentary: np.ndarray) -> float | None:
        """Share of the gating blocks above the absolute gate that are speech-active."""
        active = self._speech_active(momentary)
        if active is None:
            return None
        audible = _loudness(momentary) > ABSOLUTE_GATE_LUFS
        return float((active & audible).sum() / audible.sum()) if audible.any() else 0.0
