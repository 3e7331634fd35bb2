"""Training the band-split separator on DnR folders, resumable, with mixed precision on CUDA.

Loss: for each stem, L1 distance of waveforms plus L1 distance of STFT magnitudes
(n_fft 1024), both divided by the mixture's mean absolute value so that loud and quiet
examples weigh the same. The model is saved after every epoch as a checkpoint
(:mod:`.checkpoint`); the optimizer state goes beside it as ``OUT.state.safetensors``
(tensors) + ``OUT.state.json`` (step, epoch, hyper-parameters), never pickled, so a
run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from filmrestore.errors import CheckpointError, ConfigError
from filmrestore.separation.bandsplit import BandSplitConfig, BandSplitNet
from filmrestore.separation.checkpoint import load_checkpoint, save_checkpoint
from filmrestore.separation.dataset import RemixDataset, resolve_split
from filmrestore.separation.engine import resolve_device
from filmrestore.separation.neural import NeuralSeparator

LogCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (recorded in the checkpoint's notes)."""

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 4
    segment_s: float = 3.0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    p_cross: float = 0.5
    seed: int = 0
    max_minutes: float | None = None  # stop (after saving) once this much wall time has passed
    num_workers: int = 0


def state_paths(out: Path) -> tuple[Path, Path]:
    """The optimizer-state files that belong to checkpoint ``out``."""
    return out.with_suffix(".state.safetensors"), out.with_suffix(".state.json")


def separation_loss(estimate: torch.Tensor, target: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Scale-normalised waveform + STFT-magnitude L1.

    Args:
        estimate, target: stems [shape=(batch, 3, n_channels, n_samples)].
        mix: [shape=(batch, n_channels, n_samples)].
    """
    scale = mix.abs().mean(dim=(1, 2)).clamp_min(1e-5)[:, None]
    wave = (estimate - target).abs().flatten(1).mean(1) / scale[:, 0]
    window = torch.hann_window(1024, device=mix.device)
    def mag(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x.flatten(0, 2), 1024, 256, window=window, return_complex=True).abs()
    spec = (mag(estimate) - mag(target)).abs().reshape(estimate.shape[0], -1).mean(1)
    return (wave + spec / (scale[:, 0] * 32.0)).mean()


def train(data_dir: str | Path, out: str | Path, config: TrainConfig = TrainConfig(),
          model_config: BandSplitConfig | None = None, device: str = "auto", resume: bool = True,
          on_log: LogCallback | None = None) -> Path:
    """Train on ``data_dir`` (its ``train/`` folder when there is one); write checkpoint ``out``.

    Resumes from ``out`` and its state files when they exist and ``resume`` is true
    (``model_config`` is then taken from the checkpoint). ``on_log`` receives one dict
    per logged step and per epoch (keys ``event``, ``epoch``, ``step``, ``loss``, ...).
    Returns ``out``.
    """
    out = Path(out)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    net, optimizer, start_epoch, step = _initial_state(out, model_config, config, dev, resume)
    dataset = RemixDataset(resolve_split(data_dir, "train"), config.segment_s,
                           config.steps_per_epoch * config.batch_size, remix=True,
                           p_cross=config.p_cross, seed=config.seed)
    model = NeuralSeparator(net).to(dev).train()
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        dataset.set_epoch(epoch)
        losses, step = _run_epoch(model, optimizer, dataset, config, dev, epoch, step, on_log)
        _save(out, net, optimizer, epoch + 1, step, config, float(np.mean(losses)))
        _log(on_log, event="epoch", epoch=epoch + 1, step=step, loss=float(np.mean(losses)),
             elapsed_s=time.monotonic() - started)
        if config.max_minutes is not None and time.monotonic() - started > 60.0 * config.max_minutes:
            break
    return out


def _run_epoch(model: NeuralSeparator, optimizer: torch.optim.Optimizer, dataset: RemixDataset,
               config: TrainConfig, dev: torch.device, epoch: int, step: int,
               on_log: LogCallback | None) -> tuple[list[float], int]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                                         num_workers=config.num_workers, drop_last=True)
    use_amp = dev.type == "cuda"
    losses = []
    for mix, stems in loader:
        mix, stems = mix.to(dev), stems.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            estimate = model(mix)
        loss = separation_loss(estimate.float(), stems, mix)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise ConfigError(f"training diverged at step {step} (loss {losses[-1]}); lower the learning rate")
        _log(on_log, event="step", epoch=epoch, step=step, loss=losses[-1])
    return losses, step


def _initial_state(out: Path, model_config: BandSplitConfig | None, config: TrainConfig,
                   dev: torch.device, resume: bool) -> tuple[BandSplitNet, torch.optim.Optimizer, int, int]:
    state_tensors, state_json = state_paths(out)
    if resume and out.exists() and state_json.exists():
        net, _ = load_checkpoint(out)
        net.to(dev)
        optimizer = _optimizer(net, config)
        epoch, step = _load_optimizer(optimizer, state_tensors, state_json, dev)
        return net, optimizer, epoch, step
    net = BandSplitNet(model_config or BandSplitConfig()).to(dev)
    return net, _optimizer(net, config), 0, 0


def _optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _save(out: Path, net: BandSplitNet, optimizer: torch.optim.Optimizer, epoch: int, step: int,
          config: TrainConfig, loss: float) -> None:
    notes = {"epoch": epoch, "step": step, "train_loss": loss, "train_config": asdict(config)}
    save_checkpoint(out, net, notes)
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    state_tensors, state_json = state_paths(out)
    save_file(tensors, str(state_tensors.with_name(state_tensors.name + ".part")))
    os.replace(state_tensors.with_name(state_tensors.name + ".part"), state_tensors)
    state_json.write_text(json.dumps({"epoch": epoch, "step": step, "optimizer": meta}, indent=1))


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer ``state_dict`` -> (tensors keyed ``state.<param>.<name>``, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors_path: Path, json_path: Path,
                    dev: torch.device) -> tuple[int, int]:
    try:
        doc = json.loads(json_path.read_text())
        tensors = load_file(str(tensors_path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(tensors_path, f"cannot resume: optimizer state unreadable ({exc})") from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value.to(dev) if name != "step" else value
    for index, values in doc["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer"]["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(tensors_path, f"optimizer state does not match the model ({exc})") from exc
    return int(doc["epoch"]), int(doc["step"])


def _log(on_log: LogCallback | None, **record: Any) -> None:
    if on_log is not None:
        on_log(record)
