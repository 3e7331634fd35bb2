"""Effect events: the short, loud moments of the effects stem (a door, a gunshot, a car passing)
that the plan makes objects of their own, apart from the effects' ambience in the bed.

Found on a 10 ms frame grid (the ADM time grid, so an event's blocks are exact in ADM time):

* the *level* of each frame (power of the stem's mono sum, smoothed over 30 ms), against
* the *background*: the 20th percentile of the level over the surrounding 3 s, taken every
  100 ms and interpolated (the ambience a burst stands out from; sustained sound raises it).

An event begins where the level rises ``onset_db`` above the background (and is no quieter
than ``floor_db`` under the stem's loud passages, so hiss never triggers one) and lasts while it
stays ``release_db`` above it; it starts ``pre_roll_s`` early, for the attack, and keeps
``tail_s`` of decay. Events shorter than ``min_s`` are dropped, longer ones than ``max_s`` are
cut there (a long sound is ambience, not an event), and events closer than ``merge_gap_s`` are
joined. Where the stem is stereo, an event's direction is its interchannel level difference.
An event's *share* is the part of the effects its object takes: all but the background's level,
which stays in the ambience.

The analysis streams (a title's stem is read block by block) and holds 3 floats per 10 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

FRAME_S = 0.01  # the ADM time grid: events start and end on it
_BACKGROUND_STEP = 10  # frames between background estimates (100 ms)


@dataclass(frozen=True)
class Event:
    """One effect event: ``[start_s, end_s)``, its interchannel level difference (0 for mono), and
    the share of the effects it is: ``1 - sqrt(background power / power)`` over the event, so
    that what stays in the ambience is about the background's level (no hole in the surrounds)."""

    start_s: float
    end_s: float
    ild_db: float = 0.0
    peak_db: float = 0.0  # its loudest frame above the background
    share: float = 1.0


@dataclass(frozen=True)
class EventRules:
    """Thresholds of :class:`EventDetector` (see the module docstring)."""

    onset_db: float = 10.0
    release_db: float = 4.0
    floor_db: float = 35.0  # below the stem's 95th-percentile frame level
    background_s: float = 3.0
    pre_roll_s: float = 0.02
    tail_s: float = 0.08
    min_s: float = 0.08
    max_s: float = 4.0
    merge_gap_s: float = 0.15


class EventDetector:
    """Stream the effects stem in (``process``), then read its :meth:`events`."""

    def __init__(self, sample_rate_hz: int, rules: EventRules | None = None) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.rules = rules or EventRules()
        self.frame = int(round(FRAME_S * sample_rate_hz))
        self._rest = np.zeros((2, 0), np.float64)
        self._power: list[np.ndarray] = []  # (left, right) power per frame, per block

    def process(self, block: np.ndarray) -> None:
        """Add a block [shape=(1 or 2, n_frames)] of the effects stem (folded to stereo)."""
        x = np.asarray(block, np.float64)
        x = np.concatenate([self._rest, np.vstack([x, x]) if x.shape[0] == 1 else x[:2]], axis=1)
        n = x.shape[1] // self.frame * self.frame
        self._power.append(np.square(x[:, :n]).reshape(2, -1, self.frame).mean(-1))
        self._rest = x[:, n:]

    def events(self) -> list[Event]:
        """The events of everything processed so far, in time order."""
        power = np.concatenate(self._power, axis=1) if self._power else np.zeros((2, 0))
        return find_events(power[0], power[1], self.rules)


def find_events(left_power: np.ndarray, right_power: np.ndarray, rules: EventRules | None = None) -> list[Event]:
    """Events from per-frame (10 ms) powers of the two sides (equal for a mono stem)."""
    rules = rules or EventRules()
    n = left_power.shape[0]
    if n < 3:
        return []
    total = scipy.ndimage.uniform_filter1d(left_power + right_power, 3, mode="nearest")
    level = 10.0 * np.log10(total + 1e-12)
    background = _background_db(level, rules)
    floor = np.percentile(level, 95) - rules.floor_db
    above = level - background
    starts = np.flatnonzero((above >= rules.onset_db) & (level >= floor))
    spans: list[list[int]] = []
    for s in starts:
        if spans and s < spans[-1][1]:
            continue  # inside the event already found
        end = s
        while end < n and above[end] >= rules.release_db and end - s < _frames(rules.max_s):
            end += 1
        first = max(0, s - _frames(rules.pre_roll_s))
        last = min(n, end + _frames(rules.tail_s))
        if spans and first - spans[-1][1] < _frames(rules.merge_gap_s):
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    out = []
    for first, last in (map(int, span) for span in spans):
        last = min(last, first + _frames(rules.max_s))
        if last - first < _frames(rules.min_s):
            continue
        left, right = float(left_power[first:last].sum()), float(right_power[first:last].sum())
        ild = 10.0 * math.log10((left + 1e-20) / (right + 1e-20))
        ratio = float(np.mean(total[first:last]) / np.mean(10.0 ** (background[first:last] / 10.0)))
        out.append(Event(round(first * FRAME_S, 2), round(last * FRAME_S, 2), round(ild, 2),
                         round(float(above[first:last].max()), 1), round(max(0.0, 1.0 - ratio ** -0.5), 3)))
    return out


def _frames(seconds: float) -> int:
    return int(round(seconds / FRAME_S))


def _background_db(level: np.ndarray, rules: EventRules) -> np.ndarray:
    """The 20th percentile of ``level`` over ``background_s`` around each frame (every 100 ms,
    linearly interpolated between)."""
    coarse = level[: level.shape[0] // _BACKGROUND_STEP * _BACKGROUND_STEP]
    if coarse.size == 0:
        return np.full_like(level, level.min())
    coarse = coarse.reshape(-1, _BACKGROUND_STEP).mean(-1)
    size = max(1, int(round(rules.background_s / (FRAME_S * _BACKGROUND_STEP))) | 1)
    bg = scipy.ndimage.percentile_filter(coarse, 20, size=size, mode="nearest")
    centres = (np.arange(bg.shape[0]) + 0.5) * _BACKGROUND_STEP
    return np.interp(np.arange(level.shape[0]), centres, bg)
