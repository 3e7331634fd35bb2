"""Neural separator checkpoints: a safetensors file of weights plus a JSON config beside it.

``model.safetensors`` holds only tensors (no pickle, so loading an untrusted file runs
no code); ``model.json`` holds the format name and version, the architecture and its
:class:`~filmrestore.separation.bandsplit.BandSplitConfig`, the sample rate, the stems
free-form training notes and optional ``inference`` settings chosen on the validation
split (``mask_power``, one number or one per stem by name; ``upsample``, the STFT the masks
are applied on is that many times as dense as the network's; ``shifts``, passes averaged; see
:class:`~filmrestore.separation.neural.NeuralSeparator`). Weights
may be stored as float16 (a shipped model) and load as float32. The safetensors header repeats the format, version and
architecture, so a weights file paired with the wrong config is caught. Every failure
(missing file, truncated file, bad JSON, other version, out-of-range config values,
tensors that do not fit the architecture or are not finite) raises :class:`~filmrestore.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from filmrestore.errors import CheckpointError
from filmrestore.separation import INFERENCE_DEFAULTS
from filmrestore.separation.bandsplit import BandSplitConfig, BandSplitNet
from filmrestore.separation.base import STEMS

FORMAT = "filmrestore-dme"
FORMAT_VERSION = 2  # 2: channels-last band-split mixer (bandsplit.py), fp16 weights
ARCHITECTURE = "bandsplit"
SAMPLE_RATE_HZ = 48000


def config_path(checkpoint: str | Path) -> Path:
    """The JSON config that belongs to ``checkpoint``: same name, ``.json`` suffix."""
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: str | Path, net: BandSplitNet, notes: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float32, inference: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (weights, stored as ``dtype``: float16 halves a shipped file) and its JSON
    config atomically; returns ``path``. Loading always gives float32 weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": ARCHITECTURE,
           "sample_rate_hz": SAMPLE_RATE_HZ, "stems": list(STEMS), "config": net.config.to_dict(),
           "notes": notes or {}}
    if inference:
        doc["inference"] = inference
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "architecture": ARCHITECTURE}
    _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    _atomic(config_path(path), lambda tmp: tmp.write_text(json.dumps(doc, indent=2)))
    return path


def load_checkpoint(path: str | Path) -> tuple[BandSplitNet, dict[str, Any]]:
    """Build the network from ``path`` and its JSON config; returns ``(net, config document)``."""
    path = Path(path)
    doc = read_config(path)
    try:
        config = BandSplitConfig.from_dict(doc["config"])
        net = BandSplitNet(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(config_path(path), f"invalid architecture config ({exc})") from exc
    tensors = _read_tensors(path)
    _check_tensors(path, net, tensors)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval(), doc


def read_config(path: Path) -> dict[str, Any]:
    """Parse and check the JSON config of checkpoint ``path``."""
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file does not exist")
    cfg_path = config_path(path)
    try:
        doc = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(cfg_path, f"config of checkpoint {path.name} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(cfg_path, f"config is not readable JSON ({exc})") from exc
    expected = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": ARCHITECTURE,
                "sample_rate_hz": SAMPLE_RATE_HZ, "stems": list(STEMS)}
    for key, value in expected.items():
        if doc.get(key) != value:
            raise CheckpointError(cfg_path, f"{key} is {doc.get(key)!r}; this version reads {value!r}")
    inference = {**INFERENCE_DEFAULTS, **(doc.get("inference") or {})}
    power = inference["mask_power"]
    values = list(power.values()) if isinstance(power, dict) and sorted(power) == sorted(STEMS) else [power]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.25 <= v <= 4.0 for v in values):
        raise CheckpointError(cfg_path, "inference.mask_power must be a number in [0.25, 4] or one per stem "
                              f"({', '.join(STEMS)}), got {power!r}")
    hop = (doc.get("config") or {}).get("hop_frames", BandSplitConfig.hop_frames)
    for name, hi in (("upsample", 16), ("shifts", 16)):
        value = inference[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hi
                and (name != "upsample" or (isinstance(hop, int) and hop % value == 0))):
            raise CheckpointError(cfg_path, f"inference.{name} must be an integer in [1, {hi}]"
                                  + (" that divides the hop" if name == "upsample" else "") + f", got {value!r}")
    for name in ("smooth_frames", "smooth_bins"):
        value = inference[name]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0 / 3.0):
            raise CheckpointError(cfg_path, f"inference.{name} must be a number in [0, 1/3], got {value!r}")
    return doc


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as f:
            header_bytes = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_bytes)).get("__metadata__", {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a complete safetensors file ({exc})") from exc
    if header.get("format") != FORMAT or header.get("architecture") != ARCHITECTURE \
            or header.get("version") != str(FORMAT_VERSION):
        raise CheckpointError(path, f"weights header {header} is not a {FORMAT} v{FORMAT_VERSION} "
                              f"{ARCHITECTURE} checkpoint")
    return tensors


def _check_tensors(path: Path, net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(path, f"weights do not match the config's architecture: missing "
                              f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                              f"{extra[:3]}{'...' if len(extra) > 3 else ''}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(path, f"tensor {key} has shape {tuple(tensors[key].shape)}; "
                                  f"the config's architecture needs {shape}")
        if not torch.isfinite(tensors[key]).all():
            raise CheckpointError(path, f"tensor {key} holds NaN or infinite values")


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(path, f"cannot write ({exc})") from exc
