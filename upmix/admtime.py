"""ADM time (ITU-R BS.2076 ``hh:mm:ss.zzzzz``): the one 10 us grid that plans, the renderer and
the ADM writer share (in the spirit of the EBU ADM renderer's ``time_format.py``)."""

from __future__ import annotations

import math
from fractions import Fraction

TICKS_PER_S = 100_000  # BS.2076 time has 5 decimals


def seconds_to_ticks(t_s: float) -> int:
    """A time in seconds on the ADM 10 us grid (plans keep times on it)."""
    return int(round(t_s * TICKS_PER_S))


def on_grid_s(t_s: float) -> float:
    """A time rounded to the ADM grid, in seconds."""
    return seconds_to_ticks(t_s) / TICKS_PER_S


def grid_samples(t_s: float, sample_rate_hz: int) -> Fraction:
    """A plan time on the ADM grid, in samples (exact, as the ADM renderer reads it)."""
    return Fraction(seconds_to_ticks(t_s), TICKS_PER_S) * sample_rate_hz


def adm_time(seconds: Fraction) -> str:
    """BS.2076 time "hh:mm:ss.zzzzz", rounded *up* to 10 us so a duration covers its last sample."""
    return ticks_time(math.ceil(seconds * TICKS_PER_S))


def ticks_time(ticks: int) -> str:
    """BS.2076 time of a count of 10 us ticks."""
    whole_s, frac = divmod(ticks, TICKS_PER_S)
    minutes, secs = divmod(whole_s, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{frac:05d}"
