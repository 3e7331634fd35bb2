"""What every restoration processor shares: the block and sample types and their checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import numpy as np
from scipy import signal

Progress = Callable[[int, int], None]
Sample = np.ndarray | Sequence[np.ndarray]
_T = TypeVar("_T")


def as_segments(x: Sample) -> list[np.ndarray]:
    """An array or a list of arrays -> list of float64 ``(n_channels, n_frames)`` segments."""
    segments = [x] if isinstance(x, np.ndarray) else list(x)
    out = [np.asarray(s, dtype=np.float64) for s in segments]
    for s in out:
        if s.ndim != 2:
            raise ValueError(f"expected (n_channels, n_frames) arrays, got shape {s.shape}")
    return out


def map_segments(fn: Callable[[np.ndarray], _T], segments: Sequence[np.ndarray]) -> list[_T]:
    """``[fn(seg) for seg in segments]`` on two threads (the detectors' FFTs and compiled kernels
    release the GIL); results in the segments' order, so whatever sums them sums as before."""
    if len(segments) < 2:
        return [fn(seg) for seg in segments]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="detect") as pool:
        return list(pool.map(fn, segments))


def check_block(block: np.ndarray, n_channels: int) -> np.ndarray:
    """Validate a ``(n_channels, n_frames)`` block and return it as float64."""
    if block.ndim != 2 or block.shape[0] != n_channels:
        raise ValueError(f"expected a ({n_channels}, n_frames) block, got shape {block.shape}")
    return np.asarray(block, dtype=np.float64)


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    return signal.windows.hann(n, sym=False)
