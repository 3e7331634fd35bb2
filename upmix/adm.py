"""ADM BWF export of a DirectSpeakers bed: ``chna`` and ``axml`` chunks (ITU-R BS.2076-2).

The bed uses only the common definitions of ITU-R BS.2094 (as shipped with the
EBU ADM renderer): the pack ``AP_00010017`` (4+7+0) and, per speaker, the track
format ``AT_000100xx_01`` of its channel format ``AC_000100xx``. So the file
needs no custom pack/channel/stream/track formats; ``axml`` holds one
audioProgramme, one audioContent, one audioObject and the audioTrackUIDs, and
``chna`` (EBU Tech 3285 s7 / ITU-R BS.2088) ties each WAV track to its UID.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from filmrestore.audio import AudioWriter
from filmrestore.errors import PlanError
from filmrestore.upmix.layouts import Layout

# ITU-R BS.2094 common definitions: BS.2051 speaker label -> audioChannelFormat number.
COMMON_CHANNEL_FORMATS: dict[str, int] = {
    "M+030": 0x01, "M-030": 0x02, "M+000": 0x03, "LFE1": 0x04, "M+110": 0x05, "M-110": 0x06,
    "M+090": 0x0A, "M-090": 0x0B, "M+135": 0x1C, "M-135": 0x1D,
    "U+045": 0x22, "U-045": 0x23, "U+135": 0x1E, "U-135": 0x1F,
}
# BS.2094 DirectSpeakers packs (typeLabel 0001) for the layouts we write.
COMMON_PACK_FORMATS: dict[str, str] = {
    "0+2+0": "AP_00010002", "0+5+0": "AP_00010003", "0+7+0": "AP_0001000f", "4+7+0": "AP_00010017",
}
_EBUCORE_NS = "urn:ebu:metadata-schema:ebuCore_2016"
_TIME_DECIMALS = 5


def track_format_id(label: str) -> str:
    """Common-definition audioTrackFormatID of a speaker, e.g. "M+135" -> "AT_0001001c_01"."""
    if label not in COMMON_CHANNEL_FORMATS:
        raise PlanError(f"speaker {label!r} has no BS.2094 common definition here")
    return f"AT_0001{COMMON_CHANNEL_FORMATS[label]:04x}_01"


def pack_format_id(layout: Layout) -> str:
    """Common-definition audioPackFormatID of a DirectSpeakers layout (4+7+0 -> AP_00010017)."""
    if layout.name not in COMMON_PACK_FORMATS:
        raise PlanError(f"layout {layout.name} has no BS.2094 common pack format here")
    return COMMON_PACK_FORMATS[layout.name]


def track_uid(track_index: int) -> str:
    """audioTrackUID of 1-based WAV track ``track_index``: ATU_00000001, ..."""
    return f"ATU_{track_index:08X}"


def adm_time(seconds: Fraction) -> str:
    """BS.2076 time "hh:mm:ss.zzzzz", rounded *up* to 10 us so a duration covers its last sample."""
    ticks = math.ceil(seconds * 10**_TIME_DECIMALS)
    whole_s, frac = divmod(ticks, 10**_TIME_DECIMALS)
    minutes, secs = divmod(whole_s, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{frac:0{_TIME_DECIMALS}d}"


def chna_body(layout: Layout) -> bytes:
    """``chna`` chunk body: numTracks, numUIDs, then one 40-byte audioID per WAV track.

    Each audioID is trackIndex (uint16, 1-based), UID (12 chars), track format
    (14 chars), pack format (11 chars) and a pad byte (EBU Tech 3285 s7 / BS.2088).
    """
    pack = pack_format_id(layout).encode("ascii")
    body = struct.pack("<HH", layout.n_channels, layout.n_channels)
    for i, speaker in enumerate(layout.speakers, start=1):
        body += struct.pack("<H12s14s11sx", i, track_uid(i).encode("ascii"),
                            track_format_id(speaker.label).encode("ascii"), pack)
    return body


def axml_body(layout: Layout, n_frames: int, sample_rate_hz: int, title: str, bit_depth: int = 24) -> bytes:
    """``axml`` chunk body: EBUCore-wrapped audioFormatExtended (BS.2076-2) for one bed."""
    duration = adm_time(Fraction(n_frames, sample_rate_hz))
    pack = pack_format_id(layout)
    uids = [track_uid(i) for i in range(1, layout.n_channels + 1)]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<ebuCoreMain xmlns="{_EBUCORE_NS}" xmlns:dc="http://purl.org/dc/elements/1.1/">',
        "<coreMetadata><format>",
        '<audioFormatExtended version="ITU-R_BS.2076-2">',
        f'<audioProgramme audioProgrammeID="APR_1001" audioProgrammeName={quoteattr(title)} '
        f'start="{adm_time(Fraction(0))}" end="{duration}">',
        "<audioContentIDRef>ACO_1001</audioContentIDRef>",
        "</audioProgramme>",
        f'<audioContent audioContentID="ACO_1001" audioContentName={quoteattr(layout.common_name + " bed")}>',
        "<audioObjectIDRef>AO_1001</audioObjectIDRef>",
        "</audioContent>",
        f'<audioObject audioObjectID="AO_1001" audioObjectName={quoteattr("Bed " + layout.common_name)} '
        f'start="{adm_time(Fraction(0))}" duration="{duration}">',
        f"<audioPackFormatIDRef>{pack}</audioPackFormatIDRef>",
        *(f"<audioTrackUIDRef>{uid}</audioTrackUIDRef>" for uid in uids),
        "</audioObject>",
    ]
    for uid, speaker in zip(uids, layout.speakers):
        lines += [
            f'<audioTrackUID UID="{uid}" sampleRate="{sample_rate_hz}" bitDepth="{bit_depth}">',
            f"<audioTrackFormatIDRef>{escape(track_format_id(speaker.label))}</audioTrackFormatIDRef>",
            f"<audioPackFormatIDRef>{pack}</audioPackFormatIDRef>",
            "</audioTrackUID>",
        ]
    lines += ["</audioFormatExtended>", "</format></coreMetadata>", "</ebuCoreMain>", ""]
    return "\n".join(lines).encode("utf-8")


def bed_adm_chunks(layout: Layout, n_frames: int, sample_rate_hz: int, title: str) -> tuple[bytes, bytes]:
    """The ``(chna body, axml body)`` of a DirectSpeakers bed of ``n_frames`` frames."""
    return chna_body(layout), axml_body(layout, n_frames, sample_rate_hz, title)


class AdmBedWriter:
    """Stream a bed into an ADM BWF (BW64 + chna + axml) file.

    ``chna`` goes before the audio; ``axml`` (which holds the duration) is
    appended by :meth:`close` (called on leaving a ``with`` block if not before);
    on an exception inside ``with`` the partial file is removed. Samples are PCM 24-bit, WAVE_FORMAT_EXTENSIBLE with
    the layout's channel mask; past 4 GiB the file becomes BW64 with ``ds64``.
    """

    def __init__(self, path: str | Path, layout: Layout, sample_rate_hz: int, title: str) -> None:
        self.layout = layout
        self.title = title
        self._closed = False
        self.writer = AudioWriter(
            path, sample_rate_hz, layout.n_channels, subtype="PCM_24", channel_mask=layout.channel_mask,
            head_chunks=[(b"chna", chna_body(layout))], large_magic=b"BW64",
        )

    def write(self, block: np.ndarray) -> None:
        """Append a bed block [shape=(n_channels, n_frames)] in the layout's WAV order."""
        self.writer.write(block)

    def close(self) -> Path:
        """Append ``axml`` with the final duration and rename the file into place."""
        axml = axml_body(self.layout, self.writer.n_frames, self.writer.sample_rate_hz, self.title)
        self._closed = True
        return self.writer.close(tail_chunks=[(b"axml", axml)])

    @property
    def content_hash(self) -> str:
        return self.writer.content_hash

    def __enter__(self) -> AdmBedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.writer.abort()
        elif not self._closed:
            self.close()


def open_adm_writer(path: str | Path, layout: Layout, sample_rate_hz: int, title: str) -> AdmBedWriter:
    """Open a streaming ADM BWF writer; call ``.write(block)`` then ``.close()``."""
    return AdmBedWriter(path, layout, sample_rate_hz, title)


def write_adm_bwf(
    path: str | Path, bed_blocks: Iterable[np.ndarray], layout: Layout, sample_rate_hz: int, title: str
) -> str:
    """Write consecutive bed blocks [shape=(n_channels, n_frames)] as ADM BWF; returns the content hash."""
    with open_adm_writer(path, layout, sample_rate_hz, title) as writer:
        for block in bed_blocks:
            writer.write(block)
        writer.close()
    return writer.content_hash
