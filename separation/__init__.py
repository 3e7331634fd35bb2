"""Dialogue / music / effects (DME) separation.

``get_separator(name)`` builds a separator; :func:`separate_file` and
:func:`separate_array` run it over a file or an array in overlapping segments
with mixture consistency (the stems sum to the input).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filmrestore import DEFAULT_SEPARATOR, STEMS
from filmrestore.errors import ConfigError

if TYPE_CHECKING:
    from filmrestore.separation.base import Separator
    from filmrestore.separation.engine import resolve_device, separate_array, separate_file

__all__ = ["STEMS", "Separator", "get_separator", "resolve_device", "separate_array", "separate_file",
           "weights_fingerprint"]

# What needs torch is imported on first use, so that naming the shipped checkpoint or the
# separators (a re-run whose stems are reused, the CLI's checks) does not import torch.
_LAZY = {"Separator": "base", "resolve_device": "engine", "separate_array": "engine", "separate_file": "engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SEPARATOR_NAMES = ("dsp", "neural")


DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "dme-small.safetensors"


def weights_fingerprint(name: str, checkpoint: str | None) -> dict[str, str | None]:
    """What a separator's output depends on besides its input, by content: the hashes of the
    weights it reads (``checkpoint``, or for ``neural`` the shipped one) and of their JSON, whose
    ``inference`` settings change the stems as the weights do. None for what does not exist."""
    from filmrestore.audio import hash_file

    weights = checkpoint or (str(DEFAULT_CHECKPOINT) if name == "neural" else None)
    files = {"weights": Path(weights) if weights else None,
             "weights_config": Path(weights).with_suffix(".json") if weights else None}
    return {key: hash_file(path) if path is not None and path.is_file() else None for key, path in files.items()}


def get_separator(name: str = DEFAULT_SEPARATOR, checkpoint: str | None = None, shifts: int | None = None) -> Separator:
    """Build a separator by name: ``"dsp"`` (no weights) or ``"neural"`` (``checkpoint`` is a
    ``.safetensors`` file with its ``.json`` config beside it; by default the small DME model
    that ships in ``separation/checkpoints/``). ``shifts`` (neural): passes averaged, each on
    the STFT grid moved by a fraction of a hop (default: the checkpoint's setting, 1 when it
    has none); the separation takes that many times as long.

    Raises :class:`ConfigError` for an unknown name, a checkpoint or shifts given to a separator
    that takes none, or shifts out of 1-16; :class:`CheckpointError` for a missing, truncated or
    mismatched checkpoint.
    """
    if shifts is not None and name != "neural":
        raise ConfigError(f"the {name!r} separator takes no shifts; got {shifts!r}")
    if shifts is not None and not (isinstance(shifts, int) and not isinstance(shifts, bool) and 1 <= shifts <= 16):
        raise ConfigError(f"shifts must be a whole number from 1 to 16, got {shifts!r}")
    if name == "dsp":
        if checkpoint is not None:
            raise ConfigError(f"the 'dsp' separator has no weights; got checkpoint {checkpoint!r}")
        from filmrestore.separation.dsp import DSPSeparator

        return DSPSeparator()
    if name == "neural":
        from filmrestore.separation.neural import NeuralSeparator

        if checkpoint is None:
            checkpoint = str(DEFAULT_CHECKPOINT)

        model = NeuralSeparator.from_checkpoint(checkpoint)
        if shifts is not None:
            model.shifts = shifts
        return model
    raise ConfigError(f"unknown separator {name!r}: available are {', '.join(SEPARATOR_NAMES)}")
