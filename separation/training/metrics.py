"""Separation quality measures."""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., ICASSP 2019).

    Both arrays have the same shape (any: ``(n_frames,)`` or ``(n_channels, n_frames)``,
    flattened); the reference is projected onto and the means are not removed.
    Returns ``-inf`` for a silent reference scaled to nothing, ``inf`` for a
    perfect estimate.
    """
    est = np.asarray(estimate, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if est.shape != ref.shape:
        raise ValueError(f"estimate {np.shape(estimate)} and reference {np.shape(reference)} differ in shape")
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + _EPS)
    target = alpha * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + _EPS) / (np.dot(noise, noise) + _EPS)))


def global_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Global SDR in dB as the Cinematic Demixing track of the Sound Demixing Challenge 2023 scores it:
    ``10 log10(sum s^2 / sum (s - s_hat)^2)`` over the whole item, not scale-invariant (a gain
    error counts), with the challenge's 1e-7 guard on both sums."""
    est = np.asarray(estimate, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if est.shape != ref.shape:
        raise ValueError(f"estimate {np.shape(estimate)} and reference {np.shape(reference)} differ in shape")
    return float(10.0 * np.log10((np.dot(ref, ref) + 1e-7) / (np.dot(ref - est, ref - est) + 1e-7)))
