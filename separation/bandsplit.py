"""A small band-split mask-estimation network (in the spirit of BandIt / BS-RoFormer).

The STFT (n_fft 2048, hop 1024 at 48 kHz) is cut into bands that are narrow at low
frequencies and wide at high ones. Each band's compressed complex spectrum is
projected to a ``dim``-vector per frame (*band split*); ``n_layers`` blocks then
alternate a *time* module (dilated depthwise convolution + pointwise MLP, per band:
cheap on a 2-core CPU; receptive field 61 frames, 1.3 s) and a *band* module (a transformer
layer across the bands of one frame, which BS-RoFormer uses to relate harmonics
and formants across bands). A per-band MLP estimates one logit per bin and stem
(*mask estimation*); a softmax over the three stems gives ratio masks that sum to
one in every bin, so the masked stems add back to the mixture.

Channels are separated independently (folded into the batch): the model works for
mono and stereo, and any stereo cue is left to the DSP separator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

N_STEMS = 3


@dataclass(frozen=True)
class BandSplitConfig:
    """Architecture of :class:`BandSplitNet`; stored in a checkpoint's JSON config."""

    n_fft: int = 2048
    hop_frames: int = 1024  # 47 frames/s: half the cost of hop 512, still COLA for Hann
    #: (bins per band, number of bands) from 0 Hz up; the rest of the bins form one last band.
    #: 187 Hz bands up to 1.5 kHz, 375 Hz to 4.5 kHz, 750 Hz to 9 kHz, 1.5 kHz to 18 kHz.
    bands: tuple[tuple[int, int], ...] = ((8, 8), (16, 8), (32, 6), (64, 6))
    dim: int = 64
    n_layers: int = 4
    kernel_frames: int = 5
    n_heads: int = 4
    mask_hidden: int = 128
    compress: float = 0.3  # magnitude exponent of the input features
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 8))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BandSplitConfig:
        d = dict(d)
        d["bands"] = tuple(tuple(b) for b in d.get("bands", cls.bands))
        d["dilations"] = tuple(d.get("dilations", (1, 2, 4, 8)))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)

    def band_edges(self) -> list[tuple[int, int]]:
        """``[(first_bin, end_bin), ...]`` covering all ``n_fft // 2 + 1`` bins."""
        n_bins = self.n_fft // 2 + 1
        edges, start = [], 0
        for width, count in self.bands:
            for _ in range(count):
                if start + width >= n_bins:
                    break
                edges.append((start, start + width))
                start += width
        edges.append((start, n_bins))
        return edges


class TimeBlock(nn.Module):
    """Residual dilated depthwise conv over time + pointwise MLP. [shape=(n, dim, n_frames)]"""

    def __init__(self, dim: int, kernel_frames: int, dilation: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.conv = nn.Conv1d(dim, dim, kernel_frames, padding=dilation * (kernel_frames // 2),
                              dilation=dilation, groups=dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(nn.Conv1d(dim, 2 * dim, 1), nn.GELU(), nn.Conv1d(2 * dim, dim, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.conv(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class BandBlock(nn.Module):
    """Pre-norm transformer layer across bands. [shape=(n, n_bands, dim)]"""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q = self.norm1(h)
        h = h + self.attn(q, q, q, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class BandSplitNet(nn.Module):
    """Spectrogram [shape=(n, n_bins, n_frames)] complex -> masks [shape=(n, 3, n_bins, n_frames)].

    Masks are non-negative and sum to one over the stem axis.
    """

    def __init__(self, config: BandSplitConfig) -> None:
        super().__init__()
        self.config = config
        self.edges = config.band_edges()
        dim = config.dim
        self.split = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(2 * (b - a)), nn.Linear(2 * (b - a), dim)) for a, b in self.edges)
        self.band_embedding = nn.Parameter(torch.zeros(len(self.edges), dim))
        dilations = [config.dilations[i % len(config.dilations)] for i in range(config.n_layers)]
        self.time_blocks = nn.ModuleList(TimeBlock(dim, config.kernel_frames, d) for d in dilations)
        self.band_blocks = nn.ModuleList(BandBlock(dim, config.n_heads) for _ in range(config.n_layers))
        self.masks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, config.mask_hidden), nn.GELU(),
                          nn.Linear(config.mask_hidden, N_STEMS * (b - a))) for a, b in self.edges)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        n, _, n_frames = spec.shape
        h = self._split(spec)  # (n, n_bands, n_frames, dim)
        n_bands, dim = h.shape[1], h.shape[3]
        for time_block, band_block in zip(self.time_blocks, self.band_blocks):
            t = h.reshape(n * n_bands, n_frames, dim).transpose(1, 2)
            h = time_block(t).transpose(1, 2).reshape(n, n_bands, n_frames, dim)
            b = h.transpose(1, 2).reshape(n * n_frames, n_bands, dim)
            h = band_block(b).reshape(n, n_frames, n_bands, dim).transpose(1, 2)
        return self._estimate(h)

    def _split(self, spec: torch.Tensor) -> torch.Tensor:
        """Compressed complex features per band -> [shape=(n, n_bands, n_frames, dim)]."""
        magnitude = spec.abs().clamp_min(1e-8)
        spec = spec * magnitude.pow(self.config.compress - 1.0)
        feats = torch.cat([spec.real, spec.imag], dim=1).transpose(1, 2)  # (n, n_frames, 2 n_bins)
        n_bins = spec.shape[1]
        bands = [proj(torch.cat([feats[..., a:b], feats[..., n_bins + a: n_bins + b]], dim=-1))
                 for proj, (a, b) in zip(self.split, self.edges)]
        return torch.stack(bands, dim=1) + self.band_embedding[None, :, None, :]

    def _estimate(self, h: torch.Tensor) -> torch.Tensor:
        """[shape=(n, n_bands, n_frames, dim)] -> softmax masks [shape=(n, 3, n_bins, n_frames)]."""
        n, _, n_frames, _ = h.shape
        logits = [mlp(h[:, k]).reshape(n, n_frames, N_STEMS, -1) for k, mlp in enumerate(self.masks)]
        logits = torch.cat(logits, dim=-1).permute(0, 2, 3, 1)
        return F.softmax(logits.float(), dim=1)
