"""A band-split mask-estimation network sized for a 2-core CPU (in the spirit of BandIt / BS-RoFormer).

The STFT (n_fft 2048, hop 1024 at 48 kHz: 47 frames/s) is cut into bands that are dense
below 9 kHz, where dialogue, music and effects differ (94 Hz bands to 750 Hz, 188 Hz to
3 kHz, 375 Hz to 9 kHz), and coarse above (1.5 kHz to 15 kHz, one band for the rest).
Each band's compressed complex spectrum, plus its log energy (so that the per-band
normalisation does not hide how loud the band is), is projected to a ``dim``-vector
per frame (*band split*). ``n_layers`` blocks then alternate

* a *time* module per band: a dilated depthwise convolution over frames and a
  pointwise MLP. Dilations 1, 2, 4, ..., 32 with kernel 5 give a receptive field of
  253 frames (5.4 s): enough to tell a held music bed from a pause in speech;
* a *band* module per frame: a token-mixing MLP across the bands (BS-RoFormer relates
  harmonics and formants across bands with attention; on ~40 bands a learned mixing
  of the band axis does this at a tenth of the cost on a CPU).

Every normalisation is a LayerNorm over the feature axis of one band in one frame
(channels-last ``Linear`` layers throughout), so a 6 s training segment and a 20 s
inference segment are normalised alike. A small MLP per band gives one logit per bin
and stem (*mask estimation*); a softmax over the three stems gives ratio masks that sum
to one in every bin, so the masked stems add back to the mixture exactly.

Bands of equal width share one batched matmul (``_BandGroup``), so the split and the
mask heads cost a handful of kernel launches rather than one per band.

Channels are separated independently (folded into the batch): the model works for
mono and stereo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from filmrestore import STEMS

N_STEMS = len(STEMS)
#: A mask power for every stem alike, or one per stem in :data:`STEMS` order.
MaskPower = float | tuple[float, ...]


def stem_powers(mask_power: MaskPower) -> tuple[float, ...]:
    """``mask_power`` as one float per stem; a sequence must have one value per stem."""
    if isinstance(mask_power, (int, float)):
        return (float(mask_power),) * N_STEMS
    powers = tuple(float(p) for p in mask_power)
    if len(powers) != N_STEMS:
        raise ValueError(f"mask_power needs one value per stem ({', '.join(STEMS)}), got {mask_power!r}")
    return powers


@dataclass(frozen=True)
class BandSplitConfig:
    """Architecture of :class:`BandSplitNet`; stored in a checkpoint's JSON config."""

    n_fft: int = 2048
    hop_frames: int = 1024  # 47 frames/s: half the cost of hop 512, still COLA for Hann
    #: (bins per band, number of bands) from 0 Hz up; the rest of the bins form one last band.
    #: 94 Hz bands to 750 Hz, 188 Hz to 3 kHz, 375 Hz to 9 kHz, 1.5 kHz to 15 kHz, then one.
    bands: tuple[tuple[int, int], ...] = ((4, 8), (8, 12), (16, 16), (64, 4))
    dim: int = 40
    n_layers: int = 6
    kernel_frames: int = 5
    mlp_ratio: int = 2  # hidden width of the time modules' MLP, in units of dim
    band_mlp_ratio: int = 1  # hidden width of the band modules' token mixing, in units of n_bands
    mask_hidden: int = 64
    compress: float = 0.3  # magnitude exponent of the input features
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 8, 16, 32))

    def __post_init__(self) -> None:
        """Refuse values no network can be built from (a checkpoint's JSON is untrusted input)."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        def integer(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
                 f"{name} must be an integer in [{lo}, {hi}], got {value!r}")

        integer("n_fft", 64, 16384)
        need(self.n_fft & (self.n_fft - 1) == 0, f"n_fft must be a power of two, got {self.n_fft}")
        integer("hop_frames", 1, self.n_fft // 2)  # Hann windows overlap-add to a constant up to hop n_fft / 2
        for name, hi in (("dim", 1024), ("n_layers", 64), ("mlp_ratio", 8), ("band_mlp_ratio", 8),
                         ("mask_hidden", 4096)):
            integer(name, 1, hi)
        integer("kernel_frames", 1, 31)
        need(self.kernel_frames % 2 == 1, f"kernel_frames must be odd, got {self.kernel_frames}")
        need(isinstance(self.compress, (int, float)) and 0.0 < float(self.compress) <= 1.0,
             f"compress must be in (0, 1], got {self.compress!r}")
        need(bool(self.dilations) and all(isinstance(d, int) and 1 <= d <= 1024 for d in self.dilations),
             f"dilations must be integers in [1, 1024], got {self.dilations!r}")
        need(bool(self.bands) and all(len(b) == 2 and all(isinstance(v, int) and 1 <= v <= self.n_fft for v in b)
                                      for b in self.bands),
             f"bands must be (bins per band, count) pairs of positive integers, got {self.bands!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BandSplitConfig:
        d = dict(d)
        d["bands"] = tuple(tuple(b) for b in d.get("bands", cls.bands))
        d["dilations"] = tuple(d.get("dilations", cls.__dataclass_fields__["dilations"].default))
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

    def receptive_field_frames(self) -> int:
        """STFT frames one output frame depends on (the time modules' span)."""
        dilations = [self.dilations[i % len(self.dilations)] for i in range(self.n_layers)]
        return 1 + (self.kernel_frames - 1) * sum(dilations)


class _BandGroup(nn.Module):
    """Per-band affine maps for ``n_bands`` bands of one width, as one batched matmul.

    [shape=(..., n_bands, n_in)] -> [shape=(..., n_bands, n_out)].
    """

    def __init__(self, n_bands: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_bands, n_in, n_out) * n_in ** -0.5)
        self.bias = nn.Parameter(torch.zeros(n_bands, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...bi,bio->...bo", x, self.weight) + self.bias


class _BandNorm(nn.Module):
    """LayerNorm over the last axis with a separate gain and bias per band. [shape=(..., n_bands, n)]"""

    def __init__(self, n_bands: int, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n_bands, n))
        self.bias = nn.Parameter(torch.zeros(n_bands, n))
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.n,)) * self.gain + self.bias


class TimeBlock(nn.Module):
    """Residual dilated depthwise conv over frames + pointwise MLP. [shape=(n, n_frames, dim)]

    The depthwise convolution is written as a sum of ``kernel_frames`` shifted, weighted
    copies in the channels-last layout: on a CPU, oneDNN's dilated depthwise convolution
    spends ~15x longer in its backward pass than these elementwise products.
    """

    def __init__(self, dim: int, kernel_frames: int, dilation: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.kernel_frames, self.dilation = kernel_frames, dilation
        self.taps = nn.Parameter(torch.randn(kernel_frames, dim) * kernel_frames ** -0.5)
        self.tap_bias = nn.Parameter(torch.zeros(dim))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.SiLU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            h = h + self._depthwise(self.norm1(h))
            return h + self.mlp(self.norm2(h))
        # Inference: the same maps with the activation and both residuals added in place, into
        # the new tensor the convolution returns (``h`` itself is left as it was).
        h = self._depthwise(self.norm1(h)).add_(h)
        first, _, second = self.mlp
        z = F.silu(first(self.norm2(h)), inplace=True)
        flat = h.view(-1, h.shape[-1])
        return flat.add_(second.bias).addmm_(z.view(-1, z.shape[-1]), second.weight.t()).view(h.shape)

    def _depthwise(self, z: torch.Tensor) -> torch.Tensor:
        """Zero-padded ('same') dilated depthwise convolution over axis 1.

        Each tap adds its shifted, weighted copy of ``z`` into the overlapping frames of the
        output (``addcmul_``: one pass per tap, no padded copy of ``z``).
        """
        n_frames, centre = z.shape[1], self.kernel_frames // 2
        out = torch.addcmul(self.tap_bias, z, self.taps[centre])
        for k in range(self.kernel_frames):
            shift = (k - centre) * self.dilation  # output frame t reads input frame t + shift
            if k == centre or abs(shift) >= n_frames:
                continue
            if shift > 0:
                out[:, :n_frames - shift].addcmul_(z[:, shift:], self.taps[k])
            else:
                out[:, -shift:].addcmul_(z[:, :n_frames + shift], self.taps[k])
        return out


class BandBlock(nn.Module):
    """Residual token-mixing MLP across the bands of one frame. [shape=(n, n_bands, n_frames, dim)]

    The band axis is mixed by learned ``n_bands x n_bands`` maps (MLP-Mixer's token mixing),
    shared over frames and features: what attention across bands does in BS-RoFormer, at a
    tenth of its cost for ~40 bands on a CPU, and without leaving the channels-last layout.
    """

    def __init__(self, n_bands: int, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.w1 = nn.Parameter(torch.randn(mlp_ratio * n_bands, n_bands) * n_bands ** -0.5)
        self.b1 = nn.Parameter(torch.zeros(mlp_ratio * n_bands, 1, 1))
        self.w2 = nn.Parameter(torch.zeros(n_bands, mlp_ratio * n_bands))
        self.b2 = nn.Parameter(torch.zeros(n_bands, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, n_bands, n_frames, dim = h.shape
        z = self.norm(h).reshape(n, n_bands, n_frames * dim)
        # bmm with the weights expanded over the batch: matmul would fold the batch into the
        # rows and copy a transposed result back. The biases ride in the products (baddbmm).
        z = torch.baddbmm(self.b1.reshape(1, -1, 1), self.w1.expand(n, -1, -1), z)
        z = F.silu(z, inplace=not torch.is_grad_enabled())
        residual = (h + self.b2).reshape(n, n_bands, n_frames * dim)
        return torch.baddbmm(residual, self.w2.expand(n, -1, -1), z).reshape(n, n_bands, n_frames, dim)


class BandSplitNet(nn.Module):
    """Spectrogram [shape=(n, n_bins, n_frames)] complex -> masks [shape=(n, 3, n_bins, n_frames)].

    Masks are non-negative and sum to one over the stem axis.
    """

    def __init__(self, config: BandSplitConfig) -> None:
        super().__init__()
        self.config = config
        self.edges = config.band_edges()
        self.groups = _width_groups(self.edges)  # [(first_band, n_bands, width), ...]
        dim = config.dim
        self.split_norm = nn.ModuleList(_BandNorm(n, 2 * w + 1) for _, n, w in self.groups)
        self.split = nn.ModuleList(_BandGroup(n, 2 * w + 1, dim) for _, n, w in self.groups)
        self.band_embedding = nn.Parameter(torch.zeros(len(self.edges), dim))
        dilations = [config.dilations[i % len(config.dilations)] for i in range(config.n_layers)]
        self.time_blocks = nn.ModuleList(TimeBlock(dim, config.kernel_frames, d, config.mlp_ratio)
                                         for d in dilations)
        self.band_blocks = nn.ModuleList(BandBlock(len(self.edges), dim, config.band_mlp_ratio)
                                         for _ in range(config.n_layers))
        self.mask_norm = nn.LayerNorm(dim)
        self.mask_hidden = nn.ModuleList(_BandGroup(n, dim, config.mask_hidden) for _, n, _ in self.groups)
        self.mask_out = nn.ModuleList(_BandGroup(n, config.mask_hidden, N_STEMS * w) for _, n, w in self.groups)

    def forward(self, spec: torch.Tensor, mask_power: MaskPower = 1.0) -> torch.Tensor:
        """Masks [shape=(n, 3, n_bins, n_frames)]; see :meth:`frame_masks` for ``mask_power``."""
        return self.frame_masks(spec.transpose(1, 2), mask_power).transpose(2, 3)

    def frame_masks(self, frames: torch.Tensor, mask_power: MaskPower = 1.0) -> torch.Tensor:
        """Frame-major spectrogram [shape=(n, n_frames, n_bins)] complex -> masks
        [shape=(n, 3, n_frames, n_bins)], the layout the inverse STFT reads without a copy.

        ``mask_power`` p sharpens (p > 1) or softens (p < 1) the masks to ``m_i^p / sum_j m_j^p``;
        for softmax masks that is the softmax of the logits times p, computed as such. With one
        power per stem (dialogue, music, effects), ``m_i^p_i / sum_j m_j^p_j``: the masks still
        sum to one in every bin.
        """
        n, n_frames, _ = frames.shape
        h = self._split(frames).transpose(1, 2).contiguous()  # (n, n_bands, n_frames, dim)
        n_bands, dim = h.shape[1], h.shape[3]
        for time_block, band_block in zip(self.time_blocks, self.band_blocks):
            h = time_block(h.reshape(n * n_bands, n_frames, dim)).reshape(n, n_bands, n_frames, dim)
            h = band_block(h)
        return self._estimate(h.transpose(1, 2), mask_power)

    def _split(self, spec: torch.Tensor) -> torch.Tensor:
        """[shape=(n, n_frames, n_bins)] complex -> compressed complex features and log energy per
        band, projected [shape=(n, n_frames, n_bands, dim)]."""
        power = spec.real.square() + spec.imag.square()
        spec = spec * power.clamp_min(1e-16).pow(0.5 * (self.config.compress - 1.0))
        out = []
        for (first, n_bands, width), norm, proj in zip(self.groups, self.split_norm, self.split):
            a, b = self.edges[first][0], self.edges[first][0] + n_bands * width
            part = spec[..., a:b].reshape(*spec.shape[:2], n_bands, width)
            energy = power[..., a:b].reshape(*spec.shape[:2], n_bands, width).mean(-1, keepdim=True)
            feats = torch.cat([part.real, part.imag, 0.1 * torch.log10(energy + 1e-10)], dim=-1)
            out.append(proj(norm(feats)))
        return torch.cat(out, dim=2) + self.band_embedding

    def _estimate(self, h: torch.Tensor, mask_power: MaskPower) -> torch.Tensor:
        """[shape=(n, n_frames, n_bands, dim)] -> softmax masks [shape=(n, 3, n_frames, n_bins)]."""
        n, n_frames = h.shape[:2]
        h = self.mask_norm(h)
        logits = []
        for (first, n_bands, width), hidden, out in zip(self.groups, self.mask_hidden, self.mask_out):
            z = out(F.silu(hidden(h[:, :, first:first + n_bands])))  # (n, n_frames, n_bands, 3 * width)
            logits.append(z.reshape(n, n_frames, n_bands, N_STEMS, width).transpose(2, 3)
                          .reshape(n, n_frames, N_STEMS, n_bands * width))
        logits = torch.cat(logits, dim=-1).float()  # (n, n_frames, 3, n_bins)
        powers = stem_powers(mask_power)
        if len(set(powers)) == 1:
            if powers[0] != 1.0:
                logits = logits.mul_(powers[0]) if not torch.is_grad_enabled() else logits * powers[0]
        else:  # m_i^p_i / sum_j m_j^p_j: the log-masks (not the logits, whose offset is free) times p_i
            scale = torch.tensor(powers, dtype=logits.dtype, device=logits.device).reshape(N_STEMS, 1)
            logits = F.log_softmax(logits, dim=2) * scale
        return F.softmax(logits, dim=2).transpose(1, 2)


def _width_groups(edges: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Runs of consecutive bands of equal width: ``[(first_band, n_bands, width), ...]``."""
    groups: list[tuple[int, int, int]] = []
    for k, (a, b) in enumerate(edges):
        if groups and groups[-1][2] == b - a and groups[-1][0] + groups[-1][1] == k:
            first, count, width = groups[-1]
            groups[-1] = (first, count + 1, width)
        else:
            groups.append((k, 1, b - a))
    return groups
