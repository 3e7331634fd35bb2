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
    context_frames = 33600  # 0.7 s: covers the time blocks' receptive field (0.64 s each side)
    supports_autocast = True

    def __init__(self, net: BandSplitNet) -> None:
        super().__init__()
        self.net = net
        self.config: BandSplitConfig = net.config
        self.register_buffer("window", torch.hann_window(net.config.n_fft), persistent=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> NeuralSeparator:
        """Load a safetensors checkpoint and its JSON config (see :mod:`.checkpoint`)."""
        from filmrestore.separation.checkpoint import load_checkpoint

        net, _ = load_checkpoint(path)
        return cls(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, n_channels, n_samples)] -> [shape=(batch, 3, n_channels, n_samples)]."""
        n_batch, n_channels, n_samples = x.shape
        flat = x.reshape(n_batch * n_channels, n_samples).float()
        rms = flat.square().mean(-1, keepdim=True).sqrt().clamp_min(_RMS_FLOOR)
        spec = self._stft(flat / rms)
        masks = self.net(spec).float()  # (n, 3, n_bins, n_frames)
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
