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

    def __init__(self, net: BandSplitNet, mask_power: MaskPower = 1.0, shifts: int = 1, upsample: int = 1,
                 smooth_frames: float = 0.0, smooth_bins: float = 0.0) -> None:
        super().__init__()
        if shifts < 1 or upsample < 1 or net.config.hop_frames % upsample:
            raise ValueError(f"shifts must be at least 1 and upsample divide the hop ({net.config.hop_frames}), "
                             f"got {shifts} and {upsample}")
        if not (0.0 <= smooth_frames <= 1.0 / 3.0 and 0.0 <= smooth_bins <= 1.0 / 3.0):
            raise ValueError(f"smooth_frames and smooth_bins must be in [0, 1/3], got {smooth_frames} and {smooth_bins}")
        #: Each mask is smoothed with the kernel ``[a, 1 - 2a, a]`` over frames (``a = smooth_frames``),
        #: then over bins (``a = smooth_bins``), edges repeated: the network's estimate of one frame
        #: and bin is noisy, and its neighbours' average it with it (masks that sum to one still do).
        self.smooth_frames, self.smooth_bins = float(smooth_frames), float(smooth_bins)
        #: The masks, estimated every hop, are applied on an STFT ``upsample`` times as dense in
        #: time (hop / upsample, the same window), linearly interpolated between their frames:
        #: the mixture is cut and rebuilt at the finer hop, with the network's cost unchanged.
        self.upsample = int(upsample)
        #: Test-time shifts (Demucs' ``--shifts``, here on the STFT's grid): the segment is also
        #: separated delayed by ``k * hop / shifts`` samples for ``k = 1 .. shifts - 1`` and the
        #: stems are averaged, so the frame grid's position stops mattering; ``shifts`` times the
        #: compute. Each pass's stems add up to the mixture, so their average does too.
        self.shifts = int(shifts)
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
        config's ``inference`` settings apply (chosen on the validation split): ``mask_power``
        (one number, or one per stem by name), ``upsample`` and ``shifts`` (default 1),
        ``smooth_frames`` and ``smooth_bins`` (default 0: the masks as the network gives them)."""
        from filmrestore.separation.checkpoint import load_checkpoint

        from filmrestore.separation import INFERENCE_DEFAULTS

        net, doc = load_checkpoint(path)
        settings = {**INFERENCE_DEFAULTS, **(doc.get("inference") or {})}
        power = settings["mask_power"]
        return cls(net, mask_power=tuple(power[s] for s in STEMS) if isinstance(power, dict) else power,
                   shifts=settings["shifts"], upsample=settings["upsample"],
                   smooth_frames=settings["smooth_frames"], smooth_bins=settings["smooth_bins"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, n_channels, n_samples)] -> [shape=(batch, 3, n_channels, n_samples)].

        The masks sum to one in every bin, so the inverse STFTs of the masked stems add up to
        the mixture: the last stem is computed as the mixture less the others (one inverse STFT
        fewer, and the stems sum to the input exactly).
        """
        n_batch, n_channels, n_samples = x.shape
        flat = x.reshape(n_batch * n_channels, n_samples).float()
        stems = self._separate(flat)
        for k in range(1, self.shifts):
            delay = k * self.config.hop_frames // self.shifts
            stems = stems + self._separate(torch.nn.functional.pad(flat, (delay, 0)))[..., delay:]
        if self.shifts > 1:
            stems = stems / self.shifts
        return stems.reshape(n_batch, n_channels, N_STEMS, n_samples).transpose(1, 2)

    def _separate(self, flat: torch.Tensor) -> torch.Tensor:
        """[shape=(n, n_samples)] -> [shape=(n, 3, n_samples)], one pass on the STFT grid."""
        n_samples = flat.shape[-1]
        rms = flat.square().mean(-1, keepdim=True).sqrt().clamp_min(_RMS_FLOOR)
        flat = flat / rms
        hop = self.config.hop_frames
        frames = self._stft(flat, hop).transpose(1, 2).contiguous()  # (n, n_frames, n_bins)
        masks = self.net.frame_masks(frames, self.mask_power).float()  # (n, 3, n_frames, n_bins)
        masks = masks[:, :N_STEMS - 1]  # the last stem is the rest of the mixture
        for side, axis in ((self.smooth_frames, 2), (self.smooth_bins, 3)):
            if side > 0.0:
                masks = smooth_along(masks, side, axis)
        if self.upsample > 1:
            hop //= self.upsample
            frames = self._stft(flat, hop).transpose(1, 2)
            masks = upsample_frames(masks, self.upsample, frames.shape[1])
        # Real masks times complex bins, as real pairs: a third faster than a complex product.
        masked = torch.view_as_complex(masks[..., None] * torch.view_as_real(frames)[:, None])
        first = self._istft(masked, n_samples, hop)  # (n, 2, n_samples)
        return torch.cat([first, (flat - first.sum(1))[:, None]], dim=1) * rms[:, None]

    def _stft(self, x: torch.Tensor, hop: int) -> torch.Tensor:
        """[shape=(n, n_samples)] -> complex [shape=(n, n_bins, n_frames)], float32 always."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.stft(x.float(), self.config.n_fft, hop, window=self.window,
                              normalized=True, return_complex=True)

    def _istft(self, frames: torch.Tensor, n_samples: int, hop: int) -> torch.Tensor:
        """complex frame-major [shape=(n, k, n_frames, n_bins)] -> [shape=(n, k, n_samples)]."""
        n, k = frames.shape[:2]
        with torch.autocast(frames.device.type, enabled=False):
            # istft reads (n, n_bins, n_frames); the transposed view is what it transposes back to.
            y = torch.istft(frames.reshape(n * k, *frames.shape[2:]).transpose(1, 2), self.config.n_fft,
                            hop, window=self.window, normalized=True, length=n_samples)
        return y.reshape(n, k, n_samples)


def upsample_frames(masks: torch.Tensor, factor: int, n_out: int) -> torch.Tensor:
    """Masks [shape=(n, k, n_frames, n_bins)] on a hop -> [shape=(n, k, n_out, n_bins)] on hop / factor.

    Centred STFT frames of the finer hop fall on the coarse frames every ``factor`` frames; in
    between, the masks are interpolated linearly (so masks that sum to one still do). Frames past
    the last coarse one (at most ``factor - 1``) repeat it.
    """
    n, k, n_frames, n_bins = masks.shape
    out = masks.new_empty(n, k, n_out, n_bins)
    n_full = min((n_frames - 1) * factor + 1, n_out)
    out[:, :, 0:n_full:factor] = masks[:, :, : (n_full - 1) // factor + 1]
    for r in range(1, factor):
        step = out[:, :, r:n_full:factor]
        step.copy_(torch.lerp(masks[:, :, : step.shape[2]], masks[:, :, 1: step.shape[2] + 1], r / factor))
    if n_full < n_out:
        out[:, :, n_full:] = masks[:, :, -1:]
    return out


def smooth_along(x: torch.Tensor, side: float, axis: int) -> torch.Tensor:
    """``x`` convolved with ``[side, 1 - 2 side, side]`` along ``axis``, the edge values repeated
    (so a constant stays that constant, and masks that sum to one over another axis still do)."""
    out = x * (1.0 - 2.0 * side)
    n = x.shape[axis]
    if n == 1:
        return out.add_(x, alpha=2.0 * side)
    out.narrow(axis, 1, n - 1).add_(x.narrow(axis, 0, n - 1), alpha=side)
    out.narrow(axis, 0, n - 1).add_(x.narrow(axis, 1, n - 1), alpha=side)
    out.narrow(axis, 0, 1).add_(x.narrow(axis, 0, 1), alpha=side)
    out.narrow(axis, n - 1, 1).add_(x.narrow(axis, n - 1, 1), alpha=side)
    return out
