"""The neural DME separator: :class:`~filmrestore.separation.bandsplit.BandSplitNet` masks
applied to the mixture's STFT, behind the :class:`~filmrestore.separation.base.Separator`
interface (so the streaming engine runs it, on CPU or CUDA with bf16 autocast).
"""

from __future__ import annotations

from pathlib import Path

import torch

from filmrestore.separation.bandsplit import N_STEMS, BandSplitConfig, BandSplitNet, MaskPower, stem_powers
from filmrestore.separation.base import STEMS, Separator

_RMS_FLOOR = 1e-5  # -100 dBFS: below this a segment is treated as silence


class NeuralSeparator(Separator):
    """Band-split mask estimation; channels are separated independently.

    Each segment is normalised by its RMS before the STFT (the masks are scale
    invariant; the features are not), masked, inverted and scaled back.
    """

    name = "neural"
    supports_autocast = True

    def __init__(self, net: BandSplitNet, mask_power: MaskPower = 1.0) -> None:
        super().__init__()
        self.net = net
        self.config: BandSplitConfig = net.config
        #: Half the time modules' receptive field, in samples (6 layers: 126 hops, 2.7 s, each side).
        self.context_frames = net.config.receptive_field_frames() // 2 * net.config.hop_frames
        #: Masks are sharpened to ``m_i^p / sum_j m_j^p`` (p = 2 is the Wiener mask of the
        #: masked estimates' powers); 1 leaves the trained masks as they are. With one p per stem
        #: (:data:`STEMS` order), ``m_i^p_i / sum_j m_j^p_j``.
        self.mask_power: tuple[float, ...] = stem_powers(mask_power)
        self.register_buffer("window", torch.hann_window(net.config.n_fft), persistent=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> NeuralSeparator:
        """Load a safetensors checkpoint and its JSON config (see :mod:`.checkpoint`); the
        config's ``inference.mask_power`` (chosen on the validation split: one number, or one
        per stem by name) applies."""
        from filmrestore.separation.checkpoint import load_checkpoint

        net, doc = load_checkpoint(path)
        power = (doc.get("inference") or {}).get("mask_power", 1.0)
        return cls(net, mask_power=tuple(power[s] for s in STEMS) if isinstance(power, dict) else power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, n_channels, n_samples)] -> [shape=(batch, 3, n_channels, n_samples)].

        The masks sum to one in every bin, so the inverse STFTs of the masked stems add up to
        the mixture: the last stem is computed as the mixture less the others (one inverse STFT
        fewer, and the stems sum to the input exactly).
        """
        n_batch, n_channels, n_samples = x.shape
        flat = x.reshape(n_batch * n_channels, n_samples).float()
        rms = flat.square().mean(-1, keepdim=True).sqrt().clamp_min(_RMS_FLOOR)
        flat = flat / rms
        frames = self._stft(flat).transpose(1, 2).contiguous()  # (n, n_frames, n_bins)
        masks = self.net.frame_masks(frames, self.mask_power).float()  # (n, 3, n_frames, n_bins)
        first = self._istft(masks[:, :N_STEMS - 1] * frames[:, None], n_samples)  # (n, 2, n_samples)
        stems = torch.cat([first, (flat - first.sum(1))[:, None]], dim=1) * rms[:, None]
        return stems.reshape(n_batch, n_channels, N_STEMS, n_samples).transpose(1, 2)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(n, n_samples)] -> complex [shape=(n, n_bins, n_frames)], float32 always."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.stft(x.float(), self.config.n_fft, self.config.hop_frames, window=self.window,
                              normalized=True, return_complex=True)

    def _istft(self, frames: torch.Tensor, n_samples: int) -> torch.Tensor:
        """complex frame-major [shape=(n, k, n_frames, n_bins)] -> [shape=(n, k, n_samples)]."""
        n, k = frames.shape[:2]
        with torch.autocast(frames.device.type, enabled=False):
            # istft reads (n, n_bins, n_frames); the transposed view is what it transposes back to.
            y = torch.istft(frames.reshape(n * k, *frames.shape[2:]).transpose(1, 2), self.config.n_fft,
                            self.config.hop_frames, window=self.window, normalized=True, length=n_samples)
        return y.reshape(n, k, n_samples)
