"""Synthetic film material: dialogue, music and effects stems, and the look of a legacy optical track.

Everything is made from numpy/scipy with a seeded ``np.random.Generator``, so a
test, a demo clip and a training example are reproducible from their seed.
Signals are float32 ``(n_channels, n_frames)``; the film material is mono
unless asked otherwise. These are stand-ins with the properties a separator
and a restorer key on (voiced harmonics under moving formants with pauses;
sustained tonal partials; transients, noise and low-frequency energy), not
realistic recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyloudnorm
from scipy import signal

SAMPLE_RATE_HZ = 48_000
_NOMINAL_RMS = 0.1  # -20 dBFS: every stem generator's output level over its active part

# Peterson & Barney-style formant frequencies (F1, F2, F3, F4) in Hz for a few vowels.
_VOWELS_HZ = np.array([
    [730, 1090, 2440, 3400],  # a
    [270, 2290, 3010, 3700],  # i
    [300, 870, 2240, 3300],   # u
    [530, 1840, 2480, 3500],  # e
    [570, 840, 2410, 3300],   # o
    [660, 1720, 2410, 3500],  # ae
], dtype=float)
_FORMANT_BW_HZ = (80.0, 100.0, 130.0, 180.0)


# ---------------------------------------------------------------- shared helpers


def _n_frames(duration_s: float, sample_rate_hz: int) -> int:
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    return int(round(duration_s * sample_rate_hz))


def _scale_to_rms(x: np.ndarray, rms: float = _NOMINAL_RMS) -> np.ndarray:
    """Scale so that the RMS over non-silent samples is ``rms``. [any shape]"""
    active = np.abs(x) > 1e-6
    if not active.any():
        return x.astype(np.float32)
    return (x * (rms / np.sqrt(np.mean(x[active] ** 2)))).astype(np.float32)


def _add(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Add ``sound`` [shape=(..., n)] into ``out`` at ``start``, clipped to ``out``'s end."""
    end = min(start + sound.shape[-1], out.shape[-1])
    if end > start:
        out[..., start:end] += sound[..., : end - start]


def _fade(n: int, attack: int, release: int) -> np.ndarray:
    """A raised-cosine attack/release envelope of ``n`` samples."""
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if release:
        env[n - release:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, release + 1) / release)
    return env


def _noise_band(n: int, low_hz: float | None, high_hz: float | None, sample_rate_hz: int,
                rng: np.random.Generator, order: int = 4) -> np.ndarray:
    """White noise through a Butterworth low/high/band-pass (None leaves that side open)."""
    noise = rng.standard_normal(n)
    if low_hz and high_hz:
        sos = signal.butter(order, [low_hz, high_hz], "bandpass", fs=sample_rate_hz, output="sos")
    elif high_hz:
        sos = signal.butter(order, high_hz, "lowpass", fs=sample_rate_hz, output="sos")
    elif low_hz:
        sos = signal.butter(order, low_hz, "highpass", fs=sample_rate_hz, output="sos")
    else:
        return noise
    return signal.sosfilt(sos, noise)


# ---------------------------------------------------------------- dialogue


def _resonator_cascade(x: np.ndarray, formants_hz: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Klatt-style cascade of two-pole resonators, each with unity gain at DC."""
    for f_hz, bw_hz in zip(formants_hz, _FORMANT_BW_HZ):
        r = np.exp(-np.pi * bw_hz / sample_rate_hz)
        a = [1.0, -2.0 * r * np.cos(2 * np.pi * f_hz / sample_rate_hz), r * r]
        x = signal.lfilter([sum(a)], a, x)
    return x


def _glottal_source(f0_hz: np.ndarray, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Pulse train following the pitch contour, with -6 dB/oct tilt (glottis + lip radiation)."""
    phase = np.cumsum(f0_hz / sample_rate_hz)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1.0 + 0.1 * rng.standard_normal(pulses.size)  # shimmer
    voiced = signal.lfilter([1.0], [1.0, -0.96], pulses)
    return voiced + 0.02 * rng.standard_normal(voiced.size)  # breathiness


def _pitch_contour(n: int, f0_hz: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """A gliding pitch with 1 % jitter (slow random wobble)."""
    glide = np.linspace(1.0, rng.uniform(0.85, 1.1), n)
    wobble = signal.sosfilt(signal.butter(2, 12, fs=sample_rate_hz, output="sos"), rng.standard_normal(n))
    wobble *= 0.01 / (np.std(wobble) + 1e-12)
    return f0_hz * glide * (1.0 + wobble)


def _vowel(n: int, f0_hz: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced nucleus whose formants move from one vowel to another."""
    source = _glottal_source(_pitch_contour(n, f0_hz, sample_rate_hz, rng), sample_rate_hz, rng)
    first, second = _VOWELS_HZ[rng.choice(len(_VOWELS_HZ), 2)]
    ramp = np.linspace(0.0, 1.0, n)
    start = _resonator_cascade(source, first, sample_rate_hz)
    end = _resonator_cascade(source, second, sample_rate_hz)
    sound = (1.0 - ramp) * start + ramp * end
    attack = int(0.02 * sample_rate_hz)
    return sound / (np.sqrt(np.mean(sound**2)) + 1e-12) * _fade(n, attack, 2 * attack)


def _fricative(n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Unvoiced consonant: 's'-like (3.5-8 kHz) or 'sh'-like (1.8-5 kHz) noise, quieter than vowels."""
    low, high = ((3500.0, 8000.0), (1800.0, 5000.0))[rng.integers(2)]
    noise = _noise_band(n, low, high, sample_rate_hz, rng)
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    return 0.15 * noise * _fade(n, n // 3, n // 3)


def _syllable(duration_s: float, f0_hz: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Optional consonant, then a vowel, filling ``duration_s``."""
    n = int(duration_s * sample_rate_hz)
    n_consonant = int(rng.uniform(0.04, 0.08) * sample_rate_hz) if rng.random() < 0.6 else 0
    vowel = _vowel(n - n_consonant, f0_hz, sample_rate_hz, rng) * rng.uniform(0.6, 1.0)
    if not n_consonant:
        return vowel
    return np.concatenate([_fricative(n_consonant, sample_rate_hz, rng), vowel])


def _phrase(f0_hz: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """3 to 10 syllables at about 4 per second, pitch declining over the phrase."""
    n_syllables = int(rng.integers(3, 11))
    declination = np.linspace(1.1, 0.9, n_syllables)
    return np.concatenate([
        _syllable(rng.uniform(0.17, 0.33), f0_hz * d, sample_rate_hz, rng) for d in declination
    ])


def synth_dialogue(duration_s: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like dialogue: phrases of syllables separated by silent pauses.

    Two "speakers" (fundamentals drawn from 90-220 Hz) alternate phrases; each
    syllable is an optional fricative burst and a voiced vowel (glottal pulse
    train with a jittered, gliding pitch through four moving formant
    resonances). Pauses of 0.35-1.2 s are digital silence.
    Returns [shape=(1, n_frames)] float32 at -20 dBFS RMS over speech.
    """
    n = _n_frames(duration_s, sample_rate_hz)
    out = np.zeros(n)
    speakers_hz = rng.uniform(90.0, 220.0, size=2)
    cursor = int(rng.uniform(0.2, 0.6) * sample_rate_hz)
    phrase_no = 0
    while cursor < n:
        phrase = _phrase(speakers_hz[phrase_no % 2], sample_rate_hz, rng)
        tail = min(phrase.size, n - cursor)
        phrase = phrase[:tail] * _fade(tail, 0, int(0.01 * sample_rate_hz))
        _add(out, cursor, phrase)
        cursor += phrase.size + int(rng.uniform(0.35, 1.2) * sample_rate_hz)
        phrase_no += 1
    return _scale_to_rms(out)[None, :]


# ---------------------------------------------------------------- music

_PROGRESSIONS = ([0, 9, 5, 7], [0, 5, 7, 0], [0, 7, 9, 5], [0, 4, 5, 7])
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _note(f0_hz: float, n: int, decay_s: float, sample_rate_hz: int, rng: np.random.Generator,
          vibrato: float = 0.0) -> np.ndarray:
    """Additive harmonic note: partials k*f0 (amplitude k^-1.5), higher ones decaying faster."""
    t = np.arange(n) / sample_rate_hz
    mod = 1.0 + vibrato * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0_hz * mod) / sample_rate_hz
    out = np.zeros(n)
    for k in range(1, 11):
        if k * f0_hz > 0.45 * sample_rate_hz:
            break
        tau = decay_s / (1.0 + 0.25 * (k - 1))
        out += k**-1.5 * np.exp(-t / tau) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out * _fade(n, int(0.03 * sample_rate_hz), int(0.15 * sample_rate_hz))


def _pan(mono: np.ndarray, n_channels: int, position: float) -> np.ndarray:
    """Constant-power pan; position -1 (left) .. +1 (right). [shape=(n_channels, n)]"""
    if n_channels == 1:
        return mono[None, :]
    angle = (position + 1.0) * np.pi / 4
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono])


def _chords(out: np.ndarray, root: int, sample_rate_hz: int, rng: np.random.Generator) -> list[int]:
    """Lay a slow chord progression into ``out``; returns each chord's root (MIDI) for the melody."""
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]
    cursor, step, roots = 0, 0, []
    while cursor < out.shape[-1]:
        chord_n = int(rng.uniform(2.0, 3.5) * sample_rate_hz)
        degree = progression[step % len(progression)]
        third = 3 if degree in (2, 4, 9) else 4  # ii, iii, vi are minor
        for offset, pan in ((-12, 0.0), (0, -0.5), (third, 0.5), (7, 0.1)):
            note = _note(_midi_hz(root + degree + offset), chord_n + int(0.2 * sample_rate_hz),
                         rng.uniform(1.5, 3.0), sample_rate_hz, rng)
            _add(out, cursor, _pan(0.5 * note, out.shape[0], pan))
        roots.append(root + degree)
        cursor += chord_n
        step += 1
    return roots


def _melody(out: np.ndarray, root: int, sample_rate_hz: int, rng: np.random.Generator) -> None:
    """A plucked melody on the major scale an octave above the chords, with rests."""
    cursor = int(rng.uniform(0.0, 1.0) * sample_rate_hz)
    while cursor < out.shape[-1]:
        n = int(rng.choice([0.25, 0.5, 0.75, 1.0]) * sample_rate_hz)
        if rng.random() < 0.8:
            pitch = root + 12 + _MAJOR_SCALE[rng.integers(len(_MAJOR_SCALE))]
            note = _note(_midi_hz(pitch), n + int(0.1 * sample_rate_hz), rng.uniform(0.4, 0.9),
                         sample_rate_hz, rng, vibrato=0.003)
            _add(out, cursor, _pan(0.4 * note, out.shape[0], rng.uniform(-0.3, 0.3)))
        cursor += n


def synth_music(duration_s: float, sample_rate_hz: int, rng: np.random.Generator,
                n_channels: int = 1) -> np.ndarray:
    """Sustained harmonic music: a chord progression (bass + triad) under a plucked melody.

    Notes are additive partials with decays; chords change every 2-3.5 s.
    ``n_channels`` 1 or 2 (constant-power panned voices).
    Returns [shape=(n_channels, n_frames)] float32 at -20 dBFS RMS.
    """
    if n_channels not in (1, 2):
        raise ValueError(f"n_channels must be 1 or 2, got {n_channels}")
    out = np.zeros((n_channels, _n_frames(duration_s, sample_rate_hz)))
    root = int(rng.integers(45, 57))  # A2 .. G#3
    _chords(out, root, sample_rate_hz, rng)
    _melody(out, root, sample_rate_hz, rng)
    return _scale_to_rms(out)


# ---------------------------------------------------------------- effects


def _decay(n: int, tau_s: float, sample_rate_hz: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau_s * sample_rate_hz))


def _thump(n: int, f_hz: float, tau_s: float, sample_rate_hz: int) -> np.ndarray:
    """A low sine whose pitch drops by a third as it decays (body of an impact)."""
    t = np.arange(n) / sample_rate_hz
    freq = f_hz * (0.67 + 0.33 * np.exp(-t / 0.05))
    return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate_hz) * _decay(n, tau_s, sample_rate_hz)


def _impact(sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.8 * sample_rate_hz)
    crack = _noise_band(n, None, 4000.0, sample_rate_hz, rng) * _decay(n, rng.uniform(0.02, 0.1), sample_rate_hz)
    body = _thump(n, rng.uniform(45.0, 80.0), 0.18, sample_rate_hz)
    return 0.6 * crack / np.max(np.abs(crack)) + body


def _door(sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.7 * sample_rate_hz)
    latch = np.zeros(n)
    latch[: int(0.002 * sample_rate_hz)] = rng.standard_normal(int(0.002 * sample_rate_hz))
    rattle = _noise_band(n, 200.0, 2000.0, sample_rate_hz, rng) * _decay(n, 0.12, sample_rate_hz)
    body = _thump(n, rng.uniform(60.0, 90.0), 0.12, sample_rate_hz)
    return 0.5 * latch + 0.3 * rattle / np.max(np.abs(rattle)) + body


def _footsteps(sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """4-8 clicks/steps half a second apart: short broadband transients."""
    n_steps, step = int(rng.integers(4, 9)), int(rng.uniform(0.4, 0.6) * sample_rate_hz)
    out = np.zeros(n_steps * step)
    click_n = int(0.03 * sample_rate_hz)
    for i in range(n_steps):
        click = _noise_band(click_n, 80.0, 6000.0, sample_rate_hz, rng) * _decay(click_n, 0.006, sample_rate_hz)
        _add(out, i * step, click / np.max(np.abs(click)))
    return out


def _car_pass(sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """A car passing at 10-25 m/s, 5-15 m away: engine harmonics with doppler, tyre noise, 1/distance."""
    n = int(rng.uniform(3.0, 5.0) * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    speed, distance = rng.uniform(10.0, 25.0), rng.uniform(5.0, 15.0)
    x = speed * (t - t[-1] / 2)
    r = np.hypot(x, distance)
    doppler = 343.0 / (343.0 + speed * x / r)  # radial velocity dr/dt = v x / r
    phase = 2 * np.pi * np.cumsum(rng.uniform(30.0, 45.0) * doppler) / sample_rate_hz
    engine = sum(np.sin(k * phase) / k for k in range(1, 7))
    tyres = _noise_band(n, 100.0, 2000.0, sample_rate_hz, rng)
    sound = 0.5 * (engine + 0.5 * tyres / np.std(tyres)) * (distance / r)
    return sound * _fade(n, n // 10, n // 10)


def _ambience(n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Rumble (< 120 Hz) and wind (band noise with a slow swell): the room tone under everything."""
    t = np.arange(n) / sample_rate_hz
    rumble = _noise_band(n, 20.0, 120.0, sample_rate_hz, rng)
    wind = _noise_band(n, 150.0, 900.0, sample_rate_hz, rng, order=2)
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
    return 0.25 * rumble / np.std(rumble) + 0.15 * swell * wind / np.std(wind)


_EVENTS = (_impact, _door, _footsteps, _car_pass)
_EVENT_ODDS = (0.3, 0.3, 0.25, 0.15)


def synth_effects(duration_s: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Sound effects: rumble/wind ambience with events every 1.5-3.5 s.

    Events are impacts and door slams (click + low thump), footsteps
    (transients) and passing cars (engine harmonics with doppler, tyre noise).
    Returns [shape=(1, n_frames)] float32 at -20 dBFS RMS.
    """
    n = _n_frames(duration_s, sample_rate_hz)
    out = 0.15 * _ambience(n, sample_rate_hz, rng)
    cursor = int(rng.uniform(0.1, 1.0) * sample_rate_hz)
    while cursor < n:
        event = _EVENTS[rng.choice(len(_EVENTS), p=_EVENT_ODDS)](sample_rate_hz, rng)
        _add(out, cursor, rng.uniform(0.5, 1.0) * event)
        cursor += int(rng.uniform(1.5, 3.5) * sample_rate_hz)
    return _scale_to_rms(out)[None, :]


# ---------------------------------------------------------------- legacy damage


@dataclass(frozen=True)
class Damage:
    """What :func:`legacy_degrade` adds, each [shape=(n_channels, n_frames)], plus click positions."""

    hiss: np.ndarray
    hum: np.ndarray
    clicks: np.ndarray
    click_frames: np.ndarray


def _db_to_amp(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def _hum(n: int, hum_hz: float, level_dbfs: float, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: the fundamental at ``level_dbfs`` RMS and decaying odd/even harmonics."""
    t = np.arange(n) / sample_rate_hz
    hum = np.zeros(n)
    for k, rel in zip(range(1, 6), (1.0, 0.5, 0.35, 0.15, 0.1)):
        if k * hum_hz < 0.45 * sample_rate_hz:
            hum += rel * np.sin(2 * np.pi * k * hum_hz * t + rng.uniform(0, 2 * np.pi))
    return hum * _db_to_amp(level_dbfs) * np.sqrt(2)


def _clicks(shape: tuple[int, int], clicks_per_s: float, sample_rate_hz: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scratches/dust: a Poisson number of 0.1-1 ms impulses of 0.1-0.5 amplitude (same on all channels)."""
    out = np.zeros(shape)
    count = rng.poisson(clicks_per_s * shape[1] / sample_rate_hz)
    frames = np.sort(rng.integers(0, shape[1], size=count))
    for frame in frames:
        width = int(rng.integers(max(int(1e-4 * sample_rate_hz), 2), int(1e-3 * sample_rate_hz) + 1))
        click = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.5) * np.hanning(width + 2)[1:-1]
        _add(out, int(frame), np.broadcast_to(click, (shape[0], width)))
    return out, frames


def legacy_damage(shape: tuple[int, int], sample_rate_hz: int, rng: np.random.Generator,
                  hum_hz: float | None = 50.0, hum_dbfs: float = -42.0, hiss_dbfs: float = -50.0,
                  clicks_per_s: float = 0.5) -> Damage:
    """The additive damage of an optical track for a signal of ``shape`` (n_channels, n_frames)."""
    n_channels, n = shape
    hiss = rng.standard_normal(shape) * _db_to_amp(hiss_dbfs)
    hum = np.zeros(n) if hum_hz is None else _hum(n, hum_hz, hum_dbfs, sample_rate_hz, rng)
    clicks, frames = _clicks(shape, clicks_per_s, sample_rate_hz, rng)
    return Damage(hiss.astype(np.float32), np.broadcast_to(hum, shape).astype(np.float32),
                  clicks.astype(np.float32), frames)


def band_limit(x: np.ndarray, sample_rate_hz: int, low_hz: float = 100.0, high_hz: float = 7000.0) -> np.ndarray:
    """Zero-phase Butterworth band-pass (keeps alignment with the clean stems). [shape=(C, T)]"""
    sos = signal.butter(4, [low_hz, high_hz], "bandpass", fs=sample_rate_hz, output="sos")
    return signal.sosfiltfilt(sos, x, axis=-1).astype(np.float32)


def legacy_degrade(x: np.ndarray, sample_rate_hz: int, rng: np.random.Generator, hum_hz: float | None = 50.0,
                   hum_dbfs: float = -42.0, hiss_dbfs: float = -50.0, clicks_per_s: float = 0.5) -> np.ndarray:
    """Make ``x`` [shape=(n_channels, n_frames)] sound like a worn optical track.

    Band-limits to 100 Hz-7 kHz, then adds white hiss (``hiss_dbfs`` RMS), mains
    hum at ``hum_hz`` with four harmonics (fundamental at ``hum_dbfs`` RMS;
    None for none) and Poisson-distributed clicks. Returns float32, same shape.
    """
    damage = legacy_damage(x.shape, sample_rate_hz, rng, hum_hz, hum_dbfs, hiss_dbfs, clicks_per_s)
    return band_limit(x, sample_rate_hz) + damage.hiss + damage.hum + damage.clicks


# ---------------------------------------------------------------- the mix

# Film-mix balance: dialogue on top, music and effects under it (integrated loudness, LUFS).
STEM_LUFS = {"dialogue": -24.0, "music": -32.0, "effects": -30.0}
MIX_LUFS_RANGE = (-27.0, -20.0)


def loudness_lufs(x: np.ndarray, sample_rate_hz: int) -> float:
    """BS.1770 integrated loudness of [shape=(C, T)] (pyloudnorm); RMS in dBFS below 0.4 s."""
    if x.shape[1] < int(0.4 * sample_rate_hz):  # shorter than one gating block (BS.1770-4 §2.8)
        return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12))
    return float(pyloudnorm.Meter(sample_rate_hz).integrated_loudness(x.T.astype(np.float64)))


def _to_lufs(x: np.ndarray, target_lufs: float, sample_rate_hz: int) -> np.ndarray:
    level = loudness_lufs(x, sample_rate_hz)
    if not np.isfinite(level):
        return x
    return (x * _db_to_amp(target_lufs - level)).astype(np.float32)


def make_film_mix(duration_s: float, rng: np.random.Generator,
                  sample_rate_hz: int = SAMPLE_RATE_HZ) -> dict[str, np.ndarray]:
    """A mono film mix and its stems, each [shape=(1, n_frames)] float32.

    Keys "dialogue", "music", "effects" and "mix" (their exact sum). Stems sit at
    :data:`STEM_LUFS`; the mix lands at about -23 LUFS and is kept inside
    :data:`MIX_LUFS_RANGE` by one common gain.
    """
    stems = {
        "dialogue": synth_dialogue(duration_s, sample_rate_hz, rng),
        "music": synth_music(duration_s, sample_rate_hz, rng),
        "effects": synth_effects(duration_s, sample_rate_hz, rng),
    }
    stems = {name: _to_lufs(x, STEM_LUFS[name], sample_rate_hz) for name, x in stems.items()}
    mix_lufs = loudness_lufs(sum(stems.values()), sample_rate_hz)
    target = float(np.clip(mix_lufs, *MIX_LUFS_RANGE))
    gain = _db_to_amp(target - mix_lufs) if np.isfinite(mix_lufs) else 1.0
    stems = {name: (x * gain).astype(np.float32) for name, x in stems.items()}
    stems["mix"] = (stems["dialogue"] + stems["music"] + stems["effects"]).astype(np.float32)
    return stems
