"""What every restoration processor shares: the block and sample types and their checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from scipy import signal

Progress = Callable[[int, int], None]
Sample = np.ndarray | Sequence[np.ndarray]


def as_segments(x: Sample) -> list[np.ndarray]:
    """An array or a list of arrays -> list of float64 ``(n_channels, n_frames)`` segments."""
    segments = [x] if isinstance(x, np.ndarray) else list(x)
    out = [np.asarray(s, dtype=np.float64) for s in segments]
    for s in out:
        if s.ndim != 2:
            raise ValueError(f"expected (n_channels, n_frames) arrays, got shape {s.shape}")
    return out


def check_block(block: np.ndarray, n_channels: int) -> np.ndarray:
    """Validate a ``(n_channels, n_frames)`` block and return it as float64."""
    if block.ndim != 2 or block.shape[0] != n_channels:
        raise ValueError(f"expected a ({n_channels}, n_frames) block, got shape {block.shape}")
    return np.asarray(block, dtype=np.float64)


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    return signal.windows.hann(n, sym=False)
