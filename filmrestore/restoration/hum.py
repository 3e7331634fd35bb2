"""Mains hum at 50 or 60 Hz and its harmonics: found as narrow peaks of a long-term Welch
spectrum, removed by narrow IIR notches at the measured frequencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from filmrestore.errors import ConfigError
from filmrestore.restoration.blocks import Sample, as_segments, check_block, map_segments



HUM_MAINS_HZ = (50.0, 60.0)
HUM_MAX_DRIFT_HZ = 0.5  # the fundamental may sit anywhere within +-0.5 Hz of nominal
HUM_MAX_HARMONICS = 8
HUM_CONSISTENCY_HZ = 0.05  # harmonic k's peak / k agrees with the series' fundamental within this
HUM_MIN_LEVEL_DB = 10.0  # peak above the neighbouring floor, at f0 or at >= 2 harmonics
HUM_LOWEST_HARMONIC = 3  # without the fundamental, the 2nd or 3rd harmonic must be among them
HUM_NOTCH_BANDWIDTH_HZ = 1.5  # -3 dB width of each notch section (two sections per harmonic)



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




def long_term_spectrum(x: Sample, sample_rate_hz: int, resolution_hz: float = 0.75
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Welch power spectral density averaged over channels and segments.

    Segments of ``1/resolution_hz`` seconds (Hann, 50 % overlap), zero-padded
    four times so that peak frequencies interpolate to a few hundredths of a Hz.
    Returns ``(freqs_hz [n_bins], psd [n_bins] in 1/Hz)``, or None when no
    segment lasts the 0.25 s needed to resolve mains harmonics.
    """
    nperseg = int(2 ** np.ceil(np.log2(sample_rate_hz / resolution_hz)))
    # Too short a segment cannot resolve mains harmonics.
    segments = [seg for seg in as_segments(x) if min(nperseg, seg.shape[1]) >= sample_rate_hz // 4]

    def welch(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return signal.welch(seg, sample_rate_hz, "hann", nperseg=min(nperseg, seg.shape[1]), nfft=4 * nperseg,
                            axis=-1)

    psd_sum, weight = None, 0
    for seg, (freqs, psd) in zip(segments, map_segments(welch, segments)):
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
    thirds = [[seg[:, i * seg.shape[1] // 3:(i + 1) * seg.shape[1] // 3] for seg in as_segments(x)]
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




def notch_sos(freqs_hz: Sequence[float], sample_rate_hz: int,
              bandwidth_hz: float = HUM_NOTCH_BANDWIDTH_HZ) -> np.ndarray:
    """Second-order sections [shape=(2 * len(freqs_hz), 6)]: two cascaded ``iirnotch`` sections of
    -3 dB width ``bandwidth_hz`` per frequency (what :class:`HumRemover` streams)."""
    sections = []
    for f in freqs_hz:
        b, a = signal.iirnotch(f, f / bandwidth_hz, fs=sample_rate_hz)
        sections += [np.r_[b, a]] * 2
    return np.array(sections).reshape(-1, 6)


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
        self._sos = notch_sos(freqs, sample_rate_hz, bandwidth_hz)
        self._zi = np.zeros((len(self._sos), n_channels, 2))  # silence before the first block

    def process(self, block: np.ndarray) -> np.ndarray:
        """Filter one block; returns the same number of frames, float32."""
        x = check_block(block, self.n_channels)
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
