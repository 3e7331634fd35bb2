"""Streaming 7.1.4 bed renderer for dialogue / music / effects stems.

Placement (first form, all gains in :class:`UpmixParams`):

- dialogue -> centre M+000 (a stereo stem is summed at -3 dB per side, which
  gives back a centre-panned source at its original level), through the same
  LR4 all-pass as the fronts so that all dry paths stay in phase;
- music -> front M+030/M-030 (a mono stem at -3 dB each side), plus decorrelated
  ambience into sides, rears and heights of the same side;
- effects -> front M+030/M-030, plus decorrelated ambience into sides and rears,
  plus an LFE send: the effects' low band through a 4th-order Linkwitz-Riley
  low-pass (two cascaded 2nd-order Butterworth sections).

Fold-down compatibility. A decorrelated copy added to a dry signal interferes
with it; with a ~20 ms decorrelator there are too few independent frequency
bins per low octave for the interference to average out, so a naive random-
phase design misses the stereo fold-down by several dB in some octaves. So:

1. ambience is sent only above ``ambience_crossover_hz`` (an LR4 high-pass;
   below it a 20 ms filter cannot decorrelate anyway), and the front carries
   ``LP + g * HP`` of the same LR4 pair (LP and HP are in phase and sum to an
   all-pass, so the front stays flat below the crossover);
2. the decorrelators of one side are designed *jointly* (see
   :func:`design_side_decorrelators`): each has a flat magnitude, and together
   with the front they fold down (with the coefficients of
   :mod:`filmrestore.upmix.foldown`) to a flat response, ``|F(f)| = 1``.

All filters keep their state between calls (``sosfilt`` with ``zi``, FFT
overlap-add with a carried tail), so the renderer has zero latency and
block-wise output equals whole-signal output up to float rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.signal

from filmrestore.errors import ConfigError
from filmrestore.upmix.foldown import fold_down_matrix
from filmrestore.upmix.layouts import BED_7_1_4

STEM_NAMES: tuple[str, ...] = ("dialogue", "music", "effects")
MINUS_3_DB = float(np.sqrt(0.5))
# Weight of the band-averaged correlation terms against the fold-down/flatness terms
# in the decorrelator design; tuned so that both stay within ~0.3 (corr) / ~0.7 dB.
_DECORRELATION_WEIGHT = 0.3

# Sends per side: (front label, ambience labels).
_MUSIC_SENDS = {
    "L": ("M+030", ("M+090", "M+135", "U+045", "U+135")),
    "R": ("M-030", ("M-090", "M-135", "U-045", "U-135")),
}
_EFFECTS_SENDS = {
    "L": ("M+030", ("M+090", "M+135")),
    "R": ("M-030", ("M-090", "M-135")),
}


def db_to_gain(level_db: float) -> float:
    """Amplitude gain of a level in dB."""
    return float(10.0 ** (level_db / 20.0))


@dataclass(frozen=True)
class UpmixParams:
    """Placement rules of the bed renderer. Levels in dB relative to the stem."""

    dialogue_gain_db: float = 0.0
    music_ambience_gain_db: float = -9.0  # per side/rear/height channel
    effects_surround_gain_db: float = -6.0  # per side/rear channel
    ambience_crossover_hz: float = 200.0  # ambience is sent only above this
    lfe_crossover_hz: float = 120.0  # LR4 low-pass feeding LFE1
    # LFE1 is reproduced with +10 dB in-band gain (ITU-R BS.775, SMPTE RP 200), so a
    # -10 dB send reaches the room at the level of the effects' own bass.
    lfe_gain_db: float = -10.0
    decorrelator_length_s: float = 0.02
    seed: int = 2051

    def __post_init__(self) -> None:
        for name in ("ambience_crossover_hz", "lfe_crossover_hz", "decorrelator_length_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ConfigError(f"UpmixParams.{name} must be positive, got {value!r}")
        for name in ("music_ambience_gain_db", "effects_surround_gain_db"):
            if getattr(self, name) > -3.0:
                raise ConfigError(
                    f"UpmixParams.{name} = {getattr(self, name)} dB leaves no room for the front "
                    "in a power-preserving fold-down; use -3 dB or less"
                )


def lr4_sos(cutoff_hz: float, sample_rate_hz: int, btype: str) -> np.ndarray:
    """4th-order Linkwitz-Riley section pair: a 2nd-order Butterworth applied twice."""
    if not 0 < cutoff_hz < sample_rate_hz / 2:
        raise ConfigError(f"crossover {cutoff_hz} Hz is outside (0, {sample_rate_hz / 2}) Hz")
    butter = scipy.signal.butter(2, cutoff_hz, btype=btype, fs=sample_rate_hz, output="sos")
    return np.vstack([butter, butter])


def _lr4_responses(cutoff_hz: float, sample_rate_hz: int, freqs_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, low = scipy.signal.sosfreqz(lr4_sos(cutoff_hz, sample_rate_hz, "lowpass"), worN=freqs_hz, fs=sample_rate_hz)
    _, high = scipy.signal.sosfreqz(lr4_sos(cutoff_hz, sample_rate_hz, "highpass"), worN=freqs_hz, fs=sample_rate_hz)
    return low, high


def _random_phase_firs(rng: np.random.Generator, n_filters: int, n_taps: int) -> np.ndarray:
    """Flat-magnitude FIRs with independent random phase per bin. [shape=(n_filters, n_taps)]"""
    spectrum = np.exp(1j * rng.uniform(-np.pi, np.pi, (n_filters, n_taps // 2 + 1)))
    spectrum[:, 0] = 1.0
    spectrum[:, -1] = 1.0
    return np.fft.irfft(spectrum, n_taps, axis=1)


def _band_averager(freqs_hz: np.ndarray, low_hz: float, bands_per_octave: int = 3) -> np.ndarray:
    """Rows that average a spectrum over fractional-octave bands from ``low_hz`` up. [shape=(n_bands, n_bins)]"""
    edges_hz = low_hz * 2.0 ** (np.arange(0, 12 * bands_per_octave) / bands_per_octave)
    edges_hz = edges_hz[edges_hz < freqs_hz[-1]]
    rows = [((freqs_hz >= lo) & (freqs_hz < hi)).astype(float) for lo, hi in zip(edges_hz[:-1], edges_hz[1:])]
    rows = [r / r.sum() for r in rows if r.sum() > 0]
    return np.array(rows)


def _decorrelator_cost(taps: np.ndarray, shape: tuple[int, int], terms: dict) -> tuple[float, np.ndarray]:
    """Cost and gradient of a decorrelator set on a frequency grid; see :func:`design_side_decorrelators`.

    With ``J = sum_f u(H_f)`` and the complex gradient ``G_f = dJ/dRe H + i dJ/dIm H``,
    ``dJ/dh[t] = Re sum_f G_f e^{i w_f t}``, which one irfft gives.
    """
    n_taps = shape[1]
    n_fft, w, low, high, g, b, bands = (terms[k] for k in ("n_fft", "w", "low", "high", "g", "b", "bands"))
    spectra = np.fft.rfft(taps.reshape(shape), n_fft, axis=1)
    fold = low + high * (g + b @ spectra)
    fold_err = np.abs(fold) ** 2 - 1.0
    flat_err = np.abs(spectra) ** 2 - 1.0
    cost = 10.0 * np.sum(w * fold_err**2) + np.sum(w * flat_err**2)
    grad = 40.0 * (w * fold_err * fold * np.conj(high))[None, :] * b[:, None] + 4.0 * w * flat_err * spectra
    # Band-averaged correlation with the dry front (Re H_k) and between channels.
    with_front = bands @ spectra.real.T  # (n_bands, K)
    cost += _DECORRELATION_WEIGHT * np.sum(with_front**2)
    grad += 2.0 * _DECORRELATION_WEIGHT * (with_front.T @ bands)
    for k in range(shape[0]):
        for m in range(k + 1, shape[0]):
            cross = bands @ np.real(spectra[k] * np.conj(spectra[m]))
            cost += _DECORRELATION_WEIGHT * np.sum(cross**2)
            weight = 2.0 * _DECORRELATION_WEIGHT * (cross @ bands)
            grad[k] += weight * spectra[m]
            grad[m] += weight * spectra[k]
    grad[:, 1:-1] /= 2.0  # one-sided spectrum: interior bins count twice in irfft
    taps_grad = n_fft * np.fft.irfft(grad, n_fft, axis=1)[:, :n_taps]
    return float(1e3 * cost), 1e3 * taps_grad.ravel()


@functools.lru_cache(maxsize=32)
def design_side_decorrelators(
    fold_gains: tuple[float, ...], sample_rate_hz: int, n_taps: int, crossover_hz: float, seed: int
) -> tuple[np.ndarray, float]:
    """Jointly design the decorrelators of one side so that its fold-down is flat.

    ``fold_gains[k]`` is send gain times fold-down coefficient of ambience channel k.
    Returns ``(firs [shape=(n_filters, n_taps)], front_gain)`` where
    ``front_gain = sqrt(1 - sum b_k^2)`` scales the front above the crossover.
    Start: independent random-phase FIRs (flat magnitude). Then L-BFGS, on a 2x
    oversampled grid weighted 1/f (every octave counts alike), pulls the
    fold-down ``|LP + HP (g + sum_k b_k H_k)|^2`` to 1 and each ``|H_k|^2`` to 1,
    while keeping third-octave averages of ``Re H_k`` (correlation with the dry
    front) and ``Re H_k conj H_m`` (between ambience channels) near 0.
    """
    b = np.asarray(fold_gains, dtype=np.float64)
    g = float(np.sqrt(1.0 - np.sum(b**2)))
    n_fft = 2 * n_taps
    freqs_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    low, high = _lr4_responses(crossover_hz, sample_rate_hz, freqs_hz)
    w = np.where(freqs_hz > 20.0, 1.0 / np.maximum(freqs_hz, 1.0), 0.0)
    terms = {"n_fft": n_fft, "w": w / w.sum(), "low": low, "high": high, "g": g, "b": b,
             "bands": _band_averager(freqs_hz, crossover_hz)}
    start = _random_phase_firs(np.random.default_rng(seed), len(b), n_taps)
    result = scipy.optimize.minimize(
        _decorrelator_cost, start.ravel(), args=(start.shape, terms), jac=True,
        method="L-BFGS-B", options={"maxiter": 300},
    )
    firs = result.x.reshape(start.shape)
    firs.setflags(write=False)
    return firs, _refit_front_gain(firs, b, high, n_fft)


def _refit_front_gain(firs: np.ndarray, b: np.ndarray, high: np.ndarray, n_fft: int) -> float:
    """Front gain g that makes the fold-down's mean power above the crossover exactly 1.

    Solves ``mean |g + S|^2 = g^2 + 2 g mean(Re S) + mean |S|^2 = 1`` (weighted by
    the high-pass power), ``S = sum_k b_k H_k``, which removes any overall bias the
    optimiser's trade-offs left.
    """
    sends = b @ np.fft.rfft(firs, n_fft, axis=1)
    weight = np.abs(high) ** 2 / np.sum(np.abs(high) ** 2)
    mean_re = float(np.sum(weight * sends.real))
    mean_pow = float(np.sum(weight * np.abs(sends) ** 2))
    disc = mean_re**2 - mean_pow + 1.0
    if disc < 0 or -mean_re + np.sqrt(disc) <= 0:
        raise ConfigError(f"ambience sends {b.tolist()} are too loud for a power-preserving fold-down")
    return float(-mean_re + np.sqrt(disc))


class _SosStream:
    """``sosfilt`` over consecutive blocks of [shape=(n_channels, n_frames)], keeping state."""

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self._sos = sos
        self._zi = np.zeros((sos.shape[0], n_channels, 2))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y, self._zi = scipy.signal.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        return y


class _FirBankStream:
    """One input through K FIRs by FFT overlap-add, carrying the tail between blocks."""

    def __init__(self, firs: np.ndarray) -> None:
        self._firs = firs
        self._tail = np.zeros((firs.shape[0], firs.shape[1] - 1))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x [shape=(n_frames,)] -> [shape=(K, n_frames)]"""
        n_frames = x.shape[-1]
        if n_frames == 0:
            return np.zeros((self._firs.shape[0], 0))
        full = scipy.signal.oaconvolve(x[None, :], self._firs, axes=-1)
        full[:, : self._tail.shape[1]] += self._tail
        self._tail = full[:, n_frames:].copy()
        return full[:, :n_frames]


class _Lr4Allpass:
    """``LP + HP`` of an LR4 pair: the phase the fronts get from their crossover, at unit gain.

    Separated stems are coherent pieces of one mix, so every dry path must share
    one phase response, or the stems partly cancel where they sum (in a fold-down,
    or acoustically between the centre and the fronts) around the crossover.
    """

    def __init__(self, cutoff_hz: float, sample_rate_hz: int) -> None:
        self._low = _SosStream(lr4_sos(cutoff_hz, sample_rate_hz, "lowpass"), 1)
        self._high = _SosStream(lr4_sos(cutoff_hz, sample_rate_hz, "highpass"), 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x [shape=(n_frames,)] -> [shape=(n_frames,)]"""
        return self._low(x[None, :])[0] + self._high(x[None, :])[0]


class _SideSpread:
    """One side of a stem: front gets ``LP + g HP``, each ambience channel a decorrelated HP."""

    def __init__(self, sample_rate_hz: int, send_gain: float, fold_gains: tuple[float, ...],
                 params: UpmixParams, seed: int) -> None:
        n_taps = max(2, int(round(params.decorrelator_length_s * sample_rate_hz)))
        firs, self._front_gain = design_side_decorrelators(
            fold_gains, sample_rate_hz, n_taps, params.ambience_crossover_hz, seed)
        self._low = _SosStream(lr4_sos(params.ambience_crossover_hz, sample_rate_hz, "lowpass"), 1)
        self._high = _SosStream(lr4_sos(params.ambience_crossover_hz, sample_rate_hz, "highpass"), 1)
        self._firs = _FirBankStream(firs * send_gain)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [shape=(n_frames,)] -> (front (n_frames,), ambience (K, n_frames))"""
        low = self._low(x[None, :])[0]
        high = self._high(x[None, :])[0]
        return low + self._front_gain * high, self._firs(high)


class BedRenderer:
    """Render dialogue/music/effects stems to a 7.1.4 bed, block by block.

    ``process`` takes ``{"dialogue", "music", "effects"}`` arrays, each
    [shape=(n_input_channels, n_frames)] with n_input_channels 1 or 2 (a missing
    stem is silence), and returns [shape=(12, n_frames)] float32 in the WAV
    order of :data:`filmrestore.upmix.layouts.BED_7_1_4`. Zero latency:
    :meth:`flush` returns an empty block and exists for symmetry with other
    streaming processors.
    """

    latency_frames = 0

    def __init__(self, sample_rate_hz: int, n_input_channels: int, params: UpmixParams | None = None) -> None:
        if n_input_channels not in (1, 2):
            raise ConfigError(f"BedRenderer takes mono or stereo stems, got {n_input_channels} channels")
        self.sample_rate_hz = sample_rate_hz
        self.n_input_channels = n_input_channels
        self.params = params if params is not None else UpmixParams()
        self.layout = BED_7_1_4
        self._music = self._make_sides(_MUSIC_SENDS, db_to_gain(self.params.music_ambience_gain_db), 0)
        self._effects = self._make_sides(_EFFECTS_SENDS, db_to_gain(self.params.effects_surround_gain_db), 2)
        self._lfe = _SosStream(lr4_sos(self.params.lfe_crossover_hz, sample_rate_hz, "lowpass"), 1)
        self._centre_allpass = _Lr4Allpass(self.params.ambience_crossover_hz, sample_rate_hz)

    def _make_sides(self, sends: dict, send_gain: float, seed_offset: int) -> dict[str, _SideSpread]:
        fold = fold_down_matrix("stereo", self.layout)
        sides = {}
        for row, (side, (_, labels)) in enumerate(sends.items()):
            fold_gains = tuple(float(fold[row, self.layout.index(lab)]) * send_gain for lab in labels)
            seed = self.params.seed * 16 + seed_offset + row
            sides[side] = _SideSpread(self.sample_rate_hz, send_gain, fold_gains, self.params, seed)
        return sides

    def process(self, stems: dict[str, np.ndarray]) -> np.ndarray:
        """Render one block of stems to [shape=(12, n_frames)] float32."""
        n_frames = self._check_stems(stems)
        bed = np.zeros((self.layout.n_channels, n_frames))
        zeros = np.zeros((self.n_input_channels, n_frames))
        dialogue = stems.get("dialogue", zeros).astype(np.float64)
        music = stems.get("music", zeros).astype(np.float64)
        effects = stems.get("effects", zeros).astype(np.float64)
        centre = self._centre_allpass(_to_centre(dialogue))
        bed[self.layout.index("M+000")] += db_to_gain(self.params.dialogue_gain_db) * centre
        self._spread(bed, _MUSIC_SENDS, self._music, _to_pair(music))
        self._spread(bed, _EFFECTS_SENDS, self._effects, _to_pair(effects))
        lfe = self._lfe(_to_centre(effects)[None, :])[0]
        bed[self.layout.index("LFE1")] += db_to_gain(self.params.lfe_gain_db) * lfe
        return bed.astype(np.float32)

    def flush(self) -> np.ndarray:
        """Remaining output after the last block: none, the renderer has no latency."""
        return np.zeros((self.layout.n_channels, 0), dtype=np.float32)

    def _spread(self, bed: np.ndarray, sends: dict, sides: dict[str, _SideSpread], pair: np.ndarray) -> None:
        for row, (side, (front_label, labels)) in enumerate(sends.items()):
            front, ambience = sides[side](pair[row])
            bed[self.layout.index(front_label)] += front
            for k, label in enumerate(labels):
                bed[self.layout.index(label)] += ambience[k]

    def _check_stems(self, stems: dict[str, np.ndarray]) -> int:
        unknown = set(stems) - set(STEM_NAMES)
        if unknown or not stems:
            raise ValueError(f"expected some of the stems {STEM_NAMES}, got {sorted(stems)}")
        shapes = {name: np.shape(a) for name, a in stems.items()}
        good = all(len(s) == 2 and s[0] == self.n_input_channels for s in shapes.values())
        if not good or len({s[1] for s in shapes.values()}) != 1:
            raise ValueError(
                f"stems must all be ({self.n_input_channels}, n_frames) arrays of one length, got {shapes}"
            )
        return int(next(iter(shapes.values()))[1])


def _to_centre(x: np.ndarray) -> np.ndarray:
    """Mono [shape=(n_frames,)] of a (1|2, n_frames) stem; stereo summed at -3 dB per side."""
    return x[0] if x.shape[0] == 1 else MINUS_3_DB * (x[0] + x[1])


def _to_pair(x: np.ndarray) -> np.ndarray:
    """Left/right pair [shape=(2, n_frames)]; mono goes to both sides at -3 dB."""
    return np.vstack([MINUS_3_DB * x[0], MINUS_3_DB * x[0]]) if x.shape[0] == 1 else x
