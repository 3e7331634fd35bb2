"""DC offset: a constant (or very slowly drifting) bias of a channel, left by a transfer's
preamp or an optical reader's misaligned slit. It carries no programme, eats headroom, and a
loudness gain would amplify it into the mains and the LFE. Found as the mean of the detection
sample per channel, removed by a 5 Hz second-order high-pass whose state starts settled on the
first sample, so the cut has no start transient and the programme above 20 Hz is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from filmrestore.restoration.blocks import Sample, as_segments, check_block

DC_MIN_DBFS = -40.0  # an offset above -40 dBFS (1 % of full scale) on any channel is removed
DC_CUTOFF_HZ = 5.0  # the high-pass corner: infrasonic, far under any programme content


@dataclass(frozen=True)
class DCReport:
    """The mean of each channel of the analysed sample (``offsets``, linear) and in dBFS, and
    whether any channel's offset is large enough to remove."""

    offsets: list[float] = field(default_factory=list)
    offsets_dbfs: list[float] = field(default_factory=list)
    detected: bool = False


def detect_dc(x: Sample) -> DCReport:
    """Measure each channel's offset over ``x`` [shape=(n_channels, n_frames)] (or segments).

    Rule: detected when some channel's |mean| is above :data:`DC_MIN_DBFS` (amplitude 1.0 =
    0 dBFS). Real recordings can carry a small bias (a game track of this project's corpus
    sits at -51 dBFS) that costs nothing; a transfer fault is a percent of full scale or more.
    """
    segments = as_segments(x)
    n = sum(seg.shape[1] for seg in segments)
    mean = sum(seg.sum(axis=1) for seg in segments) / max(n, 1)
    dbfs = 20.0 * np.log10(np.abs(mean) + 1e-15)
    return DCReport([round(float(v), 6) for v in mean], [round(float(v), 2) for v in dbfs],
                    bool(np.any(dbfs > DC_MIN_DBFS)))


class DCRemover:
    """Streaming DC-blocking high-pass [blocks of shape=(n_channels, n_frames)], output aligned
    with the input (latency 0); the filter state carries across blocks."""

    latency_frames = 0

    def __init__(self, sample_rate_hz: int, n_channels: int, cutoff_hz: float = DC_CUTOFF_HZ) -> None:
        self.n_channels = n_channels
        self._sos = signal.butter(2, cutoff_hz, btype="highpass", fs=sample_rate_hz, output="sos")
        self._zi: np.ndarray | None = None

    def process(self, block: np.ndarray) -> np.ndarray:
        x = check_block(block, self.n_channels)
        if x.shape[1] == 0:
            return np.zeros((self.n_channels, 0), np.float32)
        if self._zi is None:  # settled on the first sample: a constant input gives 0 from the start
            steady = signal.sosfilt_zi(self._sos)  # (n_sections, 2), for a unit step
            self._zi = steady[:, None, :] * x[None, :, 0, None]
        y, self._zi = signal.sosfilt(self._sos, x, axis=1, zi=self._zi)
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """Nothing is held back: an empty ``(n_channels, 0)`` array."""
        return np.zeros((self.n_channels, 0), np.float32)
