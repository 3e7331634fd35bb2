"""The DSP separator: STFT soft masks from DSP evidence, no trained weights (`--separator dsp`).

Evidence, all computed in torch so it runs on a GPU as well as a CPU:

* **Tonal / sustained / broadband decomposition** (harmonic-percussive-residual
  separation after Fitzgerald 2010 and Driedger et al. 2014, at two time
  scales): a median along time over ~96 ms keeps tonal partials, a second one
  over ~288 ms keeps only *sustained* partials (music), a median along
  frequency over ~630 Hz keeps broadband energy (transients, noise: effects).
  Tonal energy that is not sustained (moving pitch, short notes) and the
  residual that fits neither model go to dialogue where speech is present.
  Medians are Tukey "ninther" cascades of 3-point medians with dilations
  1, 3, 9 (9 or 27 points): a few elementwise min/max operations instead of
  a sort per bin, which is what makes the separator fast.
* **Speech presence** per STFT frame: silero-vad (run vectorised, see
  :mod:`.vad`), OR-combined with a DSP cue (energy in 150-4000 Hz that carries
  2-8 Hz syllabic modulation and is mostly moving-tonal), so formant-synthetic
  or band-limited speech that the VAD misses is still found.
* **Centre weight** for stereo: mid/side power ratio in a 3x3 neighbourhood;
  dialogue is mixed to the centre, so side-heavy bins are not dialogue.
* **Wiener-style refinement**: stem power spectra are estimated from the first
  masks, smoothed over 3x3 time-frequency bins, and the final masks are their
  ratios, so they are non-negative and sum to one in every bin.

STFT: n_fft 2048, hop 512 at 48 kHz (Hann). 2048 gives 23.4 Hz bins, which
resolves the partials of voices from ~80 Hz and of music; hop 512 (10.7 ms,
75 % overlap, COLA for Hann) gives 94 frames/s, enough to follow 2-8 Hz
syllabic modulation, and three hops are exactly one 32 ms silero-vad chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

from filmrestore.separation.base import Separator
from filmrestore.separation.vad import FrameSpeechProbability

_EPS = 1e-12


@dataclass(frozen=True)
class DSPConfig:
    """Parameters of :class:`DSPSeparator` (defaults tuned on synthetic DME mixtures)."""

    n_fft: int = 2048
    hop_frames: int = 512
    tonal_levels: int = 2  # 3**2 = 9 frames (96 ms): tonal vs transient
    sustain_levels: int = 3  # 3**3 = 27 frames (288 ms): sustained partials -> music
    broadband_levels: int = 3  # 27 bins (633 Hz): broadband -> effects
    tonal_margin: float = 2.0  # tonal only where it exceeds the broadband floor by 3 dB
    consonant_share: float = 0.3  # share of broadband energy given to active speech
    speech_band_hz: tuple[float, float] = (150.0, 4000.0)
    modulation_band_hz: tuple[float, float] = (2.0, 8.0)
    modulation_threshold_db: float = 4.0  # RMS of 2-8 Hz modulation of voiced level
    voiced_threshold: float = 0.25  # share of non-sustained band energy that is not broadband
    level_floor_db: float = -60.0  # speech-band power below this is not speech
    hold_s: float = 0.15  # speech presence is held this long around detections


class DSPSeparator(Separator):
    """STFT soft-mask DME separator (see module docstring). No weights to load."""

    name = "dsp"
    context_frames = 24000  # 0.5 s: modulation filter and median spans settle within this
    supports_autocast = False  # power spectra and medians stay in float32

    def __init__(self, config: DSPConfig | None = None) -> None:
        super().__init__()
        self.config = config or DSPConfig()
        cfg = self.config
        self.vad = FrameSpeechProbability(cfg.hop_frames)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        freqs_hz = np.fft.rfftfreq(cfg.n_fft, 1.0 / self.sample_rate_hz)
        self.register_buffer("band_weight", torch.from_numpy(_speech_band_weight(freqs_hz)),
                             persistent=False)
        lo, hi = (int(np.searchsorted(freqs_hz, f)) for f in cfg.speech_band_hz)
        self.speech_bins = (lo, hi)
        frame_rate_hz = self.sample_rate_hz / cfg.hop_frames
        fir = scipy.signal.firwin(95, cfg.modulation_band_hz, pass_zero=False, fs=frame_rate_hz)
        self.register_buffer("modulation_fir", torch.from_numpy(fir.astype(np.float32)).view(1, 1, -1),
                             persistent=False)
        self.hold_frames = max(1, int(round(cfg.hold_s * frame_rate_hz)))
        self.level_offset_db = float(20.0 * np.log10(self.window.sum().item() / 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, n_channels, n_samples)] -> [shape=(batch, 3, n_channels, n_samples)].

        Mono and stereo are separated jointly; other channel counts channel by channel.
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            n_batch, n_channels, n_samples = x.shape
            if n_channels <= 2:
                return self._separate(x)
            stems = self._separate(x.reshape(n_batch * n_channels, 1, n_samples))
            return stems.reshape(n_batch, n_channels, 3, n_samples).transpose(1, 2)

    def _separate(self, x: torch.Tensor) -> torch.Tensor:
        """Mono or stereo [shape=(batch, n_channels<=2, n_samples)] -> stems."""
        spec = self._stft(x)  # (batch, n_channels, n_bins, n_frames)
        power = spec.real.square().add_(spec.imag.square()).mean(1)
        parts = tonal_sustained_broadband(power, self.config)
        speech = self._speech_presence(x.mean(1), power, parts)
        gate = speech[:, None, :] * self.band_weight[None, :, None]
        if x.shape[1] == 2:
            gate = gate * centre_weight(spec)
        masks = wiener_refine(route_to_stems(parts, gate, self.config), power)
        return self._resynthesise(spec, masks[:2], x)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised STFT [shape=(batch, n_channels, n_bins, n_frames)]."""
        n_batch, n_channels, n_samples = x.shape
        spec = torch.stft(x.reshape(-1, n_samples), self.config.n_fft, self.config.hop_frames,
                          window=self.window, return_complex=True)
        return spec.reshape(n_batch, n_channels, *spec.shape[-2:])

    def _resynthesise(self, spec: torch.Tensor, masks: list[torch.Tensor],
                      x: torch.Tensor) -> torch.Tensor:
        """Dialogue and music by inverse STFT; effects as the remainder (masks sum to one)."""
        n_batch, n_channels, n_samples = x.shape
        stems = []
        for mask in masks:
            masked = torch.view_as_complex(torch.view_as_real(spec).mul(mask[:, None, :, :, None]))
            y = torch.istft(masked.reshape(-1, *spec.shape[-2:]), self.config.n_fft,
                            self.config.hop_frames, window=self.window, length=n_samples)
            stems.append(y.reshape(n_batch, n_channels, n_samples))
        stems.append(x - stems[0] - stems[1])
        return torch.stack(stems, dim=1)

    def _speech_presence(self, mono: torch.Tensor, power: torch.Tensor,
                         parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """Probability of speech per STFT frame [shape=(batch, n_frames)]."""
        vad = self.vad(mono, power.shape[-1])
        cue = self._speech_cue(power, parts)
        presence = 1.0 - (1.0 - vad) * (1.0 - cue)
        held = F.max_pool1d(presence[:, None], 2 * self.hold_frames + 1, 1, self.hold_frames)
        return _box(held, self.hold_frames)[:, 0]

    def _speech_cue(self, power: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """DSP speech-likeness [shape=(batch, n_frames)] in [0, 1].

        In the speech band: syllabic (2-8 Hz) modulation of the level of the
        non-sustained tonal energy (voiced speech comes and goes with the
        syllables; chords and steady noise do not), times the share of
        non-sustained energy that is tonal or residual rather than broadband
        (voicing; noise bursts and impacts are broadband), times a level gate.
        """
        cfg = self.config
        lo, hi = self.speech_bins
        band = {k: v[:, lo:hi].sum(1, keepdim=True) for k, v in parts.items()}
        voiced_power = band["moving"] + band["residual"]
        floor = 1e-10 * self.window.sum().item() ** 2  # -100 dB re full scale
        voiced = _box(voiced_power, 12) / (_box(voiced_power + band["broadband"], 12) + floor)
        # The STFT is unnormalised: a sine of amplitude A peaks at |X| = A sum(w) / 2.
        voiced_db = 10.0 * torch.log10(voiced_power + floor) - self.level_offset_db
        half = self.modulation_fir.shape[-1] // 2
        modulation = F.conv1d(F.pad(voiced_db, (half, half), mode="replicate"), self.modulation_fir)
        modulation_db = _box(modulation.square(), 23).sqrt()
        level_db = 10.0 * torch.log10(_box(voiced_power, 23) + floor) - self.level_offset_db
        cue = (torch.sigmoid((modulation_db - cfg.modulation_threshold_db) / 1.5)
               * torch.sigmoid((voiced - cfg.voiced_threshold) / 0.06)
               * torch.sigmoid((level_db - cfg.level_floor_db) / 3.0))
        return cue[:, 0]


def tonal_sustained_broadband(power: torch.Tensor, cfg: DSPConfig) -> dict[str, torch.Tensor]:
    """Split a power spectrogram [shape=(batch, n_bins, n_frames)] into four power estimates.

    ``sustained``: partials stable over ~288 ms (music); ``moving``: tonal but not
    sustained (speech harmonics, short notes); ``broadband``: the median across
    frequency (transients, noise); ``residual``: power above both medians
    (fast pitch glides, onsets). Each has the input's shape.
    """
    tonal_med = ninther_median(power, dim=2, levels=cfg.tonal_levels)
    sustained_med = torch.minimum(_median3(tonal_med, 2, 3 ** cfg.tonal_levels), tonal_med)
    for level in range(cfg.tonal_levels + 1, cfg.sustain_levels):
        sustained_med = _median3(sustained_med, 2, 3 ** level)
    broadband = ninther_median(power, dim=1, levels=cfg.broadband_levels)
    floor = cfg.tonal_margin * broadband
    tonal = F.relu(tonal_med - floor)
    sustained = F.relu(sustained_med - floor)
    return {
        "sustained": sustained,
        "moving": F.relu(tonal - sustained),
        "broadband": broadband,
        "residual": F.relu(power - tonal_med - broadband),
    }


def route_to_stems(parts: dict[str, torch.Tensor], gate: torch.Tensor,
                   cfg: DSPConfig) -> list[torch.Tensor]:
    """First stem power estimates, dialogue, music, effects, each [shape=(batch, n_bins, n_frames)].

    ``gate`` [shape broadcastable to (batch, n_bins, n_frames)] in [0, 1] is speech
    presence x speech band x centre weight. Where speech is active, moving tonal
    and residual energy (and a share of broadband, for consonants) is dialogue;
    elsewhere moving tonal is music and residual is effects. Sustained partials
    are always music, broadband energy otherwise effects.
    """
    consonant = cfg.consonant_share * gate * parts["broadband"]
    dialogue = (parts["moving"] + parts["residual"]).mul_(gate).add_(consonant)
    music = (1.0 - gate).mul_(parts["moving"]).add_(parts["sustained"])
    effects = (1.0 - gate).mul_(parts["residual"]).add_(parts["broadband"]).sub_(consonant)
    return [dialogue, music, effects]


def wiener_refine(stem_power: list[torch.Tensor], power: torch.Tensor) -> list[torch.Tensor]:
    """Masks, one per stem [shape=(batch, n_bins, n_frames)], >= 0 and summing to 1 per bin.

    First masks are the power ratios; each stem's power spectrum |M X|^2 is then
    smoothed over 3x3 bins and the final masks are ratios of those estimates
    (one iteration of the multichannel-Wiener idea, Open-Unmix's ``wiener``).
    """
    total = sum(stem_power).add_(_EPS)
    estimates = [_box3x3((p / total).square_().mul_(power)).add_(_EPS) for p in stem_power]
    total = sum(estimates)
    return [e.div_(total) for e in estimates]


def centre_weight(spec: torch.Tensor) -> torch.Tensor:
    """How centred each bin of a stereo STFT [shape=(batch, 2, n_bins, n_frames)] is, in [0, 1].

    Mid power share c = |M|^2 / (|M|^2 + |S|^2) over a 3x3 neighbourhood is 1 for
    a source panned to the centre and 0.5 for hard-panned or decorrelated
    sources; the weight maps 0.5..1 to 0..1.
    """
    mid = (spec[:, 0] + spec[:, 1]).abs().square()
    side = (spec[:, 0] - spec[:, 1]).abs().square()
    mid = _box3x3(mid)
    share = mid / (_box3x3(side).add_(mid).add_(_EPS))
    return share.mul_(2.0).sub_(1.0).clamp_(0.0, 1.0).sqrt_()


def ninther_median(x: torch.Tensor, dim: int, levels: int) -> torch.Tensor:
    """Approximate running median over ``3**levels`` points along ``dim``.

    Cascade of 3-point medians with dilations 1, 3, 9, ... (Tukey's ninther,
    repeated): robust like a median, at a few min/max operations per level.
    Edges are replicated.
    """
    for level in range(levels):
        x = _median3(x, dim, 3 ** level)
    return x


def _median3(x: torch.Tensor, dim: int, dilation: int) -> torch.Tensor:
    """Median of (x[i - d], x[i], x[i + d]) along ``dim``, edges replicated."""
    n = x.shape[dim]
    d = min(dilation, n - 1)
    if d <= 0:
        return x
    first = x.narrow(dim, 0, 1).expand(*_shape_with(x, dim, d))
    last = x.narrow(dim, n - 1, 1).expand(*_shape_with(x, dim, d))
    padded = torch.cat([first, x, last], dim=dim)
    a, c = padded.narrow(dim, 0, n), padded.narrow(dim, 2 * d, n)
    low = torch.minimum(a, x)
    high = torch.maximum(a, x)
    torch.minimum(high, c, out=high)
    return torch.maximum(low, high, out=low)


def _shape_with(x: torch.Tensor, dim: int, size: int) -> list[int]:
    shape = list(x.shape)
    shape[dim] = size
    return shape


def _box3x3(x: torch.Tensor) -> torch.Tensor:
    """Mean over a 3x3 neighbourhood of [shape=(batch, n_bins, n_frames)], edges replicated."""
    padded = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    rows = padded[:, :, :-2] + padded[:, :, 1:-1]
    rows += padded[:, :, 2:]
    out = rows[:, :-2] + rows[:, 1:-1]
    out += rows[:, 2:]
    return out.mul_(1.0 / 9.0)


def _box(x: torch.Tensor, half_frames: int) -> torch.Tensor:
    """Moving average over 2 * half_frames + 1 frames along the last dim of [shape=(b, c, n)]."""
    return F.avg_pool1d(x, 2 * half_frames + 1, 1, half_frames, count_include_pad=False)


def _speech_band_weight(freqs_hz: np.ndarray) -> np.ndarray:
    """Weight of each bin in the dialogue gate: 1 in 150-4000 Hz, fading towards 60 Hz
    and 16 kHz (fricatives keep part of the weight up to ~12 kHz). Interpolated in log f."""
    points_hz = np.array([20.0, 60.0, 150.0, 4000.0, 6000.0, 12000.0, 16000.0, 24000.0])
    weights = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.2, 0.0, 0.0])
    log_f = np.log(np.maximum(freqs_hz, 1.0))
    return np.interp(log_f, np.log(points_hz), weights).astype(np.float32)
