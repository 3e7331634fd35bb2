"""Fold-down-safe decorrelators for the ambience sends, and the LR4 crossover.

A decorrelated copy added to a dry signal interferes with it; with a ~20 ms
decorrelator there are too few independent frequency bins per low octave for
the interference to average out, so a naive random-phase design misses the
stereo fold-down by several dB in some octaves. So:

1. ambience is sent only above a crossover (an LR4 high-pass; below it a 20 ms
   filter cannot decorrelate anyway), and the dry front carries ``LP + g * HP``
   of the same LR4 pair (LP and HP are in phase and sum to an all-pass, so the
   front stays flat below the crossover);
2. the decorrelators of one side are designed *jointly*
   (:func:`design_side_decorrelators`): each has a flat magnitude, and together
   with the front they fold down (with the coefficients of
   :mod:`filmrestore.upmix.foldown`) to a flat response, ``|F(f)| = 1``.

The joint design is an L-BFGS optimisation: 0.6 s for the four designs of the
default bed on one idle core, several seconds where BLAS threads compete with
other work. The designs of the default bed rules ship with the package
(``data/decorrelators.npz``, made by :func:`save_designs`, checked against a
fresh design by the tests); other parameters are designed on first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.signal

from filmrestore.errors import ConfigError

# Weight of the band-averaged correlation terms against the fold-down/flatness terms
# in the decorrelator design; tuned so that both stay within ~0.3 (corr) / ~0.7 dB.
_DECORRELATION_WEIGHT = 0.3
# Bump when the design (its cost, start or optimiser settings) changes: shipped designs
# made by an older version are then ignored (and tests/test_upmix.py asks to regenerate them).
DESIGN_VERSION = 1
SHIPPED_DESIGNS = Path(__file__).with_name("data") / "decorrelators.npz"


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


def random_phase_firs(rng: np.random.Generator, n_filters: int, n_taps: int) -> np.ndarray:
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


def design_key(fold_gains: tuple[float, ...], sample_rate_hz: int, n_taps: int, crossover_hz: float,
               seed: int) -> str:
    """Identity of a design: every parameter, floats exactly (hex), and :data:`DESIGN_VERSION`."""
    material = [DESIGN_VERSION, [float(g).hex() for g in fold_gains], int(sample_rate_hz), int(n_taps),
                float(crossover_hz).hex(), int(seed)]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def _shipped_designs() -> dict[str, tuple[np.ndarray, float]]:
    """The designs in :data:`SHIPPED_DESIGNS` by :func:`design_key` (none if the file is absent)."""
    if not SHIPPED_DESIGNS.is_file():
        return {}
    designs = {}
    with np.load(SHIPPED_DESIGNS, allow_pickle=False) as data:
        for name in data.files:
            if name.endswith("_firs"):
                key = name[:-len("_firs")]
                firs = np.array(data[name], dtype=np.float64)
                firs.setflags(write=False)
                designs[key] = (firs, float(data[f"{key}_front_gain"]))
    return designs


def save_designs(path: str | Path, parameters: list[tuple[tuple[float, ...], int, int, float, int]]) -> Path:
    """Design (afresh) every ``(fold_gains, sample_rate_hz, n_taps, crossover_hz, seed)`` and save them
    in the format of :data:`SHIPPED_DESIGNS`."""
    arrays = {}
    for params in parameters:
        firs, front_gain = optimise_side_decorrelators(*params)
        key = design_key(*params)
        arrays[f"{key}_firs"], arrays[f"{key}_front_gain"] = firs, np.float64(front_gain)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@functools.lru_cache(maxsize=32)
def design_side_decorrelators(
    fold_gains: tuple[float, ...], sample_rate_hz: int, n_taps: int, crossover_hz: float, seed: int
) -> tuple[np.ndarray, float]:
    """The decorrelators of one side (see :func:`optimise_side_decorrelators`): the shipped design
    for these parameters when there is one, else a fresh design (cached per process)."""
    shipped = _shipped_designs().get(design_key(fold_gains, sample_rate_hz, n_taps, crossover_hz, seed))
    if shipped is not None:
        return shipped
    return optimise_side_decorrelators(fold_gains, sample_rate_hz, n_taps, crossover_hz, seed)


def optimise_side_decorrelators(
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
    start = random_phase_firs(np.random.default_rng(seed), len(b), n_taps)
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


def lr4_impulse_response(cutoff_hz: float, sample_rate_hz: int, btype: str, n_taps: int = 2048) -> np.ndarray:
    """The first ``n_taps`` samples of an LR4 filter's impulse response. [shape=(n_taps,)]

    The LR4 poles at 120-200 Hz decay to below 1e-8 of the response's energy
    within 2048 samples at 48 kHz, so the truncated FIR is the IIR to float32 precision.
    """
    impulse = np.zeros(n_taps)
    impulse[0] = 1.0
    return scipy.signal.sosfilt(lr4_sos(cutoff_hz, sample_rate_hz, btype), impulse)
