"""Dialogue / music / effects (DME) separation.

``get_separator(name)`` builds a separator; :func:`separate_file` and
:func:`separate_array` run it over a file or an array in overlapping segments
with mixture consistency (the stems sum to the input).
"""

from __future__ import annotations

from filmrestore.errors import ConfigError
from filmrestore.separation.base import STEMS, Separator
from filmrestore.separation.engine import resolve_device, separate_array, separate_file

__all__ = ["STEMS", "Separator", "get_separator", "resolve_device", "separate_array", "separate_file"]

SEPARATOR_NAMES = ("dsp",)


def get_separator(name: str = "dsp", checkpoint: str | None = None) -> Separator:
    """Build a separator by name. Only ``"dsp"`` (no weights) exists so far.

    Raises :class:`ConfigError` for an unknown name, or a checkpoint given to
    a separator that takes none.
    """
    if name == "dsp":
        if checkpoint is not None:
            raise ConfigError(f"the 'dsp' separator has no weights; got checkpoint {checkpoint!r}")
        from filmrestore.separation.dsp import DSPSeparator

        return DSPSeparator()
    raise ConfigError(f"unknown separator {name!r}: available are {', '.join(SEPARATOR_NAMES)} "
                      "(a neural separator will be added later)")
