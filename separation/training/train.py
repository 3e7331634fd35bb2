"""Training the band-split separator: on-the-fly legacy-film mixtures from a source bank (or DnR
folders), warmup + cosine learning rate, EMA weights, validation with the best checkpoint kept.

* **Data.** ``data`` is a source bank (a folder with ``bank.json``, :mod:`.bank`): every
  example is mixed fresh by :class:`~.mixer.MixerDataset` from the bank's ``train`` split,
  and validation uses fixed mixtures of its ``valid`` split (never ``test``). Or ``data``
  is a DnR folder tree: examples are remixed from its items (:class:`~.dataset.RemixDataset`)
  and validation uses the stored items of ``valid/`` (or ``test/``) when present.
* **Loss** (:func:`separation_loss`): per stem, RMS-SNR of the waveform plus RMS-SNR of
  multi-resolution STFT magnitudes (n_fft 512 and 2048, half-overlapping frames: on a CPU
  a third of the cost of three resolutions at 75 % overlap), each ``10 log10(rms(e - s) /
  rms(s))`` (e the estimate, s the target) regularised by an eps tied to the mixture's
  level, so loud and quiet examples and stems weigh alike; a silent (dropped) stem adds a
  bounded penalty on what the model puts in it.
  ``loss_norm`` 1 puts L1-SNR in their place (on the same dB scale), as the models before
  this one were trained: its optimum in each bin is the median of what the target may be where
  RMS-SNR's is the mean, and SI-SDR, an energy ratio, rewards the mean.
* **Schedule.** AdamW; linear warmup over ``warmup_steps``, cosine decay to
  ``min_lr_ratio`` of the peak at ``total_steps`` (default: the run's epochs x steps).
* **EMA** of the weights (``ema_decay``) is what is validated and shipped.
* **Checkpoints.** After each epoch the EMA model is validated (SI-SDRi per stem on
  the validation mixtures); ``OUT`` (safetensors, fp16, + JSON with the training log:
  steps, hours of audio seen, validation SI-SDRi per stem) is replaced only when the mean
  improves. ``OUT.state.safetensors`` / ``.state.json`` hold the last raw and EMA weights
  and the optimizer (tensors and JSON, never pickled), so a run resumes where it stopped;
  ``init`` starts a fresh run from another checkpoint's weights (e.g. the shipped one). The
  state records the run's :class:`TrainConfig`: a resume with another recipe (loss, rate,
  batch, mixer shares) is refused, one that only runs longer or on other threads is not.
"""

from __future__ import annotations

import dataclasses
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
from filmrestore.separation.engine import resolve_device
from filmrestore.separation.neural import NeuralSeparator

LogCallback = Callable[[dict[str, Any]], None]
_STFT_SIZES = (512, 2048)


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
    warmup_steps: int = 0
    total_steps: int | None = None  # end of the cosine; default epochs * steps_per_epoch
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.0  # 0: no EMA (the raw weights are validated and saved)
    valid_examples: int = 0  # validation mixtures (bank data); 0: no validation, save every epoch
    p_cross: float = 0.5  # DnR folders only: cross-item remixing
    seed: int = 0
    max_minutes: float | None = None  # stop (after saving) once this much wall time has passed
    epoch_minutes: float | None = None  # end an epoch (validate, save) after this long, even short of its steps
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    dialogue_weight: float = 1.0  # the dialogue stem's weight in the loss (music and effects: 1)
    p_codec: float = 0.0  # bank data only: share of mixtures sent through a lossy codec (MixerConfig.p_codec)
    p_restore: float = 0.0  # bank data only: share of mixtures through the restore stage (MixerConfig.p_restore)
    p_solo: float = 0.0  # bank data only: share of mixtures with one stem alone (MixerConfig.p_solo)
    speech_weighting: str = "hours"  # bank data only: how dialogue speakers are drawn (MixerConfig.speech_weighting)
    loss_norm: int = 2  # 2: RMS-SNR loss terms (each bin's optimum is the mean answer); 1: L1-SNR (the median)
    spec_weight: float = 1.0  # weight of the STFT-magnitude terms beside the waveform term (0: waveform alone)

    def __post_init__(self) -> None:
        if self.loss_norm not in LOSS_NORMS:
            raise ConfigError(f"loss norm must be one of {sorted(LOSS_NORMS)}, not {self.loss_norm}")
        if not (isinstance(self.spec_weight, (int, float)) and 0.0 <= self.spec_weight <= 100.0):
            raise ConfigError(f"spec weight must be in [0, 100], not {self.spec_weight!r}")


#: :class:`TrainConfig` fields that say how long and on how many threads a run goes, not what it
#: learns: a resumed run may change them (``epochs`` also moves the cosine's end when ``total_steps``
#: is unset: that is how a run is lengthened). Every other field must be what the run started with.
RUN_CONTROL_FIELDS = frozenset({"epochs", "max_minutes", "epoch_minutes", "num_workers", "threads"})


def recipe_changes(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """``["loss_norm 2 (was 1)", ...]``: the recipe fields where ``config`` differs from a run's
    ``recorded`` config (fields one of them does not know are not compared)."""
    now = asdict(config)
    return [f"{name} {now[name]!r} (was {recorded[name]!r})" for name in sorted(now)
            if name in recorded and name not in RUN_CONTROL_FIELDS and recorded[name] != now[name]]


def state_paths(out: Path) -> tuple[Path, Path]:
    """The training-state files that belong to checkpoint ``out``."""
    return out.with_suffix(".state.safetensors"), out.with_suffix(".state.json")


def l1snr_db(estimate: torch.Tensor, target: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``10 log10((mean|e - s| + eps) / (mean|s| + eps))`` over the last axis (lower is better)."""
    return 10.0 * (torch.log10((estimate - target).abs().mean(-1) + eps)
                   - torch.log10(target.abs().mean(-1) + eps))


def l2snr_db(estimate: torch.Tensor, target: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``10 log10(rms(e - s) / rms(s))`` over the last axis, eps-regularised like :func:`l1snr_db`
    and on its scale (half the power SNR in dB; lower is better). Its optimum per bin is the mean
    of what the target may be given the mix, where L1's is the median: the mean is what SI-SDR,
    an energy ratio, rewards."""
    return 5.0 * (torch.log10((estimate - target).square().mean(-1) + eps ** 2)
                  - torch.log10(target.square().mean(-1) + eps ** 2))


LOSS_NORMS = {1: l1snr_db, 2: l2snr_db}


def _stem_loss(estimate: torch.Tensor, target: torch.Tensor, level: torch.Tensor, norm: int = 2) -> torch.Tensor:
    """Per example and stem [shape=(batch, stems)]: L1-SNR (``norm`` 1) or RMS-SNR (2) in dB where
    the target sounds, and where it is silent (a dropped stem) ``10 * mean|estimate| / level``, a
    bounded push towards silence.

    A silent target's SNR would be ``10 log10(|estimate| / eps)``, 25 dB for a third of the
    mix: dropped stems would drown the loss of every stem that is there.
    """
    eps = (1e-3 * level)[:, None]
    sounding = target.abs().mean(-1) > eps
    snr = LOSS_NORMS[norm](estimate, target, eps)
    silent = 10.0 * estimate.abs().mean(-1) / level[:, None]
    return torch.where(sounding, snr, silent)


_MAX_SKIPPED_STEPS = 20  # batches in a row with a non-finite loss or gradient before training stops


def separation_loss(estimate: torch.Tensor, target: torch.Tensor, mix: torch.Tensor,
                    dialogue_weight: float = 1.0, norm: int = 2, spec_weight: float = 1.0) -> torch.Tensor:
    """Waveform + ``spec_weight`` x multi-resolution STFT-magnitude RMS-SNR (``norm`` 1: L1-SNR), mean
    over examples and stems, in dB (see :func:`_stem_loss` for silent stems); the dialogue stem weighs
    ``dialogue_weight`` against 1 for music and effects (a weighted mean, so the loss keeps its scale).

    The magnitude terms are blind to phase: in a bin where the stems' phases disagree they pull a
    mask towards ``|S| / |X|``, above the phase-sensitive ``Re(S X*) / |X|^2`` that the waveform
    term (and SI-SDR) rewards. ``spec_weight`` 0 leaves the waveform term alone.

    Args:
        estimate, target: stems [shape=(batch, 3, n_channels, n_samples)].
        mix: [shape=(batch, n_channels, n_samples)].
    """
    n_batch, n_stems = estimate.shape[:2]
    level = mix.abs().mean(dim=(1, 2)).clamp_min(1e-6)  # (batch,)
    wave = _stem_loss(estimate.flatten(2), target.flatten(2), level, norm)  # (batch, stems)
    flat_e, flat_t, flat_m = estimate.flatten(0, 2), target.flatten(0, 2), mix.flatten(0, 1)
    spec = torch.zeros_like(wave)
    for n_fft in _STFT_SIZES if spec_weight else ():
        if flat_e.shape[-1] < n_fft:
            continue
        window = torch.hann_window(n_fft, device=mix.device)
        def mag(x: torch.Tensor) -> torch.Tensor:
            return torch.stft(x, n_fft, n_fft // 2, window=window, return_complex=True).abs()
        e = mag(flat_e).reshape(n_batch, n_stems, -1)
        with torch.no_grad():
            t = mag(flat_t).reshape(n_batch, n_stems, -1)
            m = mag(flat_m).reshape(n_batch, -1).mean(-1).clamp_min(1e-6)
        spec = spec + _stem_loss(e, t, m, norm) / len(_STFT_SIZES)
    weights = torch.ones(n_stems, device=mix.device)
    weights[0] = dialogue_weight
    return ((wave + spec_weight * spec) * weights).sum(-1).mean() / weights.sum()


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``learning_rate``, then cosine decay to ``min_lr_ratio`` of it."""
    total = config.total_steps or config.epochs * config.steps_per_epoch
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class _State:
    net: BandSplitNet
    ema: BandSplitNet
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0
    seconds_seen: float = 0.0
    best: float = -math.inf
    history: list[dict[str, Any]] | None = None
    #: Whether the EMA's decay warms up (:func:`_update_ema`): only from random weights. From trained
    #: weights (``init``) the EMA starts as them at full decay, so it averages away from them slowly.
    ema_ramp: bool = True


def train(data_dir: str | Path, out: str | Path, config: TrainConfig = TrainConfig(),
          model_config: BandSplitConfig | None = None, device: str = "auto", resume: bool = True,
          on_log: LogCallback | None = None, init: str | Path | None = None,
          mixer_config: Any = None, deepen: tuple[int, ...] = ()) -> Path:
    """Train on ``data_dir`` (a source bank, or DnR folders); write checkpoint ``out``.

    Resumes from ``out``'s state files when they exist and ``resume`` is true
    (``model_config`` is then taken from the state). Otherwise starts from ``init``'s
    weights when given (with one identity block pair appended per dilation in ``deepen``,
    :func:`~.grow.deepen`: more capacity, the same function to start from), else from a fresh
    ``model_config`` network. ``on_log`` receives
    one dict per step (``event="step"``) and per epoch (``event="epoch"``, with the
    validation figures). Returns ``out``.
    """
    out = Path(out)
    dev = resolve_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    state = _initial_state(out, model_config, config, dev, resume, init, deepen)
    dataset, valid = _data(data_dir, config, mixer_config)
    model = NeuralSeparator(state.net).to(dev).train()
    started = time.monotonic()
    for epoch in range(state.epoch, config.epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        losses = _run_epoch(model, state, dataset, config, dev, epoch, on_log)
        state.epoch = epoch + 1
        scores = validate(state.ema, valid, dev) if valid is not None else None
        record = {"epoch": state.epoch, "step": state.step, "loss": float(np.mean(losses)),
                  "hours_seen": state.seconds_seen / 3600.0, "elapsed_s": time.monotonic() - started,
                  "lr": learning_rate(state.step, config), **({"valid": scores} if scores else {})}
        state.history = [*(state.history or []), record]
        _save(out, state, config, scores, data_dir, mixer_config)
        _log(on_log, event="epoch", **record)
        if config.max_minutes is not None and time.monotonic() - started > 60.0 * config.max_minutes:
            break
    return out


def _data(data_dir: str | Path, config: TrainConfig, mixer_config: Any) -> tuple[Any, Any]:
    """(training dataset, validation batch or None) for a bank or a DnR tree."""
    root = Path(data_dir)
    n_examples = config.steps_per_epoch * config.batch_size
    if (root / "bank.json").is_file():
        from filmrestore.separation.training.bank import SourceBank
        from filmrestore.separation.training.mixer import MixerConfig, MixerDataset

        bank = SourceBank(root)
        mixer = mixer_config or MixerConfig(segment_s=config.segment_s, p_codec=config.p_codec,
                                            p_restore=config.p_restore, p_solo=config.p_solo,
                                            speech_weighting=config.speech_weighting)
        dataset = MixerDataset(bank, "train", n_examples, mixer, seed=config.seed)
        valid = None
        if config.valid_examples:
            # Validation mixtures are made as the held-out items are (no codec, restore or solo shares:
            # those are training's emphasis, not what the best checkpoint is chosen for).
            held_out = dataclasses.replace(mixer, p_codec=0.0, p_restore=0.0, p_solo=0.0)
            probe = MixerDataset(bank, "valid", config.valid_examples, held_out, seed=10_000 + config.seed)
            valid = _stack([probe[i] for i in range(len(probe))])
        return dataset, valid
    from filmrestore.separation.training.dataset import RemixDataset, resolve_split

    dataset = RemixDataset(resolve_split(root, "train"), config.segment_s, n_examples, remix=True,
                           p_cross=config.p_cross, seed=config.seed)
    valid = None
    held_out = next((root / s for s in ("valid", "test") if (root / s).is_dir()), None)
    if config.valid_examples and held_out is not None:
        probe = RemixDataset(held_out, config.segment_s, config.valid_examples, remix=False, seed=config.seed)
        valid = _stack([probe[i] for i in range(len(probe))])
    return dataset, valid


def _stack(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    mix, stems = zip(*pairs)
    return torch.stack(mix), torch.stack(stems)


def _run_epoch(model: NeuralSeparator, state: _State, dataset: Any, config: TrainConfig,
               dev: torch.device, epoch: int, on_log: LogCallback | None) -> list[float]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                                         num_workers=config.num_workers, drop_last=True,
                                         persistent_workers=False)
    use_amp = dev.type == "cuda"
    losses = []
    skipped = 0
    started = time.monotonic()
    for mix, stems in loader:
        if losses and config.epoch_minutes is not None and time.monotonic() - started > 60.0 * config.epoch_minutes:
            break
        mix, stems = mix.to(dev), stems.to(dev)
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate(state.step, config)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            estimate = model(mix)
        loss = separation_loss(estimate.float(), stems, mix, config.dialogue_weight, config.loss_norm,
                               config.spec_weight)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if not (math.isfinite(float(loss.detach())) and math.isfinite(float(grad_norm))):
            # One bad batch must not poison the weights: skip it; many in a row is divergence.
            skipped += 1
            if skipped >= _MAX_SKIPPED_STEPS:
                raise ConfigError(f"training diverged at step {state.step} ({skipped} batches in a row with a "
                                  f"non-finite loss or gradient); lower the learning rate")
            _log(on_log, event="skipped", epoch=epoch, step=state.step, loss=float(loss.detach()))
            continue
        skipped = 0
        state.optimizer.step()
        _update_ema(state.ema, state.net, config.ema_decay, state.step, state.ema_ramp)
        state.step += 1
        state.seconds_seen += mix.shape[0] * mix.shape[-1] / model.sample_rate_hz
        losses.append(float(loss.detach()))
        _log(on_log, event="step", epoch=epoch, step=state.step, loss=losses[-1])
    return losses


@torch.no_grad()
def _update_ema(ema: BandSplitNet, net: BandSplitNet, decay: float, step: int, ramp: bool = True) -> None:
    """``ema <- d ema + (1 - d) net``. With ``ramp`` the decay warms up as ``(1 + step) / (10 + step)``
    (as timm does), so that the average forgets a random start: it reaches 0.998 only at step 4,490,
    and at step 300 it averages about the last 30 steps. From trained weights there is nothing to
    forget, and ``ramp`` is off: ``d`` is ``decay`` from the first step."""
    d = (min(decay, (1.0 + step) / (10.0 + step)) if ramp else decay) if decay > 0 else 0.0
    for e, p in zip(ema.parameters(), net.parameters()):
        e.lerp_(p.detach(), 1.0 - d)


@torch.no_grad()
def validate(net: BandSplitNet, valid: tuple[torch.Tensor, torch.Tensor], dev: torch.device,
             batch_size: int = 4) -> dict[str, float]:
    """Mean SI-SDR improvement per stem (dB) of ``net`` on fixed mixtures, and their mean."""
    from filmrestore.separation.base import STEMS
    from filmrestore.separation.training.metrics import si_sdr

    model = NeuralSeparator(net).to(dev).eval()
    mix, stems = valid
    gains: dict[str, list[float]] = {s: [] for s in STEMS}
    for i in range(0, mix.shape[0], batch_size):
        est = model(mix[i:i + batch_size].to(dev)).float().cpu().numpy()
        for j in range(est.shape[0]):
            m, ref = mix[i + j].numpy(), stems[i + j].numpy()
            for k, stem in enumerate(STEMS):
                if np.sqrt(np.mean(ref[k] ** 2)) > 1e-4:
                    gains[stem].append(si_sdr(est[j, k], ref[k]) - si_sdr(m, ref[k]))
    scores = {f"{s}_si_sdri_db": float(np.mean(v)) for s, v in gains.items() if v}
    scores["mean_si_sdri_db"] = float(np.mean(list(scores.values()))) if scores else float("nan")
    return scores


def _initial_state(out: Path, model_config: BandSplitConfig | None, config: TrainConfig,
                   dev: torch.device, resume: bool, init: str | Path | None, deepen: tuple[int, ...] = ()) -> _State:
    state_tensors, state_json = state_paths(out)
    if resume and state_json.exists():
        return _load_state(state_tensors, state_json, config, dev)
    if init is not None:
        net, _ = load_checkpoint(init)
        if deepen:
            from filmrestore.separation.training.grow import deepen as grow

            net = grow(net, tuple(deepen))
    elif deepen:
        raise ConfigError("deepen grows a trained network: give the checkpoint to start from (init)")
    else:
        net = BandSplitNet(model_config or BandSplitConfig())
    net = net.float().to(dev)
    ema = BandSplitNet(net.config).to(dev)
    ema.load_state_dict(net.state_dict())
    return _State(net, ema.requires_grad_(False), _optimizer(net, config), ema_ramp=init is None)


def _optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _save(out: Path, state: _State, config: TrainConfig, scores: dict[str, float] | None,
          data: str | Path, mixer_config: Any) -> None:
    improved = scores is None or scores["mean_si_sdri_db"] > state.best or not out.exists()
    if scores is not None and improved:
        state.best = scores["mean_si_sdri_db"]
    if improved:
        notes = {"epoch": state.epoch, "step": state.step, "hours_seen": round(state.seconds_seen / 3600.0, 3),
                 "valid": scores, "data": str(data), "train_config": asdict(config),
                 "mixer_config": asdict(mixer_config) if mixer_config is not None else None,
                 "history": state.history}
        save_checkpoint(out, state.ema, notes, dtype=torch.float16)
    tensors, meta = _flatten_optimizer(state.optimizer.state_dict())
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in state.net.state_dict().items()})
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in state.ema.state_dict().items()})
    state_tensors, state_json = state_paths(out)
    part = state_tensors.with_name(state_tensors.name + ".part")
    save_file(tensors, str(part))
    os.replace(part, state_tensors)
    doc = {"epoch": state.epoch, "step": state.step, "seconds_seen": state.seconds_seen, "best": state.best,
           "history": state.history, "model_config": state.net.config.to_dict(), "train_config": asdict(config),
           "ema_ramp": state.ema_ramp, "optimizer": meta}
    part = state_json.with_name(state_json.name + ".part")
    part.write_text(json.dumps(doc, indent=1))
    os.replace(part, state_json)


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


def _load_state(tensors_path: Path, json_path: Path, config: TrainConfig, dev: torch.device) -> _State:
    try:
        doc = json.loads(json_path.read_text())
        tensors = load_file(str(tensors_path))
        model_config = BandSplitConfig.from_dict(doc["model_config"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(tensors_path, f"cannot resume: training state unreadable ({exc})") from exc
    changes = recipe_changes(doc.get("train_config") or {}, config)
    if changes:  # a resumed run that silently changed its loss or schedule would not be the run it claims
        raise ConfigError(f"{json_path}: cannot resume with another recipe: {', '.join(changes)}; give the "
                          "options the run started with, or start afresh (another OUT, or --fresh)")
    net, ema = BandSplitNet(model_config), BandSplitNet(model_config)
    try:
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as exc:
        raise CheckpointError(tensors_path, f"cannot resume: weights do not match ({exc})") from exc
    net.to(dev)
    optimizer = _optimizer(net, config)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(dev) if name != "step" else value
    for index, values in doc["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer"]["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(tensors_path, f"optimizer state does not match the model ({exc})") from exc
    return _State(net, ema.to(dev).requires_grad_(False), optimizer, int(doc["epoch"]), int(doc["step"]),
                  float(doc.get("seconds_seen", 0.0)), float(doc.get("best", -math.inf)), doc.get("history"),
                  bool(doc.get("ema_ramp", True)))


def _log(on_log: LogCallback | None, **record: Any) -> None:
    if on_log is not None:
        on_log(record)


def main(argv: list[str] | None = None) -> None:
    """``python -m filmrestore.separation.training.train BANK --out CKPT ...``: training without the CLI's
    Prefect and Typer imports, for a lent GPU machine (``separation/training/train_device.sh``)."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the band-split separator on a source bank.")
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path)
    parser.add_argument("--deepen", type=lambda v: tuple(int(d) for d in v.split(",")), default=())
    parser.add_argument("--device", default="auto")
    for name, kind in (("epochs", int), ("steps_per_epoch", int), ("batch_size", int), ("segment_s", float),
                       ("learning_rate", float), ("warmup_steps", int), ("total_steps", int),
                       ("ema_decay", float), ("valid_examples", int), ("max_minutes", float),
                       ("epoch_minutes", float), ("num_workers", int), ("threads", int), ("seed", int),
                       ("dialogue_weight", float), ("p_codec", float), ("p_restore", float),
                       ("p_solo", float), ("speech_weighting", str), ("loss_norm", int),
                       ("spec_weight", float)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(TrainConfig, name))
    args = parser.parse_args(argv)
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})

    def log(record: dict[str, Any]) -> None:
        if record["event"] == "epoch":
            print(json.dumps(record), flush=True)

    train(args.data, args.out, config, device=args.device, on_log=log, init=args.init, deepen=args.deepen)


if __name__ == "__main__":
    main()
