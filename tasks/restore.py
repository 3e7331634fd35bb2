"""Stage 2, restore: detect and remove the legacy damage of optical and magnetic tracks.

Three kinds of damage, each detected and measured before anything is applied, so
a clean input passes through untouched (and, for a two-channel transfer of a mono
track, a lost side or a reversed polarity: :func:`detect_channel_faults`):

- **hum** (:func:`detect_hum`, :class:`HumRemover`): mains hum at 50 or 60 Hz and
  its harmonics, found as narrow peaks of a long-term Welch spectrum and removed
  by narrow IIR notches at the measured frequencies;
- **clicks** (:class:`ClickRemover`): impulses found as outliers of the forward
  *and* backward linear-prediction residual against a robust running level
  (median absolute deviation), kept only when impulsive (residual energy in a few
  frames), not recurring at a pitch period and at most 1.25 ms long, spanned from
  the first forward to the last backward outlier, and repaired by least-squares
  AR interpolation (LSAR);
- **hiss** (:func:`detect_hiss`, :class:`Dehisser`): a stationary broadband noise
  floor estimated from the quietest frames (10th percentile per bin, median per
  1/3-octave band), reduced by a smoothed spectral-subtraction gain with a gain
  floor.

:func:`plan_restoration` decides what to apply from what it finds, a
:class:`Restorer` chains the processors, and :func:`restore_file` streams a file
through them. Every processor streams: ``process(block)`` returns the output
*aligned* with the input (sample ``n`` out belongs to sample ``n`` in) but
possibly lagging behind it; ``flush()`` returns the rest, so the outputs
concatenated have exactly the input's length and no time shift, and equal the
whole-signal output whatever the block sizes.

Arrays are float32 ``(n_channels, n_frames)``; the processing runs in float64.
The stage's thin Prefect wrapper is at the end of the module.
Levels in dBFS are RMS relative to amplitude 1.0 (a full-scale sine reads -3 dBFS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numba
import numpy as np
from prefect import task
from scipy import linalg, ndimage, signal

from filmrestore.audio import AudioWriter, iter_blocks, read_audio, read_info
from filmrestore.errors import ConfigError, EmptyAudioError
from filmrestore.manifest import FileRecord, StageManifest
from filmrestore.tasks.common import log_stage, progress_reporter, run_stage, task_options

Progress = Callable[[int, int], None]
Sample = np.ndarray | Sequence[np.ndarray]

# --- detection rules (each detector's docstring states its rule) ----------------------
HUM_MAINS_HZ = (50.0, 60.0)
HUM_MAX_DRIFT_HZ = 0.5  # the fundamental may sit anywhere within +-0.5 Hz of nominal
HUM_MAX_HARMONICS = 8
HUM_CONSISTENCY_HZ = 0.05  # harmonic k's peak / k agrees with the series' fundamental within this
HUM_MIN_LEVEL_DB = 10.0  # peak above the neighbouring floor, at f0 or at >= 2 harmonics
HUM_LOWEST_HARMONIC = 3  # without the fundamental, the 2nd or 3rd harmonic must be among them
HUM_NOTCH_BANDWIDTH_HZ = 1.5  # -3 dB width of each notch section (two sections per harmonic)
CLICK_MIN_COUNT = 3  # apply the declicker when >= 3 clicks and >= 6 per minute were found
CLICK_MIN_RATE_PER_MIN = 6.0
HISS_MIN_FLOOR_DBFS = -80.0  # 16-bit TPDF dither is about -96 dBFS: -80 is clearly above it
HISS_MAX_SPREAD_DB = 6.0  # floor estimates of time slices must agree within 6 dB (stationary)
HISS_MIN_HEADROOM_DB = 15.0  # programme (90th percentile) at least 15 dB above the floor
HISS_MIN_FLATNESS = 0.1  # broadband: white noise 1.0, pink 0.3, leakage of steady tones ~1e-5
HISS_MIN_EXPOSED_BANDS = 4  # the floor shows in >= 4 third-octave bands (4/3 octave) at least
CHANNEL_DEAD_DB = 40.0  # a stereo channel this far under the other, ...
CHANNEL_DEAD_DBFS = -60.0  # ... and under -60 dBFS, is dead (a transfer that lost a side)
CHANNEL_POLARITY_CORRELATION = -0.7  # two sides this anti-correlated, within 3 dB, carry one track
CHANNEL_POLARITY_MAX_DIFF_DB = 3.0  # with one polarity reversed (a wiring fault of the transfer)
DETECT_SPAN_S = 60.0
DETECT_N_SEGMENTS = 6


# =====================================================================================
# Hum
# =====================================================================================


@dataclass(frozen=True)
class HumReport:
    """Mains hum found in a signal.

    ``fundamental_hz`` is the nominal mains frequency (50.0, 60.0) or None;
    ``fundamental_exact_hz`` the measured one. ``harmonics_hz`` are the measured
    frequencies of the detected harmonics, ``levels_db_above_floor`` their peak
    heights above the neighbouring spectrum floor, ``harmonic_numbers`` their k.
    """

    fundamental_hz: float | None
    harmonics_hz: list[float] = field(default_factory=list)
    levels_db_above_floor: list[float] = field(default_factory=list)
    fundamental_exact_hz: float | None = None
    harmonic_numbers: list[int] = field(default_factory=list)
    level_dbfs: float | None = None  # RMS of the strongest detected harmonic


def _as_segments(x: Sample) -> list[np.ndarray]:
    """An array or a list of arrays -> list of float64 ``(n_channels, n_frames)`` segments."""
    segments = [x] if isinstance(x, np.ndarray) else list(x)
    out = [np.asarray(s, dtype=np.float64) for s in segments]
    for s in out:
        if s.ndim != 2:
            raise ValueError(f"expected (n_channels, n_frames) arrays, got shape {s.shape}")
    return out


def long_term_spectrum(x: Sample, sample_rate_hz: int, resolution_hz: float = 0.75
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Welch power spectral density averaged over channels and segments.

    Segments of ``1/resolution_hz`` seconds (Hann, 50 % overlap), zero-padded
    four times so that peak frequencies interpolate to a few hundredths of a Hz.
    Returns ``(freqs_hz [n_bins], psd [n_bins] in 1/Hz)``, or None when no
    segment lasts the 0.25 s needed to resolve mains harmonics.
    """
    nperseg = int(2 ** np.ceil(np.log2(sample_rate_hz / resolution_hz)))
    psd_sum, weight = None, 0
    for seg in _as_segments(x):
        n = min(nperseg, seg.shape[1])
        if n < sample_rate_hz // 4:
            continue  # too short to resolve mains harmonics
        freqs, psd = signal.welch(seg, sample_rate_hz, "hann", nperseg=n, nfft=4 * nperseg, axis=-1)
        psd_sum = psd.mean(axis=0) * seg.shape[1] + (0 if psd_sum is None else psd_sum)
        weight += seg.shape[1]
    return None if psd_sum is None else (freqs, psd_sum / weight)


def _interpolated_peak(freqs: np.ndarray, psd_db: np.ndarray, lo_hz: float, hi_hz: float
                       ) -> tuple[float, float]:
    """Frequency and level (dB) of the largest peak in ``[lo_hz, hi_hz]``, parabolic fit."""
    idx = np.flatnonzero((freqs >= lo_hz) & (freqs <= hi_hz))
    i = idx[np.argmax(psd_db[idx])]
    a, b, c = psd_db[i - 1], psd_db[i], psd_db[i + 1]
    denom = a - 2 * b + c
    delta = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return freqs[i] + delta * (freqs[1] - freqs[0]), b - 0.25 * (a - c) * delta


def _harmonic_candidates(freqs: np.ndarray, psd_db: np.ndarray, nominal_hz: float
                         ) -> list[tuple[int, float, float, float]]:
    """For k = 1..8: (k, peak_hz, peak level above floor dB, peak level dB) near k*nominal.

    The search window is ``k*(nominal +- 0.5 Hz)``; the floor is the median of the
    spectrum in 6 Hz rings either side, starting 1.5 Hz (the Hann main lobe)
    outside the search window.
    """
    out = []
    for k in range(1, HUM_MAX_HARMONICS + 1):
        lo, hi = k * (nominal_hz - HUM_MAX_DRIFT_HZ), k * (nominal_hz + HUM_MAX_DRIFT_HZ)
        if hi + 8.0 >= freqs[-1]:
            break
        peak_hz, peak_db = _interpolated_peak(freqs, psd_db, lo, hi)
        ring = ((freqs > lo - 7.5) & (freqs < lo - 1.5)) | ((freqs > hi + 1.5) & (freqs < hi + 7.5))
        out.append((k, peak_hz, peak_db - float(np.median(psd_db[ring])), peak_db))
    return out


def _consistent(found: list[tuple[int, float, float, float]]) -> list[tuple[int, float, float, float]]:
    """The candidates whose peaks sit on one harmonic series: peak_k / k within
    ``HUM_CONSISTENCY_HZ`` of the median of peak_k / k. Mains hum is exactly periodic, so its
    harmonics agree to a few hundredths of a Hz; musical notes that happen to fall within
    +-0.5 Hz of a multiple of 50 or 60 Hz do not."""
    if len(found) < 2:
        return found
    f0 = float(np.median([c[1] / c[0] for c in found]))
    return [c for c in found if abs(c[1] / c[0] - f0) <= HUM_CONSISTENCY_HZ]


def _stationary(found: list[tuple[int, float, float, float]], x: Sample, sample_rate_hz: int
                ) -> list[tuple[int, float, float, float]]:
    """The harmonics that stand >= ``HUM_MIN_LEVEL_DB - 3`` dB above the floor in each third
    of the sample too (mains hum lasts; a held note or a drone in the music rarely does),
    and whose series' fundamental lies within +-0.5 Hz of the nominal frequency."""
    if not found:
        return found
    f0 = float(np.median([c[1] / c[0] for c in found]))
    if all(abs(f0 - nominal) > HUM_MAX_DRIFT_HZ for nominal in HUM_MAINS_HZ):
        return []
    thirds = [[seg[:, i * seg.shape[1] // 3:(i + 1) * seg.shape[1] // 3] for seg in _as_segments(x)]
              for i in range(3)]
    kept = list(found)
    for part in thirds:
        spectrum = long_term_spectrum(part, sample_rate_hz)
        if spectrum is None:
            return found  # too short to split: keep the whole-sample decision
        freqs, psd = spectrum
        psd_db = 10.0 * np.log10(psd + 1e-30)
        candidates = {c[0]: c for c in _harmonic_candidates(freqs, psd_db, round(f0 / 10) * 10.0)}
        kept = [c for c in kept if c[0] in candidates and candidates[c[0]][2] >= HUM_MIN_LEVEL_DB - 3.0]
    return kept


def _qualifies(found: list[tuple[int, float, float, float]]) -> bool:
    """A mains series: its fundamental, or >= 2 harmonics of which one is the 2nd or 3rd
    (transformer and rectifier fields always carry them; two high partials alone are the
    spurs of a tone's quantisation or a note's overtones)."""
    numbers = [c[0] for c in found]
    return 1 in numbers or (len(numbers) >= 2 and min(numbers) <= HUM_LOWEST_HARMONIC)


def detect_hum(x: Sample, sample_rate_hz: int) -> HumReport:
    """Detect mains hum in ``x`` [shape=(n_channels, n_frames)] (or a list of such segments).

    Rule: a harmonic is detected when its peak stands >= 10 dB above the
    neighbouring spectrum floor and lies on the series of the others (peak / k
    within 0.05 Hz of their median, see :func:`_consistent`); hum at a nominal frequency (50 or 60 Hz) is
    present when the fundamental, or at least two harmonics including the 2nd or
    3rd, are detected. When
    both qualify, the one with the larger summed peak heights wins. The exact
    fundamental is the median of ``peak_k / k`` over the detected harmonics.
    """
    spectrum = long_term_spectrum(x, sample_rate_hz)
    if spectrum is None:
        return HumReport(None)
    freqs, psd = spectrum
    psd_db = 10.0 * np.log10(psd + 1e-30)
    best: tuple[float, list[tuple[int, float, float, float]]] | None = None
    for nominal in HUM_MAINS_HZ:
        found = _consistent(
            [c for c in _harmonic_candidates(freqs, psd_db, nominal) if c[2] >= HUM_MIN_LEVEL_DB])
        qualifies = _qualifies(found)
        score = sum(c[2] for c in found)
        if qualifies and (best is None or score > sum(c[2] for c in best[1])):
            best = (nominal, found)
    if best is not None:
        best = (best[0], _stationary(best[1], x, sample_rate_hz))
        if not _qualifies(best[1]):
            best = None
    if best is None:
        return HumReport(None)
    nominal, found = best
    # A sinusoid's power is its PSD peak height times the window's noise bandwidth.
    strongest_db = max(c[3] for c in found) + 10.0 * np.log10(_welch_enbw_hz(sample_rate_hz))
    return HumReport(
        fundamental_hz=nominal,
        harmonics_hz=[round(float(c[1]), 4) for c in found],
        levels_db_above_floor=[round(float(c[2]), 2) for c in found],
        fundamental_exact_hz=round(float(np.median([c[1] / c[0] for c in found])), 4),
        harmonic_numbers=[int(c[0]) for c in found],
        level_dbfs=round(float(strongest_db), 2),
    )


def _welch_enbw_hz(sample_rate_hz: int, resolution_hz: float = 0.75) -> float:
    """Equivalent noise bandwidth of the Hann window used by :func:`long_term_spectrum`."""
    nperseg = int(2 ** np.ceil(np.log2(sample_rate_hz / resolution_hz)))
    return 1.5 * sample_rate_hz / nperseg


def _check_block(block: np.ndarray, n_channels: int) -> np.ndarray:
    """Validate a ``(n_channels, n_frames)`` block and return it as float64."""
    if block.ndim != 2 or block.shape[0] != n_channels:
        raise ValueError(f"expected a ({n_channels}, n_frames) block, got shape {block.shape}")
    return np.asarray(block, dtype=np.float64)


class HumRemover:
    """Streaming mains-hum notch filter [blocks of shape=(n_channels, n_frames)].

    Each harmonic gets two cascaded ``iirnotch`` sections of -3 dB width
    ``bandwidth_hz`` (1.5 Hz by default: 30 dB of attenuation holds within
    +-0.13 Hz of the centre, and the programme loses only 1.5 Hz per harmonic).
    The notches sit at ``harmonics_hz`` (the measured, detected harmonics) or,
    when that is None, at ``k * fundamental_hz`` for k = 1..n_harmonics.
    ``strength`` in [0, 1] blends: ``y = x - strength * (x - notched(x))``.
    Zero latency; the filter state is carried from block to block.
    """

    latency_frames = 0

    def __init__(self, sample_rate_hz: int, n_channels: int, fundamental_hz: float, n_harmonics: int,
                 strength: float = 1.0, harmonics_hz: Sequence[float] | None = None,
                 bandwidth_hz: float = HUM_NOTCH_BANDWIDTH_HZ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"hum strength must be in [0, 1], got {strength}")
        if harmonics_hz is None:
            harmonics_hz = [k * fundamental_hz for k in range(1, n_harmonics + 1)]
        freqs = [f for f in harmonics_hz if 0.0 < f < 0.45 * sample_rate_hz]
        self.n_channels = n_channels
        self.strength = float(strength)
        self.harmonics_hz = freqs
        self._sos = self._design(freqs, sample_rate_hz, bandwidth_hz)
        self._zi = np.zeros((len(self._sos), n_channels, 2))  # silence before the first block

    @staticmethod
    def _design(freqs_hz: Sequence[float], sample_rate_hz: int, bandwidth_hz: float) -> np.ndarray:
        sections = []
        for f in freqs_hz:
            b, a = signal.iirnotch(f, f / bandwidth_hz, fs=sample_rate_hz)
            sections += [np.r_[b, a]] * 2
        return np.array(sections).reshape(-1, 6)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Filter one block; returns the same number of frames, float32."""
        x = _check_block(block, self.n_channels)
        if not len(self._sos) or self.strength == 0.0 or x.shape[1] == 0:
            return x.astype(np.float32)
        y, self._zi = signal.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        if self.strength < 1.0:
            y = x - self.strength * (x - y)
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """Nothing is held back: an empty ``(n_channels, 0)`` array."""
        return np.zeros((self.n_channels, 0), np.float32)


# =====================================================================================
# Clicks
# =====================================================================================

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


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return signal.windows.hann(n, sym=False)


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
    r = _autocorrelation(x * _hann(len(x)), order)
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
        x = _check_block(block, self.n_channels)
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


# =====================================================================================
# Hiss
# =====================================================================================

HISS_N_FFT = 2048  # 43 ms frames at 48 kHz: the noise profile is per bin of this transform
HISS_DETECT_HOP = 1024
HISS_BAND_LOW_HZ = 100.0  # below this lies hum and programme rumble, not hiss
HISS_BANDS_PER_OCTAVE = 3
HISS_QUANTILE = 0.10  # the quietest 10 % of frames in each band
HISS_N_SLICES = 4  # stationarity: floor estimates of 4 time slices must agree
DEHISS_SMOOTHING = 0.5  # recursive smoothing of the frame power, against musical noise
DEHISS_MAX_REDUCTION_DB = 12.0  # at strength 1; the gain never falls below this


@dataclass(frozen=True)
class HissReport:
    """A stationary broadband noise floor and whether it qualifies for dehissing.

    ``floor_dbfs`` is the RMS of the estimated noise above 100 Hz (loudest
    channel); ``spread_db`` how far the floor estimates of time slices disagree;
    ``headroom_db`` how far the programme (90th percentile of frame power)
    stands above the floor; ``flatness`` the spectral flatness (geometric over
    arithmetic mean) of the floor across 1/3-octave bands.
    ``noise_psd`` [shape=(n_channels, n_fft/2+1)] is the
    noise power per bin of a Hann-windowed ``n_fft`` frame, for :class:`Dehisser`.
    """

    floor_dbfs: float
    spread_db: float
    headroom_db: float
    flatness: float
    detected: bool
    noise_psd: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((1, 0)))
    n_fft: int = HISS_N_FFT

    def to_dict(self) -> dict[str, Any]:
        return {"floor_dbfs": self.floor_dbfs, "spread_db": self.spread_db,
                "headroom_db": self.headroom_db, "flatness": self.flatness, "detected": self.detected}


def _frame_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 of ``x`` [shape=(n_channels, n)] -> [shape=(n_channels, n_frames, n_fft/2+1)]."""
    if x.shape[1] < n_fft:
        return np.zeros((x.shape[0], 0, n_fft // 2 + 1))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    spec = np.fft.rfft(frames * _hann(n_fft), axis=-1)
    return spec.real ** 2 + spec.imag ** 2


def _bands(sample_rate_hz: int, n_fft: int) -> tuple[np.ndarray, int]:
    """Band index of each rfft bin (-1 outside 100 Hz..20 kHz) and the number of bands."""
    top_hz = min(20000.0, 0.5 * sample_rate_hz)
    n_bands = int(np.floor(np.log2(top_hz / HISS_BAND_LOW_HZ) * HISS_BANDS_PER_OCTAVE))
    edges = HISS_BAND_LOW_HZ * 2.0 ** (np.arange(n_bands + 1) / HISS_BANDS_PER_OCTAVE)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    band = np.digitize(freqs, edges) - 1
    band[(freqs < edges[0]) | (freqs >= edges[-1])] = -1
    return band, n_bands


def _floor_per_band(power: np.ndarray, band: np.ndarray, n_bands: int) -> np.ndarray:
    """Noise power per bin in each band [shape=(n_channels, n_bands)] from frame powers.

    Each bin's 10th percentile over frames, divided by its bias (the power of a
    noise bin is exponential: its 10th percentile is -ln(0.9) = 0.105 of its
    mean); the median of these over the band's bins (so that steady tones and
    their leakage, a few bins, are not taken for noise); then a median filter
    over 5 bands, against tones in narrow low bands.
    """
    per_bin = np.quantile(power, HISS_QUANTILE, axis=1) / -np.log1p(-HISS_QUANTILE)
    out = np.empty((power.shape[0], n_bands))
    for b in range(n_bands):
        out[:, b] = np.median(per_bin[:, band == b], axis=1)
    log_floor = ndimage.median_filter(np.log(out + 1e-30), size=(1, 5), mode="nearest")
    return np.exp(log_floor)


def _power_to_dbfs(bin_power_sum: np.ndarray, n_fft: int) -> np.ndarray:
    """Signal power (dBFS) from the summed one-sided |X_k|^2 of a Hann frame (Parseval)."""
    window_energy = np.sum(signal.windows.hann(n_fft, sym=False) ** 2)
    return 10.0 * np.log10(2.0 * bin_power_sum / (n_fft * window_energy) + 1e-30)


def _floor_dbfs(power: np.ndarray, band: np.ndarray, n_bands: int, n_fft: int, where_shown: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel floor level (dBFS), per-bin noise power [shape=(n_channels, n_bins)]
    and per-channel spectral flatness of the floor over the bands where it shows.

    Hiss is broadband, but where the programme never pauses (a film mix with
    music or ambience throughout) the quietest frames of a band are programme,
    and only the bands above the programme's bandwidth (a legacy track stops at
    7-10 kHz) show the noise. So the floor is modelled as broadband noise at the
    level where it shows: the 20th percentile of the band floors above 1 kHz,
    capped per band by that band's own floor. The flatness is measured over the
    bands within 3 dB of that level (``HISS_MIN_EXPOSED_BANDS`` of them at least;
    fewer gives 0). With ``where_shown`` False the band floors are taken as they
    are (programme with pauses shows the noise in every band, whatever its tilt)
    and the flatness is over all bands.
    """
    per_band = _floor_per_band(power, band, n_bands)
    if not where_shown:
        noise_psd = per_band[:, np.clip(band, 0, n_bands - 1)]
        noise_psd[:, (band < 0) & (np.arange(len(band)) < len(band) // 2)] = per_band[:, :1]
        level = _power_to_dbfs(noise_psd[:, band >= 0].sum(axis=-1), n_fft)
        flatness = np.exp(np.mean(np.log(per_band), axis=1)) / np.mean(per_band, axis=1)
        return level, noise_psd, flatness
    centres = HISS_BAND_LOW_HZ * 2.0 ** ((np.arange(n_bands) + 0.5) / HISS_BANDS_PER_OCTAVE)
    shown = np.quantile(per_band[:, centres >= 1000.0], 0.2, axis=1, keepdims=True)
    model = np.minimum(per_band, shown)
    noise_psd = model[:, np.clip(band, 0, n_bands - 1)]
    noise_psd[:, (band < 0) & (np.arange(len(band)) < len(band) // 2)] = model[:, :1]
    level = _power_to_dbfs(noise_psd[:, band >= 0].sum(axis=-1), n_fft)
    exposed = per_band <= 2.0 * shown
    flatness = np.zeros(per_band.shape[0])
    for c in range(per_band.shape[0]):
        bands = per_band[c, exposed[c]]
        if len(bands) >= HISS_MIN_EXPOSED_BANDS:
            flatness[c] = np.exp(np.mean(np.log(bands))) / np.mean(bands)
    return level, noise_psd, flatness


def detect_hiss(x: Sample, sample_rate_hz: int, n_fft: int = HISS_N_FFT) -> HissReport:
    """Estimate the broadband noise floor of ``x`` [shape=(n_channels, n_frames)] (or segments).

    Rule: dehiss when the floor is clearly above the digital floor (>= -80 dBFS;
    16-bit dither sits near -96), stationary (the floors of 4 time slices agree
    within 6 dB), broadband (spectral flatness >= 0.1 over 1/3-octave bands) and
    below the programme (its 90th-percentile frame power at least 15 dB above
    the floor), so that continuous programme or steady tones are never taken
    for noise. The band floors are first taken as measured (the programme pauses:
    white, pink or brown noise shows in every band); when that fails, the floor is
    modelled as white noise where it shows above a programme that never pauses
    (see :func:`_floor_dbfs`; >= 4 bands on it).
    """
    power = np.concatenate([_frame_power(s, n_fft, HISS_DETECT_HOP) for s in _as_segments(x)], axis=1)
    n_channels, n_frames = power.shape[:2]
    if n_frames < 2 * HISS_N_SLICES:
        return HissReport(-200.0, 0.0, 0.0, 0.0, False, np.zeros((n_channels, n_fft // 2 + 1)), n_fft)
    band, n_bands = _bands(sample_rate_hz, n_fft)
    frame_dbfs = _power_to_dbfs(power[:, :, band >= 0].sum(axis=-1), n_fft)
    slices = np.array_split(np.arange(n_frames), HISS_N_SLICES)
    report = None
    for where_shown in (False, True):  # the floors as measured (pauses), else where it shows
        level, noise_psd, flatness = _floor_dbfs(power, band, n_bands, n_fft, where_shown)
        floor_dbfs = float(level.max())
        flat = float(flatness[np.argmax(level)])
        slice_dbfs = [_floor_dbfs(power[:, idx], band, n_bands, n_fft, where_shown)[0].max() for idx in slices]
        spread_db = float(np.max(slice_dbfs) - np.min(slice_dbfs))
        headroom_db = float(np.min(np.quantile(frame_dbfs, 0.9, axis=1) - level))
        detected = (floor_dbfs >= HISS_MIN_FLOOR_DBFS and spread_db <= HISS_MAX_SPREAD_DB
                    and flat >= HISS_MIN_FLATNESS and headroom_db >= HISS_MIN_HEADROOM_DB)
        report = HissReport(round(max(floor_dbfs, -200.0), 2), round(spread_db, 2),
                            round(min(headroom_db, 200.0), 2), round(flat, 4), bool(detected), noise_psd, n_fft)
        if detected:
            break
    assert report is not None
    return report


class Dehisser:
    """Streaming spectral-subtraction dehisser [blocks of shape=(n_channels, n_frames)].

    STFT with Hann analysis and synthesis windows, ``n_fft = 2*(n_bins-1)``,
    hop ``n_fft/4`` (the squared windows overlap-add to 1.5, divided out). Per
    bin the gain is ``sqrt(max(g_min^2, 1 - alpha * N / P))`` with ``P`` the frame
    power smoothed over frames (factor 0.5, against musical noise), ``N`` the
    noise profile ``noise_psd`` [shape=(n_channels or 1, n_bins)],
    ``alpha = 1 + 2 * strength`` (over-subtraction) and ``g_min`` =
    ``-12 dB * strength``. The frame grid starts ``n_fft - hop`` frames before
    the signal, so output is aligned with input; ``process`` lags by at most
    ``latency_frames``; ``flush`` returns the rest.
    """

    def __init__(self, sample_rate_hz: int, n_channels: int, noise_psd: np.ndarray, strength: float = 1.0,
                 max_reduction_db: float = DEHISS_MAX_REDUCTION_DB) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"hiss strength must be in [0, 1], got {strength}")
        noise_psd = np.atleast_2d(np.asarray(noise_psd, dtype=np.float64))
        if noise_psd.shape[0] not in (1, n_channels) or noise_psd.shape[1] < 3:
            raise ConfigError(f"noise profile of shape {noise_psd.shape} does not fit {n_channels} channels")
        self.n_channels = n_channels
        self.n_fft = 2 * (noise_psd.shape[1] - 1)
        self.hop = self.n_fft // 4
        self.latency_frames = self.n_fft - self.hop
        self._noise = noise_psd[:, None, :]  # broadcast over frames
        self._alpha = 1.0 + 2.0 * strength
        self._g_min_sq = 10.0 ** (-max_reduction_db * strength / 10.0)
        self._window = signal.windows.hann(self.n_fft, sym=False)
        self._norm = float((self._window ** 2).reshape(4, self.hop).sum(axis=0)[0])
        self._in = np.zeros((n_channels, self.latency_frames))  # the virtual lead-in
        self._tail = np.zeros((n_channels, self.n_fft - self.hop))
        self._zi = np.zeros((n_channels, 1, self.n_fft // 2 + 1))
        self._to_drop = self.latency_frames
        self._n_in = 0
        self._n_out = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Take one block; return the output frames that are complete (aligned, float32)."""
        x = _check_block(block, self.n_channels)
        self._in = np.concatenate([self._in, x], axis=1)
        self._n_in += x.shape[1]
        return self._emit(self._run_frames())

    def flush(self) -> np.ndarray:
        """Finish with zeros after the end; returns the remaining aligned frames."""
        self._in = np.concatenate([self._in, np.zeros((self.n_channels, self.n_fft))], axis=1)
        return self._emit(self._run_frames())

    def _gains(self, power: np.ndarray) -> np.ndarray:
        smoothed, self._zi = signal.lfilter([1.0 - DEHISS_SMOOTHING], [1.0, -DEHISS_SMOOTHING], power,
                                            axis=1, zi=self._zi)
        ratio = self._noise / np.maximum(smoothed, 1e-30)
        return np.sqrt(np.maximum(self._g_min_sq, 1.0 - self._alpha * ratio))

    def _run_frames(self) -> np.ndarray:
        n_frames = (self._in.shape[1] - self.n_fft) // self.hop + 1
        if n_frames <= 0:
            return np.zeros((self.n_channels, 0))
        frames = np.lib.stride_tricks.sliding_window_view(self._in, self.n_fft, axis=-1)
        frames = frames[:, ::self.hop][:, :n_frames]
        spec = np.fft.rfft(frames * self._window, axis=-1)
        spec *= self._gains(spec.real ** 2 + spec.imag ** 2)
        out_frames = np.fft.irfft(spec, self.n_fft, axis=-1) * self._window
        acc = np.zeros((self.n_channels, (n_frames + 3) * self.hop))
        acc[:, : self.n_fft - self.hop] += self._tail
        for r in range(4):  # overlap-add: quarter r of frame f lands at hop f + r
            chunk = out_frames[:, :, r * self.hop:(r + 1) * self.hop]
            acc[:, r * self.hop:(r + n_frames) * self.hop] += chunk.reshape(self.n_channels, -1)
        self._tail = acc[:, n_frames * self.hop:]
        self._in = self._in[:, n_frames * self.hop:]
        return acc[:, : n_frames * self.hop] / self._norm

    def _emit(self, done: np.ndarray) -> np.ndarray:
        drop = min(self._to_drop, done.shape[1])
        self._to_drop -= drop
        done = done[:, drop: drop + self._n_in - self._n_out]
        self._n_out += done.shape[1]
        return done.astype(np.float32)


# =====================================================================================
# Plan, chain, file
# =====================================================================================


@dataclass(frozen=True)
class ChannelReport:
    """Faults of a 2-channel transfer of a (mostly mono) legacy track.

    ``fault`` is ``"dead-channel"`` (channel ``dead`` carries nothing; the other is
    copied into it), ``"polarity"`` (the second channel is the first inverted; it is
    turned back) or None. ``levels_dbfs`` are the channels' RMS levels and
    ``correlation`` their correlation coefficient (None unless 2 channels).
    """

    levels_dbfs: list[float]
    correlation: float | None = None
    fault: str | None = None
    dead: int | None = None


def detect_channel_faults(x: Sample) -> ChannelReport:
    """Check a stereo sample [shape=(2, n_frames)] (or segments) for a dead side or reversed polarity.

    Rule: a channel is dead when it is >= 40 dB under the other and under -60 dBFS;
    the polarity is reversed when the channels correlate at <= -0.7 with levels within
    3 dB (real stereo is rarely below -0.3). Other channel counts are left alone: a 5.1
    mix has silent channels by design.
    """
    segments = _as_segments(x)
    n_channels = segments[0].shape[0]
    power = sum(np.sum(seg ** 2, axis=1) for seg in segments)
    n = sum(seg.shape[1] for seg in segments)
    levels = 10.0 * np.log10(power / max(n, 1) + 1e-30)
    rounded = [round(float(v), 2) for v in np.maximum(levels, -300.0)]
    if n_channels != 2 or n == 0:
        return ChannelReport(rounded)
    cross = sum(float(np.dot(seg[0], seg[1])) for seg in segments)
    correlation = cross / np.sqrt(power[0] * power[1]) if power.min() > 0 else 0.0
    loud, quiet = int(np.argmax(levels)), int(np.argmin(levels))
    if levels[loud] - levels[quiet] >= CHANNEL_DEAD_DB and levels[quiet] < CHANNEL_DEAD_DBFS:
        return ChannelReport(rounded, round(correlation, 4), "dead-channel", quiet)
    if correlation <= CHANNEL_POLARITY_CORRELATION and abs(levels[0] - levels[1]) <= CHANNEL_POLARITY_MAX_DIFF_DB:
        return ChannelReport(rounded, round(correlation, 4), "polarity")
    return ChannelReport(rounded, round(correlation, 4))


def fix_channels(block: np.ndarray, report: ChannelReport) -> np.ndarray:
    """Apply the fix for ``report.fault`` to a block [shape=(2, n)] (a copy; sample-wise, no latency)."""
    if report.fault == "dead-channel" and report.dead is not None:
        out = block.copy()
        out[report.dead] = block[1 - report.dead]
        return out
    if report.fault == "polarity":
        return block * np.array([[1.0], [-1.0]], dtype=block.dtype)
    return block


@dataclass(frozen=True)
class ClickReport:
    """Clicks found in the analysed sample and whether they qualify for declicking."""

    n_clicks: int
    analysed_s: float
    rate_per_min: float
    detected: bool


@dataclass(frozen=True)
class RestorePlan:
    """What was found in the analysed sample and what a :class:`Restorer` will apply.

    A strength of 0 switches a processor off; the detectors set it to
    ``strength`` only where their rule found damage.
    """

    hum: HumReport
    clicks: ClickReport
    hiss: HissReport
    hum_strength: float = 0.0
    click_strength: float = 0.0
    hiss_strength: float = 0.0
    channels: ChannelReport = field(default_factory=lambda: ChannelReport([]))

    @property
    def applied(self) -> list[str]:
        """Names of the processors that will run, in processing order."""
        names = ("declick", "dehum", "dehiss")
        strengths = (self.click_strength, self.hum_strength, self.hiss_strength)
        fix = {"dead-channel": ["copy-live-channel"], "polarity": ["fix-polarity"]}.get(self.channels.fault or "", [])
        return fix + [name for name, s in zip(names, strengths) if s > 0.0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the noise profile array is left out)."""
        return {
            "hum": {**asdict(self.hum), "strength": self.hum_strength},
            "clicks": {**asdict(self.clicks), "strength": self.click_strength},
            "hiss": {**self.hiss.to_dict(), "strength": self.hiss_strength},
            "channels": asdict(self.channels),
            "applied": self.applied,
        }


def _click_events(positions: list[tuple[int, int, int]]) -> int:
    """Distinct clicks among ``(channel, start, stop)`` repairs: overlapping spans on several
    channels are one event (dust on an optical track reaches every channel it feeds)."""
    spans = sorted((start, stop) for _, start, stop in positions)
    events, end = 0, -1
    for start, stop in spans:
        if start >= end:
            events += 1
        end = max(end, stop)
    return events


def _count_clicks(segments: list[np.ndarray], sample_rate_hz: int, strength: float
                  ) -> tuple[int, list[np.ndarray]]:
    """Run a fresh :class:`ClickRemover` over each segment: the number of click events
    (see :func:`_click_events`) and the repaired segments."""
    total, repaired = 0, []
    for seg in segments:
        remover = ClickRemover(sample_rate_hz, seg.shape[0], strength, keep_positions=True)
        repaired.append(np.concatenate([remover.process(seg), remover.flush()], axis=1))
        total += _click_events(remover.positions or [])
    return total, repaired


def plan_restoration(x_sample: Sample, sample_rate_hz: int, strength: float = 1.0) -> RestorePlan:
    """Detect hum, clicks and hiss in ``x_sample`` and decide what to apply.

    ``x_sample`` is [shape=(n_channels, n_frames)] or a list of such segments
    (a sparse sample of a long file; segments are never joined, so their seams
    are not mistaken for clicks). Each detector sees the sample as its
    processor in the :class:`Restorer` chain will: hum after declicking, hiss
    after declicking and dehumming.
    """
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"restoration strength must be in (0, 1], got {strength}")
    segments = _as_segments(x_sample)
    channels = detect_channel_faults(segments)
    segments = [fix_channels(seg, channels) for seg in segments]
    n_clicks, declicked = _count_clicks(segments, sample_rate_hz, strength)
    analysed_s = sum(s.shape[1] for s in segments) / sample_rate_hz
    rate = 60.0 * n_clicks / analysed_s
    clicks = ClickReport(n_clicks, round(analysed_s, 3), round(rate, 2),
                         n_clicks >= CLICK_MIN_COUNT and rate >= CLICK_MIN_RATE_PER_MIN)
    cleaned = declicked if clicks.detected else segments
    hum = detect_hum(cleaned, sample_rate_hz)  # a click train's comb spectrum is no hum
    if hum.fundamental_hz is not None:
        cleaned = [_dehum(seg, sample_rate_hz, hum, strength) for seg in cleaned]
    hiss = detect_hiss(cleaned, sample_rate_hz)
    return RestorePlan(hum, clicks, hiss, strength if hum.fundamental_hz else 0.0,
                       strength if clicks.detected else 0.0, strength if hiss.detected else 0.0, channels)


def _dehum(x: np.ndarray, sample_rate_hz: int, hum: HumReport, strength: float) -> np.ndarray:
    remover = HumRemover(sample_rate_hz, x.shape[0], hum.fundamental_hz or 0.0, 0, strength, hum.harmonics_hz)
    return remover.process(x).astype(np.float64)


class Restorer:
    """The planned processors chained: channel fix -> declick -> dehum -> dehiss [blocks of shape=(n_channels, n)].

    Declicking comes first so that impulses are repaired before linear filters
    smear them. ``process`` returns aligned output lagging the input by at most
    ``latency_frames``; ``flush`` returns the rest, so the output has the
    input's length and no time shift.
    """

    def __init__(self, sample_rate_hz: int, n_channels: int, plan: RestorePlan) -> None:
        self.n_channels = n_channels
        self.plan = plan
        self._declicker = (ClickRemover(sample_rate_hz, n_channels, plan.click_strength)
                           if plan.click_strength > 0 else None)
        self._stages: list[Any] = [] if self._declicker is None else [self._declicker]
        if plan.hum_strength > 0 and plan.hum.fundamental_hz is not None:
            self._stages.append(HumRemover(sample_rate_hz, n_channels, plan.hum.fundamental_hz, 0,
                                           plan.hum_strength, plan.hum.harmonics_hz))
        if plan.hiss_strength > 0:
            self._stages.append(Dehisser(sample_rate_hz, n_channels, plan.hiss.noise_psd, plan.hiss_strength))
        self.latency_frames = sum(stage.latency_frames for stage in self._stages)

    @property
    def n_clicks_repaired(self) -> int:
        return 0 if self._declicker is None else self._declicker.n_clicks_repaired

    def process(self, block: np.ndarray) -> np.ndarray:
        """Run one block through the chain; returns the aligned output ready so far (float32)."""
        y = fix_channels(_check_block(block, self.n_channels), self.plan.channels)
        for stage in self._stages:
            y = stage.process(y)
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """Flush each stage in turn, feeding its tail to the stages after it."""
        tail = np.zeros((self.n_channels, 0), np.float32)
        for stage in self._stages:
            head = stage.process(tail) if tail.shape[1] else np.zeros((self.n_channels, 0), np.float32)
            tail = np.concatenate([head, stage.flush()], axis=1)
        return tail.astype(np.float32)


def read_detection_sample(path: str | Path, span_s: float = DETECT_SPAN_S,
                          n_segments: int = DETECT_N_SEGMENTS) -> list[np.ndarray]:
    """A sample of a file for detection: all of it up to ``span_s``, else ``n_segments``
    evenly spaced segments totalling ``span_s`` (memory stays bounded for a feature film)."""
    info = read_info(path)
    span_frames = int(span_s * info.sample_rate_hz)
    if info.n_frames <= span_frames:
        return [read_audio(path)]
    seg_frames = span_frames // n_segments
    starts = np.linspace(0, info.n_frames - seg_frames, n_segments).astype(int)
    return [read_audio(path, int(s), seg_frames) for s in starts]


def restore_file(in_path: str | Path, out_path: str | Path, plan: RestorePlan | None = None,
                 on_progress: Progress | None = None, block_s: float = 10.0
                 ) -> tuple[FileRecord, dict[str, Any]]:
    """Restore ``in_path`` into ``out_path`` (float WAV/BW64), streaming in blocks.

    Without a ``plan``, one is made from :func:`read_detection_sample` of the
    file. Returns the output's record and a report: what was found and done.
    Raises :class:`EmptyAudioError` for a file without samples.
    """
    info = read_info(in_path)
    if info.n_frames == 0:
        raise EmptyAudioError(in_path, "no samples to restore")
    if plan is None:
        plan = plan_restoration(read_detection_sample(in_path), info.sample_rate_hz)
    restorer = Restorer(info.sample_rate_hz, info.n_channels, plan)
    done = 0
    with AudioWriter(out_path, info.sample_rate_hz, info.n_channels, "FLOAT") as writer:
        for block in iter_blocks(in_path, max(1, int(block_s * info.sample_rate_hz))):
            writer.write(restorer.process(block))
            done += block.shape[1]
            if on_progress is not None:
                on_progress(done, info.n_frames)
        writer.write(restorer.flush())
        writer.close()
    report = {**plan.to_dict(), "clicks_repaired": restorer.n_clicks_repaired,
              "input": str(in_path), "duration_s": round(info.duration_s, 6)}
    return FileRecord.from_writer(writer), report


# --- stage wrapper --------------------------------------------------------------------------

def _key_params(p: dict[str, Any]) -> dict[str, Any]:
    return {"extracted": p["extracted"], "strength": p.get("strength", 1.0)}


def run_restore(extracted: dict[str, Any], title_dir: str | Path, strength: float = 1.0,
                on_progress: Progress | None = None) -> tuple[StageManifest, bool]:
    """Stage 2: restore ``work/soundtrack.wav`` into ``work/restored.wav`` (resumable)."""
    params = _key_params({"extracted": extracted, "strength": strength})
    soundtrack = StageManifest.from_dict(extracted).file("soundtrack")

    def compute() -> StageManifest:
        sample = read_detection_sample(soundtrack.path)
        plan = plan_restoration(sample, soundtrack.sample_rate_hz, strength)
        record, report = restore_file(soundtrack.path, Path(title_dir) / "work" / "restored.wav", plan, on_progress)
        return StageManifest("restore", {"restored": record}, {"strength": strength}, report)

    return run_stage(title_dir, "restore", params, compute)


@task(**task_options("restore", _key_params))
def restore_task(extracted: dict[str, Any], title_dir: str, strength: float = 1.0) -> dict[str, Any]:
    """Prefect wrapper: restoration with a progress artifact."""
    manifest, reused = run_restore(extracted, title_dir, strength, progress_reporter(title_dir, "restore"))
    log_stage("restore", manifest, reused)
    return manifest.to_dict()
