"""The neural DME separator: :class:`~filmrestore.separation.bandsplit.BandSplitNet` masks
applied to the mixture's STFT, behind the :class:`~filmrestore.separation.base.Separator`
interface (so the streaming engine runs it, on CPU or CUDA with bf16 autocast).
"""

from __future__ import annotations

from pathlib import Path

import torch

from filmrestore.separation.bandsplit import N_STEMS, BandSplitConfig, BandSplitNet
from filmrestore.separation.base import Separator

_RMS_FLOOR = 1e-5  # -100 dBFS: below this a segment is treated as silence


class NeuralSeparator(Separator):
    """Band-split mask estimation; channels are separated independently.

    Each segment is normalised by its RMS before the STFT (the masks are scale
    invariant; the features are not), masked, inverted and scaled back.
    """

    name = "neural"
    context_frames = 129024  # 2.7 s: half the time modules' receptive field (126 hops each side)
    supports_autocast = True

    def __init__(self, net: BandSplitNet, mask_power: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.config: BandSplitConfig = net.config
        #: Masks are sharpened to ``m_i^p / sum_j m_j^p`` (p = 2 is the Wiener mask of the
        #: masked estimates' powers); 1 leaves the trained masks as they are.
        self.mask_power = float(mask_power)
        self.register_buffer("window", torch.hann_window(net.config.n_fft), persistent=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> NeuralSeparator:
        """Load a safetensors checkpoint and its JSON config (see :mod:`.checkpoint`); the
        config's ``inference.mask_power`` (chosen on the validation split) applies."""
        from filmrestore.separation.checkpoint import load_checkpoint

        net, doc = load_checkpoint(path)
        return cls(net, mask_power=float((doc.get("inference") or {}).get("mask_power", 1.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, n_channels, n_samples)] -> [shape=(batch, 3, n_channels, n_samples)]."""
        n_batch, n_channels, n_samples = x.shape
        flat = x.reshape(n_batch * n_channels, n_samples).float()
        rms = flat.square().mean(-1, keepdim=True).sqrt().clamp_min(_RMS_FLOOR)
        spec = self._stft(flat / rms)
        masks = self.net(spec).float()  # (n, 3, n_bins, n_frames)
        if self.mask_power != 1.0:
            masks = masks.pow(self.mask_power)
            masks = masks / masks.sum(1, keepdim=True).clamp_min(1e-12)
        stems = self._istft(masks * spec[:, None], n_samples) * rms[:, None]
        return stems.reshape(n_batch, n_channels, N_STEMS, n_samples).transpose(1, 2)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(n, n_samples)] -> complex [shape=(n, n_bins, n_frames)], float32 always."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.stft(x.float(), self.config.n_fft, self.config.hop_frames, window=self.window,
                              normalized=True, return_complex=True)

    def _istft(self, spec: torch.Tensor, n_samples: int) -> torch.Tensor:
        """complex [shape=(n, 3, n_bins, n_frames)] -> [shape=(n, 3, n_samples)]."""
        n = spec.shape[0]
        with torch.autocast(spec.device.type, enabled=False):
            y = torch.istft(spec.reshape(n * N_STEMS, *spec.shape[2:]), self.config.n_fft,
                            self.config.hop_frames, window=self.window, normalized=True, length=n_samples)
        return y.reshape(n, N_STEMS, n_samples)
