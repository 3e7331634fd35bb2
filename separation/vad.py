"""Silero VAD, run vectorised over a whole segment.

The silero-vad wheel ships its TorchScript model; its reference loop
(``model(chunk, 16000)`` per 32 ms chunk) costs one Python call per chunk.
The network is a per-chunk encoder (STFT as a convolution, four conv blocks)
followed by an LSTM cell, so the encoder can run on every chunk at once and
the LSTM over the chunk sequence in one call. The weights are read from the
TorchScript file in the wheel (never downloaded); the output matches the
reference loop within 1e-5 (see tests/test_separation.py).

The ``silero_vad`` package is located but not imported: importing it calls
``torch.set_num_threads(1)`` for the whole process.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

from filmrestore.errors import CheckpointError, ConfigError

VAD_RATE_HZ = 16000
VAD_CHUNK_FRAMES = 512  # 32 ms at 16 kHz: the chunk the model was trained on
_CONTEXT_FRAMES = 64  # samples of the previous chunk the model prepends
_STFT_PAD_FRAMES = 64  # reflection padding of the model's STFT front end
_ENCODER_STRIDES = (1, 2, 2, 1)


def silero_jit_path() -> Path:
    """Path of the TorchScript VAD model inside the installed silero-vad wheel."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ConfigError("the DSP separator needs the silero-vad package (pip install silero-vad)")
    return Path(spec.origin).parent / "data" / "silero_vad.jit"


def load_silero_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The 16 kHz model's tensors, keyed as in the TorchScript module without ``_model.``."""
    path = silero_jit_path() if path is None else path
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates jit.load; the wheel ships TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"cannot load the silero VAD model ({exc})") from exc
    prefix = "_model."
    return {k[len(prefix):]: v.detach().clone() for k, v in module.state_dict().items()
            if k.startswith(prefix)}


class SileroVAD(torch.nn.Module):
    """Speech probability per 32 ms chunk of 16 kHz audio.

    ``forward(x [shape=(batch, n_samples_16k)]) -> [shape=(batch, ceil(n_samples_16k / 512))]``,
    chunk ``i`` covering samples ``[512 i, 512 (i + 1))``; the LSTM state starts
    from zero at sample 0, as in the reference loop after ``reset_states()``.
    """

    def __init__(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        w = load_silero_weights() if weights is None else weights
        self.register_buffer("stft_basis", w["stft.forward_basis_buffer"])
        self.encoder = torch.nn.ModuleList()
        for i, _ in enumerate(_ENCODER_STRIDES):
            weight = w[f"encoder.{i}.reparam_conv.weight"]
            conv = torch.nn.Conv1d(weight.shape[1], weight.shape[0], weight.shape[2], padding=1)
            conv.load_state_dict({"weight": weight, "bias": w[f"encoder.{i}.reparam_conv.bias"]})
            self.encoder.append(conv)
        self.lstm = torch.nn.LSTM(128, 128, batch_first=True)
        self.lstm.load_state_dict({
            "weight_ih_l0": w["decoder.rnn.weight_ih"], "weight_hh_l0": w["decoder.rnn.weight_hh"],
            "bias_ih_l0": w["decoder.rnn.bias_ih"], "bias_hh_l0": w["decoder.rnn.bias_hh"],
        })
        self.head = torch.nn.Conv1d(128, 1, 1)
        self.head.load_state_dict({"weight": w["decoder.decoder.2.weight"],
                                   "bias": w["decoder.decoder.2.bias"]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch, n_samples = x.shape
        n_chunks = -(-n_samples // VAD_CHUNK_FRAMES)
        x = F.pad(x, (_CONTEXT_FRAMES, n_chunks * VAD_CHUNK_FRAMES - n_samples))
        chunks = x.unfold(1, _CONTEXT_FRAMES + VAD_CHUNK_FRAMES, VAD_CHUNK_FRAMES)
        features = self._encode(chunks.reshape(n_batch * n_chunks, 1, -1))
        hidden, _ = self.lstm(features.reshape(n_batch, n_chunks, -1))
        return torch.sigmoid(self.head(F.relu(hidden).transpose(1, 2)))[:, 0]

    def _encode(self, chunks: torch.Tensor) -> torch.Tensor:
        """[shape=(n, 1, 576)] chunks with context -> [shape=(n, 128)] features."""
        spec = F.conv1d(F.pad(chunks, (0, _STFT_PAD_FRAMES), mode="reflect"), self.stft_basis,
                        stride=128)
        n_bins = spec.shape[1] // 2
        h = torch.sqrt(spec[:, :n_bins] ** 2 + spec[:, n_bins:] ** 2)
        for conv, stride in zip(self.encoder, _ENCODER_STRIDES):
            h = F.relu(F.conv1d(h, conv.weight, conv.bias, stride=stride, padding=1))
        return h[:, :, 0]


class Decimate3(torch.nn.Module):
    """48 kHz -> 16 kHz: linear-phase FIR low-pass (7.2 kHz) and keep every third sample.

    ``forward(x [shape=(batch, n_samples)]) -> [shape=(batch, ceil(n_samples / 3))]``;
    output sample ``i`` is centred on input sample ``3 i`` (zero padding outside).
    """

    def __init__(self, n_taps: int = 63) -> None:
        super().__init__()
        taps = scipy.signal.firwin(n_taps, 7200.0, fs=48000.0).astype(np.float32)
        self.register_buffer("taps", torch.from_numpy(taps[::-1].copy()).view(1, 1, -1))
        self.half_frames = n_taps // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x.unsqueeze(1), (self.half_frames, self.half_frames))
        return F.conv1d(padded, self.taps, stride=3)[:, 0]


class FrameSpeechProbability(torch.nn.Module):
    """silero-vad speech probability per STFT frame of 48 kHz audio: the probability of the
    32 ms VAD chunk that holds each frame's centre (``torch.stft(center=True)``: frame ``t`` is
    centred on sample ``t * hop_frames``).

    ``forward(x [shape=(batch, n_samples)] at 48 kHz, n_frames) -> [shape=(batch, n_frames)]``.
    """

    def __init__(self, hop_frames: int) -> None:
        super().__init__()
        self.hop_frames = int(hop_frames)
        self.vad = SileroVAD()
        self.decimate = Decimate3()

    def forward(self, x: torch.Tensor, n_frames: int) -> torch.Tensor:
        probs = self.vad(self.decimate(x))
        centres = torch.arange(n_frames, device=x.device) * self.hop_frames
        index = torch.div(centres, 3 * VAD_CHUNK_FRAMES, rounding_mode="floor").clamp_(max=probs.shape[1] - 1)
        return probs[:, index]
