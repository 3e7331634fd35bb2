"""Media: probe a source with ffprobe and decode one audio stream to 48 kHz float32 WAV, in sync.

Pure library code (no Prefect). ffmpeg-python builds every command line as an argument
list, never a shell string.

Sync rule: sample 0 of the output is the picture's time zero, i.e. the
``start_time`` of the first video stream (the container's start time when
there is no video). An audio stream that starts later is padded with silence
at the head; one that starts earlier is trimmed. ffmpeg's ``aresample`` filter
does this with ``first_pts`` (libswresample pads with silence or drops samples
until the first output sample sits at that timestamp), at the stream's own rate;
a second ``aresample`` then converts to 48 kHz with the SoX resampler when this
ffmpeg was built with it. The two are kept apart on purpose: libswresample
compares every frame's timestamp against its output position while that
position has not moved past ``first_pts``, and the SoX resampler holds its
first output back, so in one filter the millisecond timestamps of WebM/Matroska
(jittering by up to 0.5 ms around a Vorbis frame's true start) each triggered
another insertion of silence: 90 % of a 6 s Vorbis-in-WebM stream came out as zeros.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from filmrestore.audio import ensure_writable_dir, iter_blocks, no_space_error, partial_path, read_info, read_layout
from filmrestore.errors import (ConfigError, CorruptMediaError, EmptyAudioError, MediaError, NoAudioStreamError,
                               SilentProgrammeError)
from filmrestore.manifest import FileRecord

OUTPUT_RATE_HZ = 48_000
# A decode that ends this much before the stream's declared end is a truncated file.
MAX_SHORT_S = 0.25
# Soft timestamp tolerance for aresample's first-frame padding/trimming (seconds).
_MIN_COMP_S = 0.0001
# A hole (or overlap) between the samples and their timestamps larger than this is filled with
# silence (or trimmed) where it is: a packet lost to damage keeps everything after it at its time.
# libswresample's default (0.1 s) let holes of a few frames each pass and add up: 8 lost AAC
# frames put the rest of a clip 64 ms early. Above the 0.5 ms jitter of millisecond timestamps.
_HARD_COMP_S = 0.001

_CONTEXT_TAG = re.compile(r"^\s*\[[^\]]+ @ 0x[0-9a-fA-F]+\]\s*")

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class AudioStream:
    """One audio stream of a source, as ffprobe reports it.

    ``index`` is the absolute stream index in the container, ``audio_index`` the
    0-based index among audio streams (what ``--stream N`` selects).
    ``start_time_s`` is on the container's timeline; ``duration_s`` is None
    when the container does not say.
    """

    index: int
    audio_index: int
    codec: str
    sample_rate_hz: int
    n_channels: int
    channel_layout: str
    start_time_s: float
    duration_s: float | None
    language: str | None

    @property
    def end_time_s(self) -> float | None:
        """Declared end of the stream on the container's timeline, if known."""
        return None if self.duration_s is None else self.start_time_s + self.duration_s

    def describe(self) -> str:
        """One line for error messages and logs."""
        lang = f", {self.language}" if self.language else ""
        return (f"#{self.audio_index} (stream {self.index}: {self.codec}, {self.channel_layout}, "
                f"{self.sample_rate_hz} Hz{lang})")


# ---------------------------------------------------------------- probing


def first_meaningful_line(text: str) -> str:
    """The first non-empty line of ffmpeg/ffprobe's stderr, without its ``[demuxer @ 0x...]`` tag."""
    for line in text.splitlines():
        line = _CONTEXT_TAG.sub("", line).strip()
        if line:
            return line
    return "no message from ffmpeg"


def run_ffprobe(source: Path) -> dict[str, Any]:
    """ffprobe's JSON (format + streams) for ``source``; CorruptMediaError when unreadable."""
    if not source.exists():
        raise CorruptMediaError(source, "file not found")
    if not source.is_file():
        raise CorruptMediaError(source, "not a regular file")
    if not os.access(source, os.R_OK):
        raise CorruptMediaError(source, "file is not readable (permission denied)")
    require_tool("ffprobe")
    try:
        return ffmpeg.probe(ffmpeg_path(source), v="error")
    except ffmpeg.Error as exc:
        message = first_meaningful_line(exc.stderr.decode("utf-8", "replace"))
        message = message.removeprefix(f"{ffmpeg_path(source)}: ")  # the error names the file already
        raise CorruptMediaError(source, f"ffprobe cannot read it: {message}") from exc


def ffmpeg_path(path: Path) -> str:
    """An absolute path, so that ffmpeg never reads a name as an option ("-x") or protocol ("a:b")."""
    return str(path.absolute())


def _stream_time(stream: dict[str, Any], ts_key: str, seconds_key: str) -> Fraction | None:
    """A stream time exactly from its ``*_pts``/``*_ts`` and time base, else ffprobe's seconds."""
    ts, time_base = stream.get(ts_key), stream.get("time_base")
    if ts not in (None, "N/A") and time_base:
        return int(ts) * Fraction(time_base)
    value = stream.get(seconds_key)
    if value in (None, "N/A"):
        return None
    return Fraction(value)


def _parse_hms(value: str) -> Fraction | None:
    """``HH:MM:SS.fffffffff`` (Matroska's DURATION tag) in seconds."""
    try:
        hours, minutes, seconds = value.split(":")
        return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
    except ValueError:
        return None


def _stream_duration(stream: dict[str, Any], start: Fraction) -> Fraction | None:
    """The stream's duration in seconds, or None when the container does not declare it.

    Matroska has no per-stream duration; ffmpeg's muxer writes a ``DURATION``
    tag holding the stream's *end* time, so the start is subtracted. (mkvmerge
    writes a true duration there; the subtraction then under-estimates, which
    only loosens the truncation check.)
    """
    duration = _stream_time(stream, "duration_ts", "duration")
    if duration is not None:
        return duration
    tag = _lower_tags(stream).get("duration")
    end = _parse_hms(tag) if tag else None
    if end is None:
        return None
    return max(end - max(start, Fraction(0)), Fraction(0))


def _lower_tags(stream: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in (stream.get("tags") or {}).items()}


def _audio_stream(stream: dict[str, Any], audio_index: int) -> AudioStream:
    start = _stream_time(stream, "start_pts", "start_time") or Fraction(0)
    duration = _stream_duration(stream, start)
    n_channels = int(stream.get("channels") or 0)
    return AudioStream(
        index=int(stream["index"]),
        audio_index=audio_index,
        codec=str(stream.get("codec_name", "unknown")),
        sample_rate_hz=int(stream.get("sample_rate") or 0),
        n_channels=n_channels,
        channel_layout=_layout_name(stream.get("channel_layout"), n_channels),
        start_time_s=float(start),
        duration_s=None if duration is None else float(duration),
        language=_lower_tags(stream).get("language"),
    )


def _layout_name(layout: str | None, n_channels: int) -> str:
    """ffprobe's layout name; for an unlabelled stream, the only reading of 1 or 2 channels."""
    if layout:
        return str(layout)
    return {1: "mono", 2: "stereo"}.get(n_channels, f"unspecified ({n_channels} ch)")


def is_picture(stream: dict[str, Any]) -> bool:
    """A real video stream (not cover art attached as a picture)."""
    attached = (stream.get("disposition") or {}).get("attached_pic", 0)
    return stream.get("codec_type") == "video" and not attached


def picture_timeline(probe: dict[str, Any]) -> tuple[float, float]:
    """(container start, picture zero) in seconds: see the module docstring."""
    container = (probe.get("format") or {}).get("start_time")
    container_start = float(container) if container not in (None, "N/A") else 0.0
    for stream in probe.get("streams", []):
        if is_picture(stream):
            start = _stream_time(stream, "start_pts", "start_time")
            if start is not None:
                return container_start, float(start)
    return container_start, container_start


def probe_audio_streams(source: str | Path) -> tuple[list[AudioStream], float]:
    """List the audio streams of ``source`` and the time its output zero stands for.

    Returns ``(streams, zero_time_s)``: ``zero_time_s`` is the start time of the
    first video stream on the container's timeline, or the container's start
    time when there is no video. Extracted audio starts at that instant.
    Raises CorruptMediaError (missing, unreadable, not media) or
    NoAudioStreamError (no audio stream), each naming the file.
    """
    source = Path(source)
    probe = run_ffprobe(source)
    return _audio_streams(source, probe), picture_timeline(probe)[1]


def _audio_streams(source: Path, probe: dict[str, Any]) -> list[AudioStream]:
    audio = [s for s in probe.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({str(s.get("codec_type")) for s in probe.get("streams", [])})
        raise NoAudioStreamError(source, f"no audio stream (streams found: {', '.join(kinds) or 'none'})")
    return [_audio_stream(s, i) for i, s in enumerate(audio)]


def select_stream(source: Path, streams: list[AudioStream], stream: int | None) -> AudioStream:
    """Audio stream number ``stream`` (0-based among audio streams; default 0)."""
    n = 0 if stream is None else stream
    if not 0 <= n < len(streams):
        available = "; ".join(s.describe() for s in streams)
        raise NoAudioStreamError(source, f"no audio stream #{n}; available: {available}")
    return streams[n]


# ---------------------------------------------------------------- decoding


def require_tool(name: str) -> None:
    """Raise ConfigError when ``name`` (ffmpeg, ffprobe) is not on PATH."""
    if shutil.which(name) is None:
        raise ConfigError(f"{name} is not installed (not found on PATH); install ffmpeg")


@functools.lru_cache(maxsize=1)
def has_soxr() -> bool:
    """Whether the ffmpeg on PATH was built with libsoxr (``aresample=resampler=soxr``)."""
    require_tool("ffmpeg")
    result = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True,
                            check=False)
    return "--enable-libsoxr" in result.stdout


def _first_pts_frames(zero_time_s: float, container_start_s: float, sample_rate_hz: int = OUTPUT_RATE_HZ) -> int:
    """aresample's ``first_pts`` (samples at ``sample_rate_hz``) that puts sample 0 at the picture's zero.

    Without ``-copyts`` ffmpeg shifts every timestamp by minus the container's
    start time, so the picture's zero sits at ``zero - container_start``.
    """
    return round((zero_time_s - container_start_s) * sample_rate_hz)


def expected_frames(chosen: AudioStream, zero_time_s: float) -> int | None:
    """Output length implied by the stream's declared end (None when undeclared)."""
    end = chosen.end_time_s
    if end is None:
        return None
    return max(round((end - zero_time_s) * OUTPUT_RATE_HZ), 0)


def build_command(source: Path, tmp_out: Path, chosen: AudioStream, first_pts: int,
                  end_frames: int | None) -> list[str]:
    """ffmpeg's argument list: decode, align, resample to 48 kHz, write float32 WAV (RF64 if big).

    ``first_pts`` is in samples of the stream's own rate (see the module docstring).
    """
    audio = ffmpeg.input(ffmpeg_path(source))[str(chosen.index)].filter(
        "aresample", chosen.sample_rate_hz, first_pts=first_pts, min_comp=_MIN_COMP_S,
        min_hard_comp=_HARD_COMP_S)
    resample: dict[str, Any] = {"resampler": "soxr", "precision": 28} if has_soxr() else {}
    audio = audio.filter("aresample", OUTPUT_RATE_HZ, **resample)
    if end_frames is not None:
        audio = audio.filter("atrim", end_sample=end_frames)  # drop codec padding past the end
    out = audio.output(ffmpeg_path(tmp_out), f="wav", acodec="pcm_f32le", rf64="auto", map_metadata=-1,
                       fflags="+bitexact", flags="+bitexact")
    return out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
                           "-progress", "pipe:1", "-y").compile()


def _parse_progress(line: str) -> int | None:
    """Output frames done, from one ``-progress`` line (``out_time_us=...``)."""
    key, _, value = line.strip().partition("=")
    if key != "out_time_us" or not value.lstrip("-").isdigit():
        return None
    return max(int(value), 0) * OUTPUT_RATE_HZ // 1_000_000


def run_ffmpeg(args: list[str], source: Path, total_frames: int,
               on_progress: ProgressFn | None = None, output: Path | None = None) -> str:
    """Run ffmpeg, forwarding progress; returns its stderr. CorruptMediaError on failure, or
    OutputNotWritableError naming ``output`` when it failed for want of space (not the source's fault)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                done = _parse_progress(line)
                if done is not None and on_progress is not None:
                    on_progress(min(done, total_frames), total_frames)
        except BaseException:  # a callback that cancels (or Ctrl-C) must not leave ffmpeg running
            proc.kill()
            proc.wait()
            raise
        returncode = proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if returncode != 0:
        if output is not None and ("No space left on device" in stderr or "Disk quota exceeded" in stderr):
            raise no_space_error(output, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        raise CorruptMediaError(source, f"ffmpeg cannot decode it: {first_meaningful_line(stderr)}")
    return stderr


def _check_length(source: Path, n_frames: int, expected: int | None, stderr: str) -> float:
    """Raise for empty or truncated decodes; return how many seconds short of the declared end."""
    if n_frames == 0:
        raise EmptyAudioError(source, "the audio stream decodes to zero samples")
    if expected is None:
        return 0.0
    short_s = max(expected - n_frames, 0) / OUTPUT_RATE_HZ
    if short_s > MAX_SHORT_S:
        note = f" ({first_meaningful_line(stderr)})" if stderr.strip() else ""
        raise CorruptMediaError(
            source, f"truncated: decoded {n_frames / OUTPUT_RATE_HZ:.3f} s of audio, the container "
            f"declares {expected / OUTPUT_RATE_HZ:.3f} s{note}")
    return short_s


def extract_audio(source: str | Path, out_wav: str | Path, stream: int | None = None,
                  on_progress: ProgressFn | None = None) -> tuple[FileRecord, dict[str, Any]]:
    """Decode audio stream ``stream`` (index among audio streams, default 0) of ``source``.

    Writes ``out_wav``: 48 kHz float32 WAV (RF64 past 4 GiB), the stream's own
    channel count, starting at the picture's zero (see the module docstring) and
    ending at the stream's declared end. The file appears only when complete.
    ``on_progress(done_frames, total_frames)`` is called as ffmpeg advances.
    Returns the file's record and a report (codec, layout, original rate,
    start offset applied, duration, frames). Raises CorruptMediaError,
    NoAudioStreamError or EmptyAudioError naming ``source``.
    """
    source, out_wav = Path(source), Path(out_wav)
    probe = run_ffprobe(source)
    container_start_s, zero_time_s = picture_timeline(probe)
    chosen = select_stream(source, _audio_streams(source, probe), stream)
    expected = expected_frames(chosen, zero_time_s)
    total = expected if expected is not None else _format_frames(probe)
    ensure_writable_dir(out_wav.parent)
    tmp = partial_path(out_wav)
    first_pts = _first_pts_frames(zero_time_s, container_start_s, chosen.sample_rate_hz)
    args = build_command(source, tmp, chosen, first_pts, expected)
    try:
        stderr = run_ffmpeg(args, source, total, on_progress, output=out_wav)
        info = read_info(tmp)
        _check_layout(source, tmp)
        short_s = _check_length(source, info.n_frames, expected, stderr)
        _check_signal(source, tmp, info.duration_s)
        gaps = find_decode_gaps(source, chosen, zero_time_s) if stderr.strip() else []
        os.replace(tmp, out_wav)
    finally:
        tmp.unlink(missing_ok=True)
    record = FileRecord.from_path(out_wav)
    return record, {**_report(chosen, zero_time_s, record, short_s, stderr), "gaps": gaps,
                    "gaps_total_s": round(sum(g["duration_s"] for g in gaps), 6)}


def _check_layout(source: Path, decoded: Path) -> None:
    """Refuse, naming the source, channels the upmix cannot place (e.g. 4.0 with a back centre)."""
    try:
        read_layout(decoded)
    except ConfigError as exc:
        raise MediaError(source, str(exc)) from None


MIN_PROGRAMME_S = 0.4  # one BS.1770 gating block: anything shorter has no loudness to deliver
QUIET_PEAK_DBFS = -50.0  # under this sample peak, the programme is metered at extract (cheap: rare)


def _check_signal(source: Path, decoded: Path, duration_s: float) -> None:
    """Refuse, naming the source, a stream that nothing downstream can restore, separate or
    normalise: NaN/Inf samples, digital silence (every sample 0), shorter than one 400 ms
    BS.1770 block, or so quiet that every 400 ms block is under the -70 LUFS absolute gate."""
    if duration_s < MIN_PROGRAMME_S:
        raise EmptyAudioError(source, f"is too short: its audio stream lasts {duration_s:.3f} s, under the "
                              f"{MIN_PROGRAMME_S:g} s of one BS.1770 loudness block")
    peak = 0.0
    for block in iter_blocks(decoded, 480_000):
        if not np.isfinite(block).all():
            raise CorruptMediaError(source, "its audio stream decodes to NaN or infinite samples")
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
    if peak == 0.0:
        raise SilentProgrammeError(source, "is silent: its audio stream is digital silence (every sample is 0)")
    peak_dbfs = 20.0 * math.log10(peak)
    if peak_dbfs < QUIET_PEAK_DBFS:
        from filmrestore.loudness.measure import measure_file

        if not math.isfinite(measure_file(decoded, true_peak=False).integrated_lufs):
            raise SilentProgrammeError(
                source, f"is too quiet to deliver: every 400 ms block is under BS.1770's -70 LUFS absolute gate "
                f"(sample peak {peak_dbfs:.1f} dBFS)")


GAP_MIN_S = 0.001  # a hole in the decoded timeline shorter than this is timestamp rounding, not lost audio


def find_decode_gaps(source: Path, chosen: AudioStream, zero_time_s: float) -> list[dict[str, float]]:
    """Where the decoded stream has holes: packets that failed to decode (damaged) or that are
    missing, found as gaps between one decoded frame's end and the next frame's timestamp.

    Returns ``[{"at_s", "duration_s"}]`` with ``at_s`` on the output's timeline (0 = the
    picture's zero). Extract fills each with silence at its timestamp (``aresample``
    compensation), so the samples after it keep their time; this says where and how long.
    One more decoding pass of the stream (ffprobe), run only when the decoder complained.
    """
    try:
        probe = ffmpeg.probe(ffmpeg_path(source), v="error", select_streams=str(chosen.index),
                             show_entries="frame=pts_time,duration_time,nb_samples")
    except ffmpeg.Error:
        return []  # the extract itself succeeded: an unreadable listing only means no gap report
    spans = []
    for frame in probe.get("frames") or []:
        try:
            start = float(frame["pts_time"])
        except (KeyError, ValueError):
            continue
        duration = frame.get("duration_time")
        length = float(duration) if duration not in (None, "N/A") else \
            int(frame.get("nb_samples") or 0) / chosen.sample_rate_hz
        spans.append((start, start + length))
    spans.sort()
    gaps = []
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start - end >= GAP_MIN_S:
            gaps.append({"at_s": round(end - zero_time_s, 6), "duration_s": round(start - end, 6)})
    return gaps


def _format_frames(probe: dict[str, Any]) -> int:
    """Progress total when the stream has no declared duration: the container's duration."""
    duration = (probe.get("format") or {}).get("duration")
    return round(float(duration) * OUTPUT_RATE_HZ) if duration not in (None, "N/A") else 0


def _report(chosen: AudioStream, zero_time_s: float, record: FileRecord, short_s: float,
            stderr: str) -> dict[str, Any]:
    return {
        "stream_index": chosen.index,
        "audio_index": chosen.audio_index,
        "codec": chosen.codec,
        "channel_layout": chosen.channel_layout,
        "n_channels": chosen.n_channels,
        "original_sample_rate_hz": chosen.sample_rate_hz,
        "sample_rate_hz": OUTPUT_RATE_HZ,
        "language": chosen.language,
        "zero_time_s": zero_time_s,
        "stream_start_time_s": chosen.start_time_s,
        # > 0: that much silence was put at the head; < 0: that much audio was trimmed.
        "start_offset_s": chosen.start_time_s - zero_time_s,
        "declared_duration_s": chosen.duration_s,
        "duration_s": record.duration_s,
        "n_frames": record.n_frames,
        "short_by_s": short_s,
        "resampler": "soxr" if has_soxr() else "swr",
        "decoder_warnings": first_meaningful_line(stderr) if stderr.strip() else None,
    }
