"""Dialogue / music / effects (DME) separation.

``get_separator(name)`` builds a separator; :func:`separate_file` and
:func:`separate_array` run it over a file or an array in overlapping segments
with mixture consistency (the stems sum to the input).
"""

from __future__ import annotations

import hashlib
import importlib
import json
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


def weights_fingerprint(name: str, checkpoint: str | None, shifts: int | None = None) -> dict[str, str | None]:
    """What a separator's output depends on besides its input, by content: the hash of the weights
    it reads (``checkpoint``, or for ``neural`` the shipped one) and of the settings in their JSON
    that change the stems (:func:`checkpoint_settings`: the architecture and the ``inference``
    settings, with the ``shifts`` a run asks for in place of the file's). Training notes are left
    out: editing them, or asking for the shifts the checkpoint already uses, keeps the stems.
    None for what does not exist."""
    from filmrestore.audio import hash_file

    weights = checkpoint or (str(DEFAULT_CHECKPOINT) if name == "neural" else None)
    path = Path(weights) if weights else None
    config = path.with_suffix(".json") if path is not None else None
    settings = None
    if config is not None and config.is_file():
        effective = checkpoint_settings(config, shifts)
        settings = hashlib.sha256(json.dumps(effective, sort_keys=True).encode()).hexdigest() \
            if effective is not None else hash_file(config)
    return {"weights": hash_file(path) if path is not None and path.is_file() else None,
            "weights_settings": settings}


#: A checkpoint's inference settings and their values when absent: the one list that loading
#: (NeuralSeparator.from_checkpoint), checking (checkpoint.read_config) and keying a run read.
INFERENCE_DEFAULTS = {"mask_power": 1.0, "upsample": 1, "shifts": 1, "smooth_frames": 0.0, "smooth_bins": 0.0}


def checkpoint_settings(config: Path, shifts: int | None = None) -> dict[str, Any] | None:
    """The part of a checkpoint's JSON that the stems depend on, with defaults filled in and
    ``shifts`` (when given) in place of the file's: everything but ``notes``, and of ``inference``
    only :data:`INFERENCE_DEFAULTS`' keys (not its free-text ``chosen_on``). None when the file is
    not a JSON object (loading the checkpoint then says what is wrong)."""
    try:
        doc = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("inference") or {}, dict):
        return None
    asked = doc.get("inference") or {}
    inference = {key: asked.get(key, default) for key, default in INFERENCE_DEFAULTS.items()}
    if shifts is not None:
        inference["shifts"] = shifts
    return {**{key: value for key, value in doc.items() if key != "notes"}, "inference": inference}


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
