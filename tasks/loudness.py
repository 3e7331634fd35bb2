"""Loudness measurement (ITU-R BS.1770-4, EBU Tech 3341/3342) and normalisation.

Pure library code (no Prefect): a streaming meter for any channel count, a
speech-activity mask for dialogue-gated loudness, delivery presets, the
programme gain, a streaming look-ahead true-peak limiter and a pass/fail verdict.

Arrays are float ``(n_channels, n_frames)``. The meter keeps one float64 per
100 ms sub-block (0.6 MB for a two-hour film) plus filter state, so memory does
not depend on the block size and is tiny compared with the audio.

Streaming dialogue gating: feed the programme with :meth:`LoudnessMeter.process`
and, independently, the speech mask with :meth:`LoudnessMeter.process_speech`.
Both streams are aligned on the meter's 100 ms sub-block grid, counted from the
programme's first frame; :func:`speech_activity` returns exactly such a mask for
a block of the dialogue stem whose start lies on that grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.signal
from pyloudnorm.iirfilter import IIRfilter

from filmrestore.audio import iter_blocks, read_info
from filmrestore.errors import AudioFormatError, ConfigError, SilentProgrammeError

SUB_BLOCK_S = 0.1  # 100 ms: the common step of momentary and short-term (Tech 3341 §2.3)
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
_TRUE_PEAK_GAIN_BOUND = float(np.abs(_TRUE_PEAK_TAPS).sum(axis=0).max()) * 1.001  # float32 slack
_PEAK_CHUNK_FRAMES = 4096
_CHUNKS_PER_CALL = 128  # 128 x 4096 x 4 float32 = 8 MiB of oversampled signal at a time
# Phase p of input frame n estimates the signal at n - 5.875 + p / 4 (group delay 23.5 / 4).
TRUE_PEAK_DELAY_FRAMES = 6

LAYOUT_CHANNELS: dict[str, tuple[str, ...]] = {
    "mono": ("M",),
    "stereo": ("FL", "FR"),
    "5.1": ("FL", "FR", "FC", "LFE", "BL", "BR"),
    "7.1": ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
    "7.1.4": ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR", "TFL", "TFR", "TBL", "TBR"),
}
DEFAULT_LAYOUT_BY_COUNT = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1", 12: "7.1.4"}
# Azimuth of the channels in the named layouts whose weight is not 1.0 or that are LFE.
# 5.1 surrounds (BL/BR in WAV order) sit at +-110 deg (BS.775); in 7.1/7.1.4 BL/BR are the
# rears at +-135 deg and SL/SR the sides at +-90 deg (BS.2051 4+7+0).
_SURROUND_AZIMUTH_DEG = {"5.1": {"BL": 110.0, "BR": -110.0},
                         "7.1": {"BL": 135.0, "BR": -135.0, "SL": 90.0, "SR": -90.0}}
_SURROUND_AZIMUTH_DEG["7.1.4"] = _SURROUND_AZIMUTH_DEG["7.1"]


# ----------------------------------------------------------------------------- channel weights

def _weight_for(azimuth_deg: float, elevation_deg: float) -> float:
    """BS.1770-4 Table 3 / §2.4: 1.41 for 60 <= |azimuth| <= 120 deg below 30 deg elevation."""
    if elevation_deg < 30.0 and 60.0 <= abs(azimuth_deg) <= 120.0:
        return SURROUND_WEIGHT
    return 1.0


def channel_weights_for(n_channels: int, layout: str | None = None) -> np.ndarray:
    """BS.1770-4 channel weights G_i for a WAV-ordered layout. [shape=(n_channels,)]

    ``layout`` is one of :data:`LAYOUT_CHANNELS` (default: by channel count 1, 2, 6, 8, 12).
    LFE gets weight 0 (excluded, BS.1770-4 §2.4); heights get 1.0.
    """
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
    azimuths = _SURROUND_AZIMUTH_DEG.get(layout, {})
    weights = [0.0 if name == "LFE" else _weight_for(azimuths.get(name, 0.0), 0.0) for name in names]
    return np.asarray(weights, dtype=np.float64)


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


class TruePeakOversampler:
    """Streaming 4x interpolation with the BS.1770-4 Annex 2 FIR; state carried across blocks.

    Runs in float32 (2.3x faster than float64 in upfirdn; 1e-7 relative error on a peak).
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self._history = np.zeros((n_channels, _FIR_HISTORY_FRAMES), dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        """[shape=(C, T)] -> oversampled [shape=(C, T, 4)]; phase p of frame n uses x[n-11..n]."""
        n_frames = block.shape[1]
        extended = np.concatenate([self._history, block.astype(np.float32)], axis=1)
        self._history = extended[:, extended.shape[1] - _FIR_HISTORY_FRAMES:]
        upsampled = scipy.signal.upfirdn(_TRUE_PEAK_FIR, extended, up=OVERSAMPLING, axis=-1)
        start = _FIR_HISTORY_FRAMES * OVERSAMPLING  # first output whose 12 taps all see input
        steady = upsampled[:, start:start + OVERSAMPLING * n_frames]
        return steady.reshape(self.n_channels, n_frames, OVERSAMPLING)

    def frame_peaks(self, block: np.ndarray, floor: np.ndarray | float) -> np.ndarray:
        """Per-frame max |oversampled| over the 4 phases. [shape=(C, T)] float32

        Exact wherever it can exceed ``floor`` (per channel or scalar); elsewhere 0.
        """
        n_channels, n_frames = block.shape
        n_chunks = -(-n_frames // _PEAK_CHUNK_FRAMES)
        peaks = np.zeros((n_channels, n_chunks, _PEAK_CHUNK_FRAMES), np.float32)
        for rows, chunks, steady in self._iter_upsampled(block, floor):
            phases = [steady[:, p::OVERSAMPLING] for p in range(OVERSAMPLING)]
            peaks[rows, chunks] = np.maximum(np.maximum.reduce(phases), -np.minimum.reduce(phases))
        return peaks.reshape(n_channels, -1)[:, :n_frames]

    def channel_peaks(self, block: np.ndarray, floor: np.ndarray | float) -> np.ndarray:
        """Per-channel max |oversampled| of the block, exact where above ``floor``, else 0. [shape=(C,)]"""
        peaks = np.zeros(block.shape[0])
        for rows, _, steady in self._iter_upsampled(block, floor):
            np.maximum.at(peaks, rows, np.maximum(steady.max(axis=1), -steady.min(axis=1)))
        return peaks

    def _iter_upsampled(self, block: np.ndarray, floor: np.ndarray | float
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(channels, chunk indices, oversampled chunks) in groups that bound the memory."""
        padded, rows, chunks = self._advance(block, floor)
        for i in range(0, len(rows), _CHUNKS_PER_CALL):
            group = slice(i, i + _CHUNKS_PER_CALL)
            yield rows[group], chunks[group], self._upsample_chunks(padded, rows[group], chunks[group],
                                                                    block.shape[1])

    def _advance(self, block: np.ndarray, floor: np.ndarray | float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Take the block into the history; return it padded and the chunks that need work.

        Each phase's output is at most sum_k |h_k| (= 2.02) times the largest of its 12 inputs,
        so a chunk whose inputs all lie below floor / 2.02 cannot reach ``floor`` and is
        skipped: on programme material most of a film is, so the meter runs several times
        faster with an unchanged result.
        """
        n_channels, n_frames = block.shape
        n_chunks = -(-n_frames // _PEAK_CHUNK_FRAMES)
        padded = np.zeros((n_channels, _FIR_HISTORY_FRAMES + n_chunks * _PEAK_CHUNK_FRAMES), np.float32)
        padded[:, :_FIR_HISTORY_FRAMES] = self._history
        padded[:, _FIR_HISTORY_FRAMES:_FIR_HISTORY_FRAMES + n_frames] = block
        self._history = padded[:, n_frames:n_frames + _FIR_HISTORY_FRAMES].copy()
        chunk_max = np.abs(padded[:, _FIR_HISTORY_FRAMES:]).reshape(n_channels, n_chunks, -1).max(axis=2)
        history_max = np.abs(padded[:, :_FIR_HISTORY_FRAMES]).max(axis=1, initial=0.0)
        # Inputs of chunk i: its own frames and the 11 before them (in chunk i-1 or the history).
        inputs_max = np.maximum(chunk_max, np.concatenate([history_max[:, None], chunk_max[:, :-1]], 1))
        needed = _TRUE_PEAK_GAIN_BOUND * inputs_max > np.reshape(floor, (-1, 1))
        rows, chunks = np.nonzero(needed)
        return padded, rows, chunks

    @staticmethod
    def _upsample_chunks(padded: np.ndarray, rows: np.ndarray, chunks: np.ndarray,
                         n_frames: int) -> np.ndarray:
        """Oversampled steady-state output of the (channel, chunk) pairs. [shape=(K, 4 * chunk)]

        Outputs of the zero padding past the block's ``n_frames`` are set to 0 (the stream
        goes on with other samples there, so they must not count).
        """
        offsets = np.arange(_PEAK_CHUNK_FRAMES + _FIR_HISTORY_FRAMES)
        segments = padded[rows[:, None], chunks[:, None] * _PEAK_CHUNK_FRAMES + offsets]
        upsampled = scipy.signal.upfirdn(_TRUE_PEAK_FIR, segments, up=OVERSAMPLING, axis=-1)
        start = _FIR_HISTORY_FRAMES * OVERSAMPLING
        steady = upsampled[:, start:start + OVERSAMPLING * _PEAK_CHUNK_FRAMES]
        last_chunk, n_valid = divmod(n_frames, _PEAK_CHUNK_FRAMES)
        steady[chunks == last_chunk, OVERSAMPLING * n_valid:] = 0.0
        return steady

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
    """

    def __init__(self, sample_rate_hz: int, n_channels: int,
                 channel_weights: np.ndarray | list[float] | None = None) -> None:
        if sample_rate_hz <= 0 or n_channels <= 0:
            raise ConfigError(f"meter needs a positive rate and channel count, "
                              f"got {sample_rate_hz} Hz, {n_channels} channels")
        weights = channel_weights_for(n_channels) if channel_weights is None else channel_weights
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (n_channels,):
            raise ConfigError(f"{len(self.weights)} channel weights for {n_channels} channels")
        self.sample_rate_hz = sample_rate_hz
        self.n_channels = n_channels
        self.sub_block_frames = int(round(SUB_BLOCK_S * sample_rate_hz))
        self._sos = k_weighting_sos(sample_rate_hz)
        self._zi = np.zeros((self._sos.shape[0], n_channels, 2))
        self._partial_sum = np.zeros(n_channels)
        self._partial_frames = 0
        self._sub_power: list[np.ndarray] = []  # weighted sum_i G_i z_i per sub-block
        self._speech: list[np.ndarray] = []
        self._speech_given = False
        self._oversampler = TruePeakOversampler(n_channels)
        self._peak = np.zeros(n_channels)
        self.n_frames = 0

    def process(self, block: np.ndarray) -> None:
        """Add the next [shape=(n_channels, T)] block of the programme (linear full scale)."""
        if block.ndim != 2 or block.shape[0] != self.n_channels:
            raise ValueError(f"meter expects ({self.n_channels}, frames) blocks, got {block.shape}")
        if block.shape[1] == 0:
            return
        x = np.asarray(block, dtype=np.float64)
        self._update_peak(x)
        weighted, self._zi = scipy.signal.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        self._accumulate(weighted * weighted)
        self.n_frames += block.shape[1]

    def process_speech(self, speech: np.ndarray) -> None:
        """Append a boolean speech mask for the next sub-blocks (100 ms each) of the programme."""
        self._speech.append(np.asarray(speech, dtype=bool).reshape(-1))
        self._speech_given = True

    def _update_peak(self, x: np.ndarray) -> None:
        # BS.1770-4 Annex 2: 4x oversampled absolute peak; never below the sample peak.
        self._peak = np.maximum(self._peak, np.abs(x).max(axis=1))
        oversampled = self._oversampler.channel_peaks(x, self._peak)
        self._peak = np.maximum(self._peak, oversampled)

    def _accumulate(self, squares: np.ndarray) -> None:
        """Split squared K-weighted samples [shape=(C, T)] into 100 ms sub-block powers."""
        frames = self.sub_block_frames
        first = min(frames - self._partial_frames, squares.shape[1])
        self._partial_sum += squares[:, :first].sum(axis=1)
        self._partial_frames += first
        if self._partial_frames == frames:
            self._emit(self._partial_sum[:, None] / frames)
            self._partial_sum = np.zeros(self.n_channels)
            self._partial_frames = 0
        rest = squares[:, first:]
        n_full = rest.shape[1] // frames
        if n_full:
            full = rest[:, :n_full * frames].reshape(self.n_channels, n_full, frames)
            self._emit(full.sum(axis=2) / frames)
        remainder = rest[:, n_full * frames:]
        if remainder.shape[1]:
            self._partial_sum += remainder.sum(axis=1)
            self._partial_frames += remainder.shape[1]

    def _emit(self, mean_squares: np.ndarray) -> None:
        """Store sum_i G_i z_i (BS.1770-4 eq. 4) for sub-blocks [shape=(C, k)]."""
        self._sub_power.append(self.weights @ mean_squares)

    def sub_block_power(self) -> np.ndarray:
        """Weighted power of every complete 100 ms sub-block so far. [shape=(n_sub_blocks,)]"""
        return np.concatenate(self._sub_power) if self._sub_power else np.zeros(0)

    def true_peak_per_channel_dbtp(self) -> np.ndarray:
        """True peak per channel so far, including the interpolation tail, in dBTP."""
        peak = np.maximum(self._peak, self._oversampler.tail_peak())
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(peak)

    def result(self) -> LoudnessReport:
        """The report over everything processed so far."""
        sub_power = self.sub_block_power()
        momentary = _window_means(sub_power, MOMENTARY_SUB_BLOCKS)
        short_term = _window_means(sub_power, SHORT_TERM_SUB_BLOCKS)
        peaks_dbtp = self.true_peak_per_channel_dbtp()
        times_s, series = self._short_term_series(short_term)
        return LoudnessReport(
            integrated_lufs=gated_loudness(momentary),
            momentary_max_lufs=_max_loudness(momentary),
            short_term_max_lufs=_max_loudness(short_term),
            lra_lu=loudness_range(short_term),
            true_peak_dbtp=float(peaks_dbtp.max()),
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

@functools.lru_cache(maxsize=1)
def _vad_model() -> Any:
    """The silero-vad model shipped in its wheel (loaded once; no download)."""
    from silero_vad import load_silero_vad

    return load_silero_vad()


def _sub_block_levels_dbfs(dialogue: np.ndarray, sub_block_frames: int) -> np.ndarray:
    """Mean-square level of each complete sub-block, averaged over channels, in dBFS."""
    n_sub = dialogue.shape[1] // sub_block_frames
    frames = dialogue[:, :n_sub * sub_block_frames].astype(np.float64)
    power = (frames ** 2).reshape(dialogue.shape[0], n_sub, sub_block_frames).mean(axis=(0, 2))
    return _to_db(power)


def _vad_sub_blocks(dialogue: np.ndarray, sample_rate_hz: int, sub_block_frames: int) -> np.ndarray:
    """Sub-blocks that overlap a silero-vad speech segment (mono downmix at 16 kHz)."""
    import torch

    vad_rate_hz = 16000
    g = math.gcd(vad_rate_hz, sample_rate_hz)
    mono = dialogue.astype(np.float64).mean(axis=0)
    mono16k = scipy.signal.resample_poly(mono, vad_rate_hz // g, sample_rate_hz // g)
    segments = _speech_segments(torch.from_numpy(mono16k.astype(np.float32)), vad_rate_hz)
    n_sub = dialogue.shape[1] // sub_block_frames
    mask = np.zeros(n_sub, dtype=bool)
    for start, end in segments:
        first = int(start / vad_rate_hz / SUB_BLOCK_S)
        last = int(math.ceil(end / vad_rate_hz / SUB_BLOCK_S))
        mask[first:last] = True
    return mask


def _speech_segments(audio16k: Any, vad_rate_hz: int) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(audio16k, _vad_model(), sampling_rate=vad_rate_hz)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def speech_activity(dialogue: np.ndarray, sample_rate_hz: int, *, clear_margin_db: float = 20.0,
                    vad_margin_db: float = 10.0, floor_cap_dbfs: float = -50.0,
                    min_level_dbfs: float = -70.0) -> np.ndarray:
    """Per-100 ms speech mask of a dialogue stem block. [shape=(T // sub_block_frames,)] bool

    ``dialogue`` [shape=(C, T)]. The rule, per sub-block of level L (dBFS, mean over channels):

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
    floor_db = min(float(np.percentile(levels[np.isfinite(levels)], 10)), floor_cap_dbfs)
    clear = levels >= floor_db + clear_margin_db
    uncertain = (levels >= floor_db + vad_margin_db) & ~clear
    if uncertain.any():
        uncertain &= _vad_sub_blocks(dialogue, sample_rate_hz, sub_block_frames)
    return (clear | uncertain) & audible


def iter_speech_activity(path: str | Path, block_s: float = 60.0) -> Iterator[np.ndarray]:
    """Speech masks of a dialogue stem file, block by block on the 100 ms grid."""
    info = read_info(path)
    sub_block_frames = int(round(SUB_BLOCK_S * info.sample_rate_hz))
    block_frames = max(1, int(block_s / SUB_BLOCK_S)) * sub_block_frames
    for block in iter_blocks(path, block_frames):
        yield speech_activity(block, info.sample_rate_hz)


# ----------------------------------------------------------------------------- measuring

def measure_array(x: np.ndarray, sample_rate_hz: int, layout: str | None = None,
                  speech: np.ndarray | None = None,
                  channel_weights: np.ndarray | list[float] | None = None) -> LoudnessReport:
    """Measure a whole [shape=(C, T)] array (``speech``: optional per-100 ms mask).

    Weights come from ``channel_weights`` if given, else from ``layout`` / the channel count.
    """
    x = np.atleast_2d(x)
    if channel_weights is None:
        channel_weights = channel_weights_for(x.shape[0], layout)
    meter = LoudnessMeter(sample_rate_hz, x.shape[0], channel_weights)
    meter.process(x)
    if speech is not None:
        meter.process_speech(speech)
    return meter.result()


def measure_file(path: str | Path, block_frames: int = 480_000, layout: str | None = None,
                 dialogue_path: str | Path | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> LoudnessReport:
    """Stream a WAV/BW64 file through the meter; with ``dialogue_path``, also dialogue-gate.

    ``on_progress(done_frames, total_frames)`` is called after each block.
    """
    info = read_info(path)
    if info.n_frames == 0:
        raise AudioFormatError(path, "has no samples to measure")
    meter = LoudnessMeter(info.sample_rate_hz, info.n_channels,
                          channel_weights_for(info.n_channels, layout))
    for block in iter_blocks(path, block_frames):
        meter.process(block)
        if on_progress is not None:
            on_progress(meter.n_frames, info.n_frames)
    if dialogue_path is not None:
        _check_same_rate(info.sample_rate_hz, dialogue_path)
        for mask in iter_speech_activity(dialogue_path):
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
    """A streaming delay line of ``n_frames`` along the last axis."""

    def __init__(self, shape: tuple[int, ...], n_frames: int) -> None:
        self._buffer = np.zeros((*shape, n_frames))
        self._n_frames = n_frames

    def process(self, x: np.ndarray) -> np.ndarray:
        extended = np.concatenate([self._buffer, x], axis=-1)
        self._buffer = extended[..., extended.shape[-1] - self._n_frames:]
        return extended[..., :x.shape[-1]]


class _SlidingMax:
    """Causal max over the last ``n_frames`` values (O(n) per block via scipy.ndimage)."""

    def __init__(self, n_frames: int) -> None:
        self._n_frames = n_frames
        self._history = np.zeros(n_frames - 1)

    def process(self, x: np.ndarray) -> np.ndarray:
        from scipy.ndimage import maximum_filter1d

        extended = np.concatenate([self._history, x])
        self._history = extended[len(extended) - (self._n_frames - 1):]
        # origin shifts the centred window so that out[i] = max(extended[i - n + 1 .. i]).
        out = maximum_filter1d(extended, self._n_frames, origin=(self._n_frames - 1) // 2)
        return out[self._n_frames - 1:]


class _SlidingMean:
    """Causal mean over the last ``n_frames`` values, state carried across blocks."""

    def __init__(self, n_frames: int) -> None:
        self._n_frames = n_frames
        self._history = np.zeros(n_frames - 1)

    def process(self, x: np.ndarray) -> np.ndarray:
        extended = np.concatenate([self._history, x])
        self._history = extended[len(extended) - (self._n_frames - 1):]
        csum = np.concatenate([[0.0], np.cumsum(extended)])
        return (csum[self._n_frames:] - csum[:-self._n_frames]) / self._n_frames


class _Release:
    """att[n] = max(hold[n], c * att[n-1]): instant attack, exponential release in dB."""

    def __init__(self, release_frames: float) -> None:
        self._log_c = -1.0 / release_frames
        self._last = 0.0

    def process(self, hold: np.ndarray) -> np.ndarray:
        # Closed form, vectorised: att[n] = max(c^(n+1) last, max_k<=n hold[k] c^(n-k)).
        n = np.arange(len(hold))
        with np.errstate(divide="ignore"):
            scaled = np.log(hold) - n * self._log_c
            carried = np.log(self._last) + self._log_c if self._last > 0 else -np.inf
        best = np.maximum.accumulate(scaled)
        out = np.exp(np.maximum(best + n * self._log_c, carried + n * self._log_c))
        if len(out):
            self._last = float(out[-1])
        return out


class TruePeakLimiter:
    """Streaming look-ahead true-peak limiter, gain linked across channels.

    Detector: the BS.1770-4 Annex 2 4x oversampled peak (and the sample peak) around each
    frame. Required attenuation a[n] = max(0, peak_db - (ceiling - margin)); held at its max
    over the look-ahead, released exponentially (``release_ms`` time constant, in dB), then
    smoothed by a moving average as long as the look-ahead, so the gain is down before
    the peak arrives and never above the requirement of any frame. Output is delayed by
    :attr:`latency_frames`; call :meth:`flush` at the end for the last frames.
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
        self._oversampler = TruePeakOversampler(n_channels)
        self._previous_os_peak = _Delay((), 1)
        self._sample_peak = _Delay((), TRUE_PEAK_DELAY_FRAMES)
        self._audio = _Delay((n_channels,), self.latency_frames)
        self._hold = _SlidingMax(self.lookahead_frames)
        self._release = _Release(release_ms * sample_rate_hz / 1000)
        self._smooth = _SlidingMean(self.lookahead_frames)

    def _required_attenuation_db(self, x: np.ndarray) -> np.ndarray:
        """Per frame n: attenuation needed by sample x[n - 6] and its two inter-sample spans."""
        os_peak = self._oversampler.frame_peaks(x, self._threshold_lin).max(axis=0).astype(np.float64)
        peak = np.maximum(os_peak, self._previous_os_peak.process(os_peak))
        peak = np.maximum(peak, self._sample_peak.process(np.abs(x).max(axis=0)))
        with np.errstate(divide="ignore"):
            return np.maximum(20.0 * np.log10(peak) - self._threshold_db, 0.0)

    def gain_db(self, x: np.ndarray) -> np.ndarray:
        """Advance the detector by [shape=(C, T)] and return the gain for the delayed frames."""
        attenuation_db = self._smooth.process(self._release.process(
            self._hold.process(self._required_attenuation_db(x))))
        return -attenuation_db

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit [shape=(C, T)] -> [shape=(C, T)] float32, delayed by ``latency_frames``."""
        if block.ndim != 2 or block.shape[0] != self.n_channels:
            raise ValueError(f"limiter expects ({self.n_channels}, frames) blocks, got {block.shape}")
        if block.shape[1] == 0:
            return np.zeros((self.n_channels, 0), np.float32)
        x = np.asarray(block, dtype=np.float64)
        gain = 10.0 ** (self.gain_db(x) / 20.0)
        return (self._audio.process(x) * gain).astype(np.float32)

    def flush(self) -> np.ndarray:
        """The last ``latency_frames`` frames of output. [shape=(C, latency_frames)]"""
        return self.process(np.zeros((self.n_channels, self.latency_frames)))
