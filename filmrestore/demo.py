"""A demo "legacy film" clip: a test-pattern picture with a worn mono optical-style soundtrack.

The soundtrack is :func:`filmrestore.synth.make_film_mix` through
:func:`filmrestore.synth.legacy_degrade`, stored as 24-bit PCM at 48 kHz
(``audio_sample_rate_hz=44_100`` makes ffmpeg resample it, to exercise the
extract stage's resampler). The clean truth is written next to the clip in
``<stem>.reference/`` so separation and restoration can be measured against it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np

from filmrestore.audio import ensure_writable_dir, partial_path, write_audio
from filmrestore.errors import OutputNotWritableError
from filmrestore.manifest import write_json
from filmrestore.synth import SAMPLE_RATE_HZ, legacy_degrade, loudness_lufs, make_film_mix

VIDEO_SIZE = "320x240"
VIDEO_RATE_FPS = 24
_CONTAINERS = {".mov": "mov", ".mkv": "matroska", ".mp4": "mp4"}
_PEAK_CEILING = 0.89  # -1 dBFS: keep clicks from clipping the 24-bit PCM


def reference_dir(clip: str | Path) -> Path:
    """The folder beside ``clip`` that holds its clean stems: ``<stem>.reference/``."""
    clip = Path(clip)
    return clip.with_name(f"{clip.stem}.reference")


@functools.lru_cache(maxsize=1)
def _video_codec_args() -> tuple[str, ...]:
    """libx264 when this ffmpeg has it, else ffmpeg's own MPEG-4 part 2 encoder."""
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True,
                              check=False).stdout
    if " libx264 " in encoders:
        return ("libx264", "ultrafast")
    return ("mpeg4", "")


def make_soundtrack(duration_s: float, seed: int) -> dict[str, np.ndarray]:
    """Stems, clean mix and the degraded soundtrack, each [shape=(1, n_frames)] at 48 kHz.

    One gain keeps the degraded track's peak under -1 dBFS and is applied to
    every signal, so ``soundtrack = band_limit(mix) + damage`` still holds.
    """
    rng = np.random.default_rng(seed)
    signals = make_film_mix(duration_s, rng)
    signals["soundtrack"] = legacy_degrade(signals["mix"], SAMPLE_RATE_HZ, rng)
    peak = float(np.max(np.abs(signals["soundtrack"])))
    gain = min(1.0, _PEAK_CEILING / peak) if peak > 0 else 1.0
    return {name: (x * gain).astype(np.float32) for name, x in signals.items()}


def _mux_command(wav: Path, tmp_clip: Path, container: str, duration_s: float,
                 audio_sample_rate_hz: int) -> list[str]:
    """ffmpeg's argument list: test-pattern video + the soundtrack as 24-bit PCM mono."""
    video = ffmpeg.input(f"testsrc2=size={VIDEO_SIZE}:rate={VIDEO_RATE_FPS}:duration={duration_s}",
                         f="lavfi").video
    audio = ffmpeg.input(str(wav.absolute())).audio
    codec, preset = _video_codec_args()
    video_opts = {"vcodec": codec, "pix_fmt": "yuv420p", **({"preset": preset} if preset else {"q:v": 5})}
    out = ffmpeg.output(video, audio, str(tmp_clip.absolute()), f=container, acodec="pcm_s24le",
                        ar=audio_sample_rate_hz, ac=1, t=duration_s, **video_opts)
    return out.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile()


def _write_reference(clip: Path, signals: dict[str, np.ndarray], seed: int, duration_s: float) -> Path:
    """Clean stems, clean mix and the degraded soundtrack (48 kHz float WAV) plus a JSON note."""
    folder = ensure_writable_dir(reference_dir(clip))
    for name, x in signals.items():
        write_audio(folder / f"{name}.wav", x, SAMPLE_RATE_HZ)
    loudness = {name: round(loudness_lufs(x, SAMPLE_RATE_HZ), 2) for name, x in signals.items()}
    write_json(folder / "reference.json", {
        "clip": clip.name, "seed": seed, "duration_s": duration_s, "sample_rate_hz": SAMPLE_RATE_HZ,
        "loudness_lufs": loudness,
        "damage": {"band_hz": [100.0, 7000.0], "hum_hz": 50.0, "hum_dbfs": -42.0, "hiss_dbfs": -50.0,
                   "clicks_per_s": 0.5},
        "note": "mix = dialogue + music + effects; soundtrack = mix band-limited plus hiss, hum and "
                "clicks: the audio muxed into the clip",
    })
    return folder


def make_demo_clip(path: str | Path, duration_s: float = 30.0, seed: int = 0,
                   audio_sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    """Write a demo film clip (.mov, .mkv or .mp4) with one video and one mono PCM audio stream.

    Video: ffmpeg's ``testsrc2`` at 320x240, 24 fps (libx264, else mpeg4).
    Audio: the degraded synthetic mix, 24-bit PCM at ``audio_sample_rate_hz``.
    The clip appears under ``path`` only when complete; the clean stems go to
    :func:`reference_dir`. Returns ``path``.
    """
    path = Path(path)
    container = _CONTAINERS.get(path.suffix.lower())
    if container is None:
        raise ValueError(f"{path}: demo clips are {', '.join(_CONTAINERS)}, not {path.suffix!r}")
    ensure_writable_dir(path.parent)
    signals = make_soundtrack(duration_s, seed)
    _write_reference(path, signals, seed, duration_s)  # first: a finished clip implies its reference
    tmp = partial_path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".demo-") as work:
        wav = Path(work) / "soundtrack.wav"
        write_audio(wav, signals["soundtrack"], SAMPLE_RATE_HZ)
        args = _mux_command(wav, tmp, container, duration_s, audio_sample_rate_hz)
        result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise OutputNotWritableError(path, f"ffmpeg could not write the demo clip: {result.stderr.strip()}")
    os.replace(tmp, path)
    return path
