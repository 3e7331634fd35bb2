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
