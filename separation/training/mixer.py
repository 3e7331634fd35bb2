"""On-the-fly training mixtures that sound like catalogue film: every example is drawn fresh.

:func:`make_example` builds one ``(mix, stems)`` pair from a :class:`~.bank.SourceBank`:

1. **Stems** (DnR v3-like levels, BS.1770 integrated loudness of each stem drawn from
   :attr:`MixerConfig.speech_lufs` etc.):
   dialogue — utterances of one or two speakers of one group with 0.05-1.2 s pauses,
   a small speed/pitch change; music — an excerpt of one track, sometimes starting or
   ending inside the segment (a cue); effects — foreground events at random times and
   levels over a background layer (a looped recording or band-limited noise: room tone,
   wind). Any one stem may be dropped (no dialogue, no music, no effects); on a share of the
   training examples (``p_solo``, 0 by default) only one stem sounds: a scene of dialogue over
   silence, a music cue alone, effects alone. There the mix is the answer and every bin the
   model gives another stem is lost from it (a solo dialogue item of the test split lost
   23 dB SI-SDR that way).
2. **Per-stem colour**: random low/high shelving EQ, synthetic room reverb (exponentially
   decaying noise, RT60 0.15-1.2 s).
3. **A legacy channel on most examples, applied identically to every stem** so the
   targets stay consistent with the mix: wow and flutter (one time warp), Academy-curve
   band limiting (high-pass 50-120 Hz, low-pass 4-9 kHz), and a compressor whose gain is
   computed on the mix and applied to every stem. Noise the transfer adds to the mix
   (hiss, 50/60 Hz hum with harmonics, 96 Hz perforation buzz, crackle) belongs to no
   source: it goes to the *effects* target, which is where the pipeline's M&E keeps what
   restoration left.
4. **A lossy codec round trip** (MP2 at 128-256 kbit/s or AAC at 64-192 kbit/s, the codecs
   broadcast and streaming masters of catalogue film went through) on a share of the examples
   (``p_codec``; 0 by default, so the held-out items stay what they were): the mix is encoded
   and decoded with ffmpeg, and the codec's effect on the mix, the ratio of the decoded to the
   original STFT in every bin, is applied to every stem alike (:func:`codec_round_trip`), so the
   stems still add up to the decoded mix.
5. **The project's own restoration** on a share of the examples (``p_restore``, 0 by default):
   separation runs after the restore stage, so the model should see mixes whose hum, clicks and
   hiss were found and taken out as a run takes them out; what restoration did to the mix is
   applied to every stem alike, as for the codec (:func:`restored`).

Everything is numpy/scipy on one core (about 30-60 ms for a 6 s example; a codec round trip
adds two ffmpeg runs, about 0.3 s); the trainer runs it in a DataLoader worker beside the model.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import scipy.signal
import torch

from filmrestore.separation.training.bank import SAMPLE_RATE_HZ, Clip, SourceBank
from filmrestore.separation.training.dataset import EpochDataset, _active_share, _add

FS = SAMPLE_RATE_HZ
_METER = pyloudnorm.Meter(FS)
SPEECH_WEIGHTINGS = ("group", "hours")


@dataclass(frozen=True)
class MixerConfig:
    """Distributions of :func:`make_example` (recorded in a checkpoint's training notes)."""

    segment_s: float = 6.0
    speech_lufs: tuple[float, float] = (-27.0, 4.0)  # mean, standard deviation
    music_lufs: tuple[float, float] = (-32.0, 6.0)
    fg_effects_lufs: tuple[float, float] = (-32.0, 6.0)
    bg_effects_lufs: tuple[float, float] = (-40.0, 6.0)
    p_drop: tuple[float, float, float] = (0.1, 0.15, 0.1)  # no dialogue / music / effects
    p_solo: float = 0.0  # one stem alone, any of the three alike (TrainConfig.p_solo; held-out items: 0)
    p_background: float = 0.6
    p_two_speakers: float = 0.3
    speech_speed: tuple[float, float] = (0.94, 1.06)
    p_eq: float = 0.5
    p_reverb: tuple[float, float, float] = (0.4, 0.1, 0.3)
    p_legacy: float = 0.75
    p_wow: float = 0.5
    p_compress: float = 0.5
    p_hiss: float = 0.7
    p_hum: float = 0.4
    p_buzz: float = 0.15
    p_crackle: float = 0.3
    p_codec: float = 0.0  # the training mixer's share (TrainConfig.p_codec); held-out items are made without
    p_restore: float = 0.0  # likewise (TrainConfig.p_restore)
    #: How the dialogue's speakers (groups) are drawn: ``"group"``, every group alike (how the held-out
    #: items are made); ``"hours"``, in proportion to its recorded hours (TrainConfig.speech_weighting),
    #: so that each second of speech in the bank is as likely as any other.
    speech_weighting: str = "group"

    def __post_init__(self) -> None:
        if self.speech_weighting not in SPEECH_WEIGHTINGS:
            raise ValueError(f"speech_weighting must be one of {', '.join(SPEECH_WEIGHTINGS)}, "
                             f"got {self.speech_weighting!r}")


class MixerDataset(EpochDataset):
    """``n_examples`` fresh mixtures per epoch from ``split`` of a bank; example ``i`` of an epoch
    is reproducible (its generator is seeded with ``(seed, epoch, i)``).

    Items: ``(mix [shape=(1, n)], stems [shape=(3, 1, n)])`` float32, ``mix == stems.sum(0)``.
    """

    def __init__(self, bank: SourceBank | str, split: str, n_examples: int,
                 config: MixerConfig = MixerConfig(), seed: int = 0) -> None:
        self.bank = bank if isinstance(bank, SourceBank) else SourceBank(bank)
        self.pools = {kind: self.bank.clips(kind, split) for kind in ("speech", "music", "effects")}
        empty = [k for k, v in self.pools.items() if not v]
        if empty:
            raise ValueError(f"{self.bank.root}: split {split!r} has no {', '.join(empty)} clips")
        super().__init__(n_examples, seed)
        self.config = config

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        stems = make_example(self.bank, self.pools, self.rng(index), self.config)
        return torch.from_numpy(stems.sum(0)[None]), torch.from_numpy(stems[:, None])


def make_example(bank: SourceBank, pools: dict[str, list[Clip]], rng: np.random.Generator,
                 config: MixerConfig = MixerConfig()) -> np.ndarray:
    """One example's stems [shape=(3, n)] float32 (dialogue, music, effects); the mix is their sum."""
    n = int(round(config.segment_s * FS))
    keep = _kept_stems(rng, config)
    stems = np.zeros((3, n), np.float32)
    if keep[0]:
        stems[0] = _level(_colour(draw_speech(bank, pools["speech"], n, rng, config), rng, config, 0),
                          rng.normal(*config.speech_lufs))
    if keep[1]:
        stems[1] = _level(_colour(draw_music(bank, pools["music"], n, rng), rng, config, 1),
                          rng.normal(*config.music_lufs))
    if keep[2]:
        stems[2] = _level(_colour(draw_events(bank, pools["effects"], n, rng), rng, config, 2),
                          rng.normal(*config.fg_effects_lufs))
        if rng.random() < config.p_background:
            stems[2] += _level(draw_background(bank, pools["effects"], n, rng), rng.normal(*config.bg_effects_lufs))
    if rng.random() < config.p_legacy:
        stems = legacy_channel(stems, rng, config)
    if config.p_restore > 0.0 and rng.random() < config.p_restore:  # no draw at 0: held-out items unchanged
        stems = restored(stems)
    if config.p_codec > 0.0 and rng.random() < config.p_codec:
        stems = codec_round_trip(stems, rng)
    peak = float(np.abs(stems.sum(0)).max())
    return (stems * min(1.0, 0.99 / peak) if peak > 0 else stems).astype(np.float32)


def _kept_stems(rng: np.random.Generator, config: MixerConfig) -> list[bool]:
    solo = config.p_solo > 0.0 and rng.random() < config.p_solo  # no draw at 0: held-out items unchanged
    keep = [False] * 3 if solo else [rng.random() >= p for p in config.p_drop]
    if not any(keep):  # a solo, or every stem dropped: one stem, any of the three
        keep[int(rng.integers(3))] = True
    return keep


# ---------------------------------------------------------------- sources


def draw_speech(bank: SourceBank, clips: list[Clip], n: int, rng: np.random.Generator,
                config: MixerConfig) -> np.ndarray:
    """Utterances of one or two speakers (groups) one after another with pauses; the groups drawn
    alike or by their hours (:attr:`MixerConfig.speech_weighting`). [shape=(n,)]

    By group, single words and letters read in many languages (tens of small groups) would make
    most of the dialogue a model hears, and an hour of acted scenes (one cast, one group) a
    fiftieth of it; by hours, each recorded second weighs alike.
    """
    chosen = pick_speakers(clips, rng, config)
    pool = [c for c in clips if c.group in chosen]
    out = np.zeros(n, np.float32)
    cursor = int(rng.uniform(-0.5, 0.5) * FS)
    speed = rng.uniform(*config.speech_speed)
    while cursor < n:
        x = _resample(bank.audio("speech", pool[int(rng.integers(len(pool)))]), speed)
        _add(out, cursor, x)
        cursor += x.size + int(rng.uniform(0.05, 1.2) * FS)
    return out


def pick_speakers(clips: list[Clip], rng: np.random.Generator, config: MixerConfig) -> set[str]:
    """The group (or two, ``p_two_speakers``) whose utterances make one example's dialogue."""
    groups = sorted({c.group for c in clips})
    size = 2 if rng.random() < config.p_two_speakers else 1
    if config.speech_weighting == "hours":
        frames = dict.fromkeys(groups, 0)
        for clip in clips:
            frames[clip.group] += clip.n_frames
        weights = np.array([frames[g] for g in groups], np.float64)
        return set(rng.choice(groups, size=min(size, len(groups)), replace=False, p=weights / weights.sum()))
    return set(rng.choice(groups, size=size))


def draw_music(bank: SourceBank, clips: list[Clip], n: int, rng: np.random.Generator) -> np.ndarray:
    """An excerpt of one track (active in >= 60 % of its 100 ms blocks when one of 6 draws is),
    faded in or out inside the segment one time in four. [shape=(n,)]"""
    for _ in range(6):
        clip = clips[int(rng.integers(len(clips)))]
        x = bank.audio("music", clip, int(rng.integers(max(1, clip.n_frames - n))), n)
        if _active_share(x) >= 0.6:
            break
    out = np.zeros(n, np.float32)
    out[: x.size] = x
    if rng.random() < 0.25:
        out *= _cue_envelope(n, rng)
    return out


def draw_events(bank: SourceBank, clips: list[Clip], n: int, rng: np.random.Generator) -> np.ndarray:
    """Foreground effects at Poisson times (0.3-1.5 a second), each at its own level and played
    0.8-1.25 times as fast (the bank holds about an hour of effects: this multiplies it). [shape=(n,)]"""
    out = np.zeros(n, np.float32)
    count = max(1, rng.poisson(rng.uniform(0.3, 1.5) * n / FS))
    for _ in range(count):
        clip = clips[int(rng.integers(len(clips)))]
        x = _resample(bank.audio("effects", clip, 0, int(rng.uniform(0.3, 4.0) * FS)), rng.uniform(0.8, 1.25))
        x = x * _fade(x.size, 0.005) * np.float32(10.0 ** (rng.uniform(-10.0, 0.0) / 20.0))
        _add(out, int(rng.integers(-x.size // 2, n)), x)
    return out


def draw_background(bank: SourceBank, clips: list[Clip], n: int, rng: np.random.Generator) -> np.ndarray:
    """A background layer: a long effect looped and low-passed, or coloured noise (room tone,
    wind, rain). [shape=(n,)]"""
    long = [c for c in clips if c.n_frames >= 2 * FS]
    if long and rng.random() < 0.6:
        clip = long[int(rng.integers(len(long)))]
        x = bank.audio("effects", clip)
        x = np.tile(x, int(np.ceil((n + clip.n_frames) / x.size)))
        start = int(rng.integers(clip.n_frames))
        x = x[start:start + n]
        return _sos(scipy.signal.butter(2, rng.uniform(2000.0, 12000.0), "low", fs=FS, output="sos"), x)
    noise = rng.standard_normal(n).astype(np.float32)
    lo, hi = sorted(rng.uniform(40.0, 6000.0, 2))
    band = scipy.signal.butter(2, [lo, max(hi, lo * 1.5)], "band", fs=FS, output="sos")
    slow = _sos(scipy.signal.butter(1, rng.uniform(0.2, 3.0), "low", fs=FS, output="sos"),
                rng.standard_normal(n).astype(np.float32))
    return _sos(band, noise) * (1.0 + 0.5 * slow / (np.abs(slow).max() + 1e-9))


# ---------------------------------------------------------------- per-stem colour


def _colour(x: np.ndarray, rng: np.random.Generator, config: MixerConfig, stem: int) -> np.ndarray:
    if rng.random() < config.p_eq:
        x = _sos(_shelf(rng.uniform(80.0, 400.0), rng.uniform(-6.0, 6.0), high=False), x)
        x = _sos(_shelf(rng.uniform(2000.0, 8000.0), rng.uniform(-6.0, 6.0), high=True), x)
    if rng.random() < config.p_reverb[stem]:
        x = reverb(x, rng)
    return x


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolution with a synthetic room: direct path + exponentially decaying noise tail
    (RT60 0.15-1.2 s, direct-to-reverberant ratio 0-12 dB), same length as ``x``."""
    rt60_s = rng.uniform(0.15, 1.2)
    m = int(min(rt60_s, 1.0) * FS)
    t = np.arange(m) / FS
    tail = rng.standard_normal(m) * np.exp(-6.91 * t / rt60_s)
    tail = _sos(scipy.signal.butter(1, rng.uniform(3000.0, 12000.0), "low", fs=FS, output="sos"),
                tail.astype(np.float32))
    tail *= 10.0 ** (-rng.uniform(0.0, 12.0) / 20.0) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
    rir = np.concatenate([[1.0], tail[1:]]).astype(np.float32)
    return scipy.signal.oaconvolve(x, rir)[: x.size].astype(np.float32)


def _shelf(f0_hz: float, gain_db: float, high: bool) -> np.ndarray:
    """RBJ cookbook shelving biquad (S = 1) as one second-order section."""
    a = 10.0 ** (gain_db / 40.0)
    w = 2.0 * np.pi * f0_hz / FS
    alpha = np.sin(w) / 2.0 * np.sqrt(2.0)
    c, k = np.cos(w), 2.0 * np.sqrt(a) * alpha
    s = 1.0 if high else -1.0
    b = [a * ((a + 1) + s * (a - 1) * c + k), -2 * s * a * ((a - 1) + s * (a + 1) * c),
         a * ((a + 1) + s * (a - 1) * c - k)]
    den = [(a + 1) - s * (a - 1) * c + k, 2 * s * ((a - 1) - s * (a + 1) * c), (a + 1) - s * (a - 1) * c - k]
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


# ---------------------------------------------------------------- the legacy channel


def legacy_channel(stems: np.ndarray, rng: np.random.Generator, config: MixerConfig) -> np.ndarray:
    """An old optical/magnetic transfer applied identically to every stem [shape=(3, n)]; the
    transfer's own noise is added to the effects stem."""
    n = stems.shape[1]
    if rng.random() < config.p_wow:
        stems = _warp(stems, rng)
    hp = scipy.signal.butter(int(rng.integers(1, 3)), rng.uniform(50.0, 120.0), "high", fs=FS, output="sos")
    lp = scipy.signal.butter(int(rng.integers(2, 5)) * 2, rng.uniform(4000.0, 9000.0), "low", fs=FS, output="sos")
    stems = np.stack([_sos(lp, _sos(hp, s)) for s in stems])
    if rng.random() < config.p_compress:
        stems = stems * compressor_gain(stems.sum(0), rng)[None]
    mix_rms = float(np.sqrt(np.mean(stems.sum(0) ** 2))) + 1e-9
    noise = np.zeros(n, np.float32)
    if rng.random() < config.p_hiss:
        hiss = _sos(lp, rng.standard_normal(n).astype(np.float32))
        noise += hiss * (mix_rms * 10.0 ** (-rng.uniform(25.0, 50.0) / 20.0) / (np.std(hiss) + 1e-12))
    if rng.random() < config.p_hum:
        noise += _harmonics(n, float(rng.choice([50.0, 60.0])), 7, rng) * mix_rms * 10.0 ** (-rng.uniform(30.0, 55.0) / 20.0)
    if rng.random() < config.p_buzz:
        noise += _harmonics(n, 96.0, 30, rng) * mix_rms * 10.0 ** (-rng.uniform(35.0, 55.0) / 20.0)
    if rng.random() < config.p_crackle:
        noise += _crackle(n, rng) * mix_rms * 10.0 ** (-rng.uniform(0.0, 20.0) / 20.0)
    stems[2] += noise
    return stems.astype(np.float32)


#: (ffmpeg encoder, its raw stream's muxer and demuxer, lowest and highest bit rate in kbit/s).
CODECS: tuple[tuple[str, str, str, int, int], ...] = (("mp2", "mp2", "mp3", 128, 256), ("aac", "adts", "aac", 64, 192))
_CODEC_FFT = 1024  # STFT of the codec transfer: 21 ms frames, finer than the codecs' own (1152 and 1024)
_MAX_CODEC_DELAY = 4096  # frames an encoder and decoder may add in front (AAC's priming: 1024-2112)


def codec_round_trip(stems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stems [shape=(3, n)] as they sound after the mix went through a lossy codec (MP2 or AAC at a
    random bit rate): the decoded mix's STFT over the original's, applied to every stem's STFT, so
    the stems add up to the decoded mix (up to where the original is silent). Unchanged when the
    codec cannot run."""
    mix = stems.sum(0)
    *codec, lo_kbps, hi_kbps = CODECS[int(rng.integers(len(CODECS)))]
    coded = encode_decode(mix, *codec, 16 * int(rng.integers(lo_kbps // 16, hi_kbps // 16 + 1)))
    return stems if coded is None else mix_transfer(stems, mix, coded)


def restored(stems: np.ndarray) -> np.ndarray:
    """Stems [shape=(3, n)] as the restore stage leaves them: hum, clicks and hiss detected on the mix
    and repaired where found (:func:`filmrestore.restoration.plan_restoration`, as a run plans
    it), the repair's effect on the mix applied to every stem alike (:func:`mix_transfer`)."""
    from filmrestore.restoration.restorer import Restorer, plan_restoration

    mix = stems.sum(0)[None]
    plan = plan_restoration(mix, FS)
    if not (plan.hum_strength or plan.click_strength or plan.hiss_strength or plan.dc.detected):
        return stems
    restorer = Restorer(FS, 1, plan)
    repaired = np.concatenate([restorer.process(mix), restorer.flush()], axis=1)[0]
    return mix_transfer(stems, mix[0], repaired)


def mix_transfer(stems: np.ndarray, mix: np.ndarray, processed: np.ndarray) -> np.ndarray:
    """What a process did to ``mix`` [shape=(n,)] (giving ``processed``), done to every stem
    [shape=(k, n)] alike: each stem's STFT times the ratio of the processed to the original STFT
    in every bin (regularised where the mix is silent), so the stems add up to ``processed``."""
    stft = functools.partial(scipy.signal.stft, fs=FS, nperseg=_CODEC_FFT, noverlap=3 * _CODEC_FFT // 4)
    _, _, x = stft(mix)
    _, _, c = stft(processed)
    _, _, s = stft(stems)
    power = np.abs(x) ** 2
    ratio = c * np.conj(x) / (power + 1e-6 * power.mean() + 1e-20)
    _, out = scipy.signal.istft(s * ratio, fs=FS, nperseg=_CODEC_FFT, noverlap=3 * _CODEC_FFT // 4)
    return out[:, : stems.shape[1]].astype(np.float32)


def encode_decode(x: np.ndarray, encoder: str, muxer: str, demuxer: str, kbps: int) -> np.ndarray | None:
    """Mono 48 kHz ``x`` [shape=(n,)] through ffmpeg's ``encoder`` and back, aligned to ``x`` (the
    codec's delay found by cross-correlation and removed); None when ffmpeg fails."""
    raw = ["-f", "f32le", "-ar", str(FS), "-ac", "1"]
    try:
        encoded = subprocess.run(["ffmpeg", "-v", "error", *raw, "-i", "pipe:0", "-c:a", encoder, "-b:a",
                                  f"{kbps}k", "-f", muxer, "pipe:1"],
                                 input=np.ascontiguousarray(x, np.float32).tobytes(), capture_output=True,
                                 check=True).stdout
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-f", demuxer, "-i", "pipe:0", *raw, "pipe:1"],
                                 input=encoded, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    y = np.frombuffer(decoded, np.float32)
    if y.size < x.size // 2:
        return None
    n = min(x.size, y.size)
    corr = scipy.signal.correlate(y[:n], x[:n], mode="full", method="fft")[n - 1: n - 1 + _MAX_CODEC_DELAY]
    delay = int(np.argmax(corr))
    out = np.zeros(x.size, np.float32)
    tail = y[delay: delay + x.size]
    out[: tail.size] = tail
    return out


def compressor_gain(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain [shape=(n,)] of a feed-forward RMS compressor on ``mix``: threshold 0-12 dB under
    the mix's RMS, ratio 2-6, attack 5-20 ms, release 80-300 ms."""
    attack, release = rng.uniform(0.005, 0.02), rng.uniform(0.08, 0.3)
    env = scipy.signal.lfilter([1.0 - np.exp(-1.0 / (0.01 * FS))], [1.0, -np.exp(-1.0 / (0.01 * FS))], mix ** 2)
    level_db = 10.0 * np.log10(np.maximum(env, 1e-12))
    threshold_db = 10.0 * np.log10(np.mean(mix ** 2) + 1e-12) - rng.uniform(0.0, 12.0)
    ratio = rng.uniform(2.0, 6.0)
    target_db = np.minimum(0.0, (threshold_db - level_db) * (1.0 - 1.0 / ratio))
    # Smooth the gain: fast when it falls (attack), slow when it recovers (release); a
    # decimated loop keeps this cheap (the gain moves slowly anyway).
    step = 48
    coarse = target_db[::step]
    a_att, a_rel = np.exp(-step / (attack * FS)), np.exp(-step / (release * FS))
    smooth = np.empty_like(coarse)
    g = 0.0
    for i, t in enumerate(coarse):
        a = a_att if t < g else a_rel
        g = a * g + (1.0 - a) * t
        smooth[i] = g
    gain_db = np.interp(np.arange(mix.size), np.arange(coarse.size) * step, smooth)
    return (10.0 ** (gain_db / 20.0)).astype(np.float32)


def _warp(stems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Wow (0.3-2 Hz, up to 0.3 % speed) and flutter (6-15 Hz, up to 0.1 %) as one time warp."""
    n = stems.shape[1]
    t = np.arange(n) / FS
    offset = np.zeros(n)
    for f_lo, f_hi, depth in ((0.3, 2.0, 0.003), (6.0, 15.0, 0.001)):
        f = rng.uniform(f_lo, f_hi)
        offset += rng.uniform(0.0, depth) / (2.0 * np.pi * f) * np.cos(2.0 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    pos = np.clip(np.arange(n) + (offset - offset[0]) * FS, 0, n - 1)
    return np.stack([np.interp(pos, np.arange(n), s) for s in stems]).astype(np.float32)


def _harmonics(n: int, f0_hz: float, n_harmonics: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS sum of harmonics of ``f0_hz`` with random amplitudes and phases. [shape=(n,)]"""
    t = np.arange(n) / FS
    x = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * f0_hz < FS / 2:
            x += rng.uniform(0.1, 1.0) / k ** rng.uniform(0.0, 1.0) * np.sin(2 * np.pi * k * f0_hz * t + rng.uniform(0, 6.3))
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def _crackle(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse short clicks (5-60 a second, 0.1-1 ms, random polarity), peak 1. [shape=(n,)]"""
    x = np.zeros(n, np.float32)
    count = rng.poisson(rng.uniform(5.0, 60.0) * n / FS)
    for start in rng.integers(0, n, size=count):
        width = int(rng.integers(5, 48))
        shape = np.hanning(width + 2)[1:-1] * rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 1.0)
        _add(x, int(start), shape.astype(np.float32))
    return x


# ---------------------------------------------------------------- helpers


def _level(x: np.ndarray, target_lufs: float) -> np.ndarray:
    """``x`` scaled to BS.1770 integrated loudness ``target_lufs`` (silence unchanged)."""
    if not np.any(x):
        return x
    with np.errstate(divide="ignore"):
        lufs = _METER.integrated_loudness(x.astype(np.float64)) if x.size >= FS // 2 else -np.inf
    if not np.isfinite(lufs):
        rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
        lufs = 20.0 * np.log10(rms + 1e-12) - 0.691
    return (x * np.float32(10.0 ** ((target_lufs - lufs) / 20.0))).astype(np.float32)


def _resample(x: np.ndarray, factor: float) -> np.ndarray:
    """Played ``factor`` times faster (speed and pitch together), linear interpolation."""
    if abs(factor - 1.0) < 1e-3:
        return x
    pos = np.arange(0.0, x.size - 1, factor)
    return np.interp(pos, np.arange(x.size), x).astype(np.float32)


def _sos(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return scipy.signal.sosfilt(sos, x).astype(np.float32)


def _fade(n: int, fade_s: float) -> np.ndarray:
    m = min(n // 2, int(fade_s * FS))
    env = np.ones(n, np.float32)
    if m > 0:
        ramp = np.linspace(0.0, 1.0, m, dtype=np.float32)
        env[:m], env[n - m:] = ramp, ramp[::-1]
    return env


def _cue_envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    """A music cue starting (or ending) inside the segment, with a 0.2-2 s fade."""
    at, fade = int(rng.uniform(0.1, 0.9) * n), max(1, int(rng.uniform(0.2, 2.0) * FS))
    env = np.clip((np.arange(n) - at) / fade, 0.0, 1.0).astype(np.float32)
    return env if rng.random() < 0.5 else env[::-1].copy()
