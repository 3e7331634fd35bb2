"""The restored soundtrack back into the picture: ``<title>/remux.mkv`` (or ``remux.mov``).

The source's video streams are copied packet for packet, with its subtitles (text subtitles
that the container cannot hold as they are, e.g. MP4's ``mov_text`` in Matroska, are converted
to its text format; bitmap subtitles it cannot hold are left out and reported), attachments
(Matroska), chapters and global tags. The audio streams are the deliverables, in sync with
the picture:

1. the 7.1.4 bed, 12 channels, 24-bit PCM (FLAC holds 8 channels at most). Matroska stores no
   channel layout for PCM: the channels are in WAVE order, which the stream's title states;
   QuickTime (``container="mov"``) keeps the layout;
2. the 5.1 fold-down; 3. the stereo fold-down; 4. the M&E (music and effects, no dialogue):
   FLAC in Matroska, 24-bit PCM in QuickTime.

Each carries a title and a language tag (the source stream's language; the M&E has no
linguistic content: ``zxx``). Sample 0 of every deliverable is the picture's zero (see
:mod:`filmrestore.media`): the audio inputs are offset by the picture's start on the source's
timeline, so the first sample plays with the first picture in the remux as in the source; the
source's timestamps are kept (``-copyts``; missing ones, as in MPEG program streams, generated
from the frame rate), so the remux starts where the source does.

Pure library code (no Prefect); ffmpeg-python builds the argument list.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import ffmpeg

from filmrestore.audio import ensure_writable_dir, fingerprint_source, partial_path, read_info
from filmrestore.errors import CorruptMediaError
from filmrestore.manifest import FileRecord
from filmrestore.media import ffmpeg_path, first_meaningful_line, is_picture, picture_timeline, require_tool, run_ffprobe

BED_ORDER = "FL FR FC LFE BL BR SL SR TFL TFR TBL TBR"  # WAVE order; Matroska stores no layout for PCM
#: (deliverable name, stream title, codec in Matroska) in the remux's audio order.
AUDIO_TRACKS: tuple[tuple[str, str, str], ...] = (
    ("bed_7.1.4", f"7.1.4 bed (restored; {BED_ORDER})", "pcm_s24le"),
    ("foldown/5.1", "5.1 fold-down", "flac"),
    ("foldown/stereo", "Stereo fold-down", "flac"),
    ("stems/me", "M&E (music and effects)", "flac"),
)
CONTAINERS = {"mkv": "matroska", "mov": "mov"}
NO_LANGUAGE = "zxx"  # ISO 639-2: no linguistic content (the M&E)
# Subtitle codecs each container holds as they are, and the text codec other text subtitles become.
KEPT_SUBTITLES = {"mkv": {"subrip", "ass", "ssa", "webvtt", "hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle",
                          "text"},
                  "mov": {"mov_text"}}
TEXT_SUBTITLES = {"subrip", "ass", "ssa", "webvtt", "mov_text", "text"}
TEXT_CODEC = {"mkv": "subrip", "mov": "mov_text"}


def remux_fingerprint(path: str | Path) -> str:
    """The content hash a remux's record carries: its size and first and last 8 MiB (the copied
    video may be 100 GB; a truncated or replaced file shows)."""
    return "container:" + fingerprint_source(path)


def remux(source: str | Path, deliverables: dict[str, str | Path], out: str | Path,
          language: str | None = None, container: str = "mkv",
          more: list[tuple[dict[str, str | Path], str | None, str]] | None = None) -> tuple[FileRecord, dict[str, Any]]:
    """Write ``out``: the source's pictures and subtitles with the deliverables' audio
    (:data:`AUDIO_TRACKS`, each from ``deliverables[name]``), under a temporary name renamed
    when complete. ``container`` ``"mkv"`` (Matroska: FLAC beside the 12-channel PCM bed, every
    subtitle Matroska holds, attachments) or ``"mov"`` (QuickTime: 24-bit PCM throughout, which
    keeps the bed's channel layout; text subtitles as mov_text, no attachments). Returns the
    file's record (the bed's rate, channels and length; :func:`remux_fingerprint` as its hash)
    and a report of the streams written.

    ``more``: the deliverables of the source's other audio streams, each ``(deliverables,
    language, label)``: their four tracks follow, titled with the label (e.g. ``"stream 1, fra"``)."""
    source, out = Path(source), Path(out)
    sets = [(deliverables, language, ""), *(more or [])]
    if container not in CONTAINERS:
        raise ValueError(f"container must be one of {sorted(CONTAINERS)}, got {container!r}")
    require_tool("ffmpeg")
    probe = run_ffprobe(source)
    zero_time_s = picture_timeline(probe)[1]
    streams = probe.get("streams", [])
    pictures = [s for s in streams if s.get("codec_type") == "video"]
    subtitles = [s for s in streams if s.get("codec_type") == "subtitle"]
    kept_subtitles = [s for s in subtitles
                      if s.get("codec_name") in KEPT_SUBTITLES[container] | TEXT_SUBTITLES]
    attachments = [s for s in streams if s.get("codec_type") == "attachment"] if container == "mkv" else []

    # +genpts: an MPEG program stream (DVD, MPEG-2) has packets without timestamps, which
    # Matroska and QuickTime cannot store; ffmpeg fills them in from the frame rate.
    src = ffmpeg.input(ffmpeg_path(source), fflags="+genpts")
    # Source timestamps are kept as they are (-copyts) and each deliverable starts at the picture's
    # zero on that timeline; the muxer then shifts every stream alike. (Letting ffmpeg shift the
    # source to its start instead leaves a program stream's pictures a B-frame delay off.)
    tracks = [(files[name], f"{title} ({label})" if label else title, codec, lang if name != "stems/me" else NO_LANGUAGE)
              for files, lang, label in sets for name, title, codec in AUDIO_TRACKS]
    audio_inputs = [ffmpeg.input(ffmpeg_path(Path(path)), itsoffset=f"{zero_time_s:.6f}") for path, _, _, _ in tracks]
    maps = [src[str(s["index"])] for s in pictures] + [a["a:0"] for a in audio_inputs] \
        + [src[str(s["index"])] for s in kept_subtitles] + [src[str(s["index"])] for s in attachments]
    options: dict[str, Any] = {"c:v": "copy", "map_metadata": 0, "map_chapters": 0, "f": CONTAINERS[container]}
    if attachments:
        options["c:t"] = "copy"
    lang = language or "und"
    for i, (_, title, codec, _) in enumerate(tracks):
        options[f"c:a:{i}"] = codec if container == "mkv" else "pcm_s24le"
        options[f"metadata:s:a:{i}"] = f"title={title}"
        options[f"disposition:a:{i}"] = "default" if i == 0 else "0"
    for i, s in enumerate(kept_subtitles):
        options[f"c:s:{i}"] = "copy" if s.get("codec_name") in KEPT_SUBTITLES[container] else TEXT_CODEC[container]
    ensure_writable_dir(out.parent)
    tmp = partial_path(out)
    args = ffmpeg.output(*maps, ffmpeg_path(tmp), **options).global_args(
        "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-copyts").compile()
    # Language tags: one -metadata per stream (ffmpeg-python cannot repeat an option's name).
    at = args.index(ffmpeg_path(tmp))
    languages = [code or "und" for _, _, _, code in tracks]
    args[at:at] = [arg for i, code in enumerate(languages) for arg in (f"-metadata:s:a:{i}", f"language={code}")]
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CorruptMediaError(source, f"ffmpeg cannot remux it: {first_meaningful_line(result.stderr)}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    bed = read_info(deliverables["bed_7.1.4"])
    record = FileRecord(str(out), bed.sample_rate_hz, bed.n_channels, bed.n_frames, remux_fingerprint(out))
    skipped = [f"#{s['index']} {s.get('codec_name')}" for s in subtitles if s not in kept_subtitles]
    report = {"video_streams": len(pictures), "audio_streams": [t for _, t, _, _ in tracks],
              "subtitle_streams": len(kept_subtitles), "subtitles_not_kept": skipped,
              "attachments": len(attachments), "chapters": len(_chapters(source)),
              "container": container, "picture_zero_s": zero_time_s, "audio_offset_s": round(zero_time_s, 6), "language": lang,
              "has_picture": any(is_picture(s) for s in streams)}
    return record, report


def _chapters(source: Path) -> list[dict[str, Any]]:
    try:
        return ffmpeg.probe(ffmpeg_path(source), v="error", show_chapters=None).get("chapters") or []
    except ffmpeg.Error:
        return []
