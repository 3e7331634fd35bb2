"""ADM BWF export (ITU-R BS.2076-2 ``axml`` + ``chna`` in BW64) of a bed and objects, profiles, and a checker.

One audioProgramme; one audioContent per stem (dialogue, music, effects) and one
for the bed; a DirectSpeakers bed object that uses only the common definitions
of ITU-R BS.2094 (the pack, e.g. ``AP_00010017`` for 4+7+0, and per speaker the
track format ``AT_000100xx_01``), with channels that carry nothing referenced as
the silent track ``ATU_00000000``; and one Objects audioObject per object, with
its own pack / channel / stream / track formats (``AP_0003xxxx`` ...) and its
audioBlockFormats over time (rtime, duration, position, gain, width, and
jumpPosition with interpolationLength where the plan says so).

Profiles (:data:`PROFILES`):

- ``ebu``: 4+7+0 DirectSpeakers bed + polar objects. This is what the EBU ADM
  renderer renders back to our 7.1.4 bed.
- ``dolby``: the constraints of the Dolby Atmos Master ADM profile as we apply
  them: 48 kHz, 24-bit PCM, at most 128 tracks, a DirectSpeakers bed of at most
  7.1.2 (we write 7.1; the bed's height ambience becomes four static objects at
  the height speakers), at most 118 objects, Cartesian object positions
  (BS.2127 s10 conversion; a position at a 7.1.4 speaker goes to that speaker's
  allocentric position), every object's blocks contiguous from 0 to its end,
  interpolationLength within its block.

:func:`check_adm_file` reads a file back (RIFF or BW64 with ``ds64``) and lists
what breaks a profile.
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import quoteattr

import numpy as np

from filmrestore.audio import AudioWriter, read_chunks
from filmrestore.errors import AudioFormatError, ConfigError, PlanError
from filmrestore.upmix.admtime import TICKS_PER_S, seconds_to_ticks, ticks_time
from filmrestore.layouts import BED_7_1_4, Layout, get_layout
from filmrestore.upmix.plan import Block, ObjectPlan, Plan, plan_problems
from filmrestore.upmix.render import INPUTS

# ITU-R BS.2094 common definitions: BS.2051 speaker label -> audioChannelFormat number.
COMMON_CHANNEL_FORMATS: dict[str, int] = {
    "M+030": 0x01, "M-030": 0x02, "M+000": 0x03, "LFE1": 0x04, "M+110": 0x05, "M-110": 0x06,
    "M+090": 0x0A, "M-090": 0x0B, "M+135": 0x1C, "M-135": 0x1D,
    "U+045": 0x22, "U-045": 0x23, "U+135": 0x1E, "U-135": 0x1F,
    "U+030": 0x0D, "U-030": 0x0F, "U+110": 0x10, "U-110": 0x12,
}
# BS.2094 DirectSpeakers packs (typeLabel 0001) for the layouts we write.
COMMON_PACK_FORMATS: dict[str, str] = {
    "0+2+0": "AP_00010002", "0+5+0": "AP_00010003", "0+7+0": "AP_0001000f", "4+7+0": "AP_00010017",
    "2+5+0": "AP_00010004", "4+5+0": "AP_00010005",
}
# Allocentric (Cartesian) positions of the 4+7+0 speakers, as the ADM renderer's allocentric panner places them.
ALLOCENTRIC_4_7_0: dict[str, tuple[float, float, float]] = {
    "M+030": (-1.0, 1.0, 0.0), "M-030": (1.0, 1.0, 0.0), "M+000": (0.0, 1.0, 0.0),
    "M+090": (-1.0, 0.0, 0.0), "M-090": (1.0, 0.0, 0.0), "M+135": (-1.0, -1.0, 0.0),
    "M-135": (1.0, -1.0, 0.0), "U+045": (-1.0, 1.0, 1.0), "U-045": (1.0, 1.0, 1.0),
    "U+135": (-1.0, -1.0, 1.0), "U-135": (1.0, -1.0, 1.0),
}
SILENT_UID = "ATU_00000000"
_EBUCORE_NS = "urn:ebu:metadata-schema:ebuCore_2016"
# BS.2076 audioContent <dialogue>: 1 = dialogue, 0 = non-dialogue (kind 1 music, 2 effects), 2 = mixed.
_CONTENT = {"dialogue": ("Dialogue", '<dialogue dialogueContentKind="1">1</dialogue>'),
            "music": ("Music", '<dialogue nonDialogueContentKind="1">0</dialogue>'),
            "effects": ("Effects", '<dialogue nonDialogueContentKind="2">0</dialogue>'),
            "bed": ("Bed", '<dialogue mixedContentKind="0">2</dialogue>')}


@dataclass(frozen=True)
class AdmProfile:
    """What an ADM profile allows."""

    name: str
    bed_layout: str  # the DirectSpeakers pack we write
    cartesian: bool  # object positions in Cartesian coordinates
    sample_rates_hz: tuple[int, ...] | None = None
    bit_depths: tuple[int, ...] = (24,)
    max_tracks: int | None = None
    max_objects: int | None = None
    max_bed_channels: int | None = None
    allowed_bed_packs: tuple[str, ...] | None = None


PROFILES: dict[str, AdmProfile] = {
    "ebu": AdmProfile("ebu", "4+7+0", cartesian=False, bit_depths=(16, 24, 32)),
    "dolby": AdmProfile(
        "dolby", "0+7+0", cartesian=True, sample_rates_hz=(48_000,), bit_depths=(24,), max_tracks=128,
        max_objects=118, max_bed_channels=10,
        # 2.0, 3.0, 5.0, 5.1, 7.0, 7.1, 5.1.2, 7.1.2 (BS.2094 common packs up to 7.1.2)
        allowed_bed_packs=("AP_00010001", "AP_00010002", "AP_0001000a", "AP_0001000c", "AP_00010003",
                           "AP_0001000f", "AP_00010004", "AP_00010016"),
    ),
}


def get_profile(name: str) -> AdmProfile:
    """An ADM profile by name (``ebu`` or ``dolby``)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown ADM profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]


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


def polar_to_cartesian(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """ITU-R BS.2127 s10 point conversion from polar to Cartesian (distance 1)."""
    el_top, el_top_tilde = 30.0, 45.0
    if abs(elevation_deg) > el_top:
        el_tilde = el_top_tilde + (90.0 - el_top_tilde) * (abs(elevation_deg) - el_top) / (90.0 - el_top)
        z, r_xy = math.copysign(1.0, elevation_deg), math.tan(math.radians(90.0 - el_tilde))
    else:
        z, r_xy = math.tan(math.radians(el_top_tilde * elevation_deg / el_top)), 1.0
    sectors = [(0.0, (0.0, 1.0)), (-30.0, (1.0, 1.0)), (-110.0, (1.0, -1.0)), (110.0, (-1.0, -1.0)),
               (30.0, (-1.0, 1.0))]
    for i in range(len(sectors)):
        (left_az, left_pos), (right_az, right_pos) = sectors[i], sectors[(i + 1) % len(sectors)]
        if _inside(azimuth_deg, right_az, left_az):
            rel_az, rel_left = _rel(right_az, azimuth_deg), _rel(right_az, left_az)
            mid = (rel_left + right_az) / 2.0
            gain_r = 0.5 + 0.5 * math.tan(math.radians(rel_az - mid)) / math.tan(math.radians(right_az - mid))
            p = math.atan2(gain_r, 1.0 - gain_r) * 2.0 / math.pi
            x = r_xy * (left_pos[0] + (right_pos[0] - left_pos[0]) * p)
            y = r_xy * (left_pos[1] + (right_pos[1] - left_pos[1]) * p)
            return round(x, 6), round(y, 6), round(z, 6)
    raise PlanError(f"azimuth {azimuth_deg} deg is in no sector")  # unreachable for finite azimuths


def _rel(x: float, y: float) -> float:
    """``y`` shifted by whole turns so that it is not less than ``x`` (ear's relative_angle)."""
    while y - 360.0 >= x:
        y -= 360.0
    while y < x:
        y += 360.0
    return y


def _inside(x: float, start: float, end: float) -> bool:
    """Whether angle ``x`` is within [start, end] going anticlockwise (ear's inside_angle_range, tol 0)."""
    end = _rel(start, end) if end < start else end
    while end - 360.0 > start:
        end -= 360.0
    return _rel(start, x) <= end


# ----------------------------------------------------------------------------- the scene in the file

@dataclass(frozen=True)
class AdmObject:
    """An Objects audioObject: its plan, its content, and which rendered row feeds its track."""

    plan: ObjectPlan
    content: str
    source_row: int  # row of vstack([bed, feeds]) of a RenderedBlock


@dataclass(frozen=True)
class AdmScene:
    """What goes into one ADM file: bed tracks, objects, their track order."""

    profile: AdmProfile
    bed_layout: Layout
    bed_labels: tuple[str, ...]  # bed channels with a track, in the bed layout's order
    objects: tuple[AdmObject, ...]
    n_frames: int
    sample_rate_hz: int
    track_rows: tuple[int, ...] = field(default=())

    @property
    def n_tracks(self) -> int:
        return len(self.track_rows)


def _bed_channels_with_audio(plan: Plan) -> set[str]:
    """Bed channels that the renderer fills: ambience sends and LFE1."""
    from filmrestore.upmix.render import _AMBIENCE_SENDS

    labels = {"LFE1"}
    for stem, sides in _AMBIENCE_SENDS.items():
        if stem in plan.stems:
            labels |= {label for sends in sides.values() for label, _ in sends}
    return labels


def scene_for(plan: Plan, profile: AdmProfile, source_layout: Layout = BED_7_1_4) -> AdmScene:
    """Lay a plan out for a profile; raises PlanError (before anything is written) if it does not fit."""
    problems = plan_problems(plan)
    if problems:
        raise PlanError(f"plan does not fit: {problems[0]}")
    bed_layout = get_layout(profile.bed_layout)
    filled = _bed_channels_with_audio(plan)
    bed_labels = tuple(lab for lab in bed_layout.labels if lab in filled)
    objects = [AdmObject(o, o.stem, source_layout.n_channels + INPUTS.index(o.feed)) for o in plan.objects]
    for label in source_layout.labels:  # bed channels the profile's bed cannot carry become static objects
        if label in filled and label not in bed_layout.labels:
            spk = source_layout.speakers[source_layout.index(label)]
            block = Block(0.0, plan.duration_s, spk.azimuth_deg, spk.elevation_deg)
            objects.append(AdmObject(ObjectPlan(f"Ambience {label}", "dialogue", (block,)), "bed",
                                     source_layout.index(label)))
    rows = tuple(source_layout.index(lab) for lab in bed_labels) + tuple(o.source_row for o in objects)
    scene = AdmScene(profile, bed_layout, bed_labels, tuple(objects), plan.n_frames, plan.sample_rate_hz, rows)
    _check_fits(scene)
    return scene


def _check_fits(scene: AdmScene) -> None:
    profile = scene.profile
    if profile.max_objects is not None and len(scene.objects) > profile.max_objects:
        raise PlanError(f"{len(scene.objects)} objects (with the bed's height ambience) exceed the "
                        f"{profile.name} profile's limit of {profile.max_objects}")
    if profile.max_tracks is not None and scene.n_tracks > profile.max_tracks:
        raise PlanError(f"{scene.n_tracks} tracks exceed the {profile.name} profile's limit of {profile.max_tracks}")
    if profile.sample_rates_hz is not None and scene.sample_rate_hz not in profile.sample_rates_hz:
        raise PlanError(f"{scene.sample_rate_hz} Hz is not allowed by the {profile.name} profile "
                        f"({profile.sample_rates_hz})")


def chna_body(scene: AdmScene) -> bytes:
    """``chna``: numTracks, numUIDs, then one 40-byte audioID per track (EBU Tech 3285 s7 / BS.2088)."""
    body = struct.pack("<HH", scene.n_tracks, scene.n_tracks)
    pack = pack_format_id(scene.bed_layout)
    for i, label in enumerate(scene.bed_labels, start=1):
        body += struct.pack("<H12s14s11sx", i, track_uid(i).encode(), track_format_id(label).encode(),
                            pack.encode())
    for k, _ in enumerate(scene.objects, start=1):
        i = len(scene.bed_labels) + k
        body += struct.pack("<H12s14s11sx", i, track_uid(i).encode(), f"AT_0003{0x1000 + k:04x}_01".encode(),
                            f"AP_0003{0x1000 + k:04x}".encode())
    return body


def _block_xml(obj_index: int, n: int, block: Block, end_ticks: int | None, cartesian: bool) -> str:
    """One audioBlockFormat; ``end_ticks`` given for the last block (it ends with the programme)."""
    start = seconds_to_ticks(block.start_s)
    stop = end_ticks if end_ticks is not None else seconds_to_ticks(block.end_s)
    if cartesian:
        label = _speaker_at(block.azimuth_deg, block.elevation_deg)
        x, y, z = ALLOCENTRIC_4_7_0[label] if label else polar_to_cartesian(block.azimuth_deg, block.elevation_deg)
        position = (f'<cartesian>1</cartesian><position coordinate="X">{x:.6f}</position>'
                    f'<position coordinate="Y">{y:.6f}</position><position coordinate="Z">{z:.6f}</position>')
    else:
        position = (f'<position coordinate="azimuth">{block.azimuth_deg:.3f}</position>'
                    f'<position coordinate="elevation">{block.elevation_deg:.3f}</position>'
                    '<position coordinate="distance">1.0</position>')
    jump = (f'<jumpPosition interpolationLength="{block.interpolation_s:.5f}">1</jumpPosition>'
            if block.jump else "")
    return (f'<audioBlockFormat audioBlockFormatID="AB_0003{0x1000 + obj_index:04x}_{n:08x}" '
            f'rtime="{ticks_time(start)}" duration="{ticks_time(stop - start)}">{position}'
            f'<width>{block.width_deg:g}</width><gain>{block.gain:.6f}</gain>{jump}</audioBlockFormat>')


def _speaker_at(azimuth_deg: float, elevation_deg: float) -> str | None:
    for spk in BED_7_1_4.non_lfe:
        if abs(spk.azimuth_deg - azimuth_deg) < 1e-6 and abs(spk.elevation_deg - elevation_deg) < 1e-6:
            return spk.label
    return None


def axml_body(scene: AdmScene, n_frames: int, title: str, bit_depth: int = 24) -> bytes:
    """``axml``: EBUCore-wrapped audioFormatExtended (BS.2076-2) for the scene, ``n_frames`` long."""
    end_ticks = math.ceil(Fraction(n_frames, scene.sample_rate_hz) * TICKS_PER_S)
    duration = ticks_time(end_ticks)
    contents = [c for c in ("dialogue", "music", "effects") if any(o.content == c for o in scene.objects)]
    contents += ["bed"]
    content_ids = {c: f"ACO_{0x1001 + i:04X}" for i, c in enumerate(contents)}
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<ebuCoreMain xmlns="{_EBUCORE_NS}" xmlns:dc="http://purl.org/dc/elements/1.1/">',
             "<coreMetadata><format>", '<audioFormatExtended version="ITU-R_BS.2076-2">',
             f'<audioProgramme audioProgrammeID="APR_1001" audioProgrammeName={quoteattr(title)} '
             f'start="00:00:00.00000" end="{duration}">',
             *(f"<audioContentIDRef>{cid}</audioContentIDRef>" for cid in content_ids.values()),
             "</audioProgramme>"]
    for content, cid in content_ids.items():
        name, dialogue = _CONTENT[content]
        refs = [f"AO_{0x1002 + k:04X}" for k, o in enumerate(scene.objects) if o.content == content]
        refs += ["AO_1001"] if content == "bed" else []
        lines += [f'<audioContent audioContentID="{cid}" audioContentName="{name}">{dialogue}',
                  *(f"<audioObjectIDRef>{r}</audioObjectIDRef>" for r in refs), "</audioContent>"]
    lines += _bed_object_xml(scene, duration)
    for k, obj in enumerate(scene.objects, start=1):
        lines += _object_xml(scene, k, obj, duration, end_ticks)
    for i, label in enumerate(scene.bed_labels, start=1):
        lines += [f'<audioTrackUID UID="{track_uid(i)}" sampleRate="{scene.sample_rate_hz}" bitDepth="{bit_depth}">',
                  f"<audioTrackFormatIDRef>{track_format_id(label)}</audioTrackFormatIDRef>",
                  f"<audioPackFormatIDRef>{pack_format_id(scene.bed_layout)}</audioPackFormatIDRef>",
                  "</audioTrackUID>"]
    for k, _ in enumerate(scene.objects, start=1):
        i = len(scene.bed_labels) + k
        lines += [f'<audioTrackUID UID="{track_uid(i)}" sampleRate="{scene.sample_rate_hz}" bitDepth="{bit_depth}">',
                  f"<audioTrackFormatIDRef>AT_0003{0x1000 + k:04x}_01</audioTrackFormatIDRef>",
                  f"<audioPackFormatIDRef>AP_0003{0x1000 + k:04x}</audioPackFormatIDRef>", "</audioTrackUID>"]
    lines += ["</audioFormatExtended>", "</format></coreMetadata>", "</ebuCoreMain>", ""]
    return "\n".join(lines).encode("utf-8")


def _bed_object_xml(scene: AdmScene, duration: str) -> list[str]:
    uids = {label: track_uid(i) for i, label in enumerate(scene.bed_labels, start=1)}
    return [f'<audioObject audioObjectID="AO_1001" audioObjectName="Bed {scene.bed_layout.common_name}" '
            f'start="00:00:00.00000" duration="{duration}">',
            f"<audioPackFormatIDRef>{pack_format_id(scene.bed_layout)}</audioPackFormatIDRef>",
            *(f"<audioTrackUIDRef>{uids.get(label, SILENT_UID)}</audioTrackUIDRef>"
              for label in scene.bed_layout.labels),
            "</audioObject>"]


def _object_xml(scene: AdmScene, k: int, obj: AdmObject, duration: str, end_ticks: int) -> list[str]:
    name = quoteattr(obj.plan.name)
    num = f"0003{0x1000 + k:04x}"  # typeLabel 0003 (Objects), then the object's number
    n_blocks = len(obj.plan.blocks)
    blocks = [_block_xml(k, n, b, end_ticks if n == n_blocks else None, scene.profile.cartesian)
              for n, b in enumerate(obj.plan.blocks, 1)]
    return [f'<audioObject audioObjectID="AO_{0x1001 + k:04X}" audioObjectName={name} '
            f'start="00:00:00.00000" duration="{duration}">',
            f"<audioPackFormatIDRef>AP_{num}</audioPackFormatIDRef>",
            f"<audioTrackUIDRef>{track_uid(len(scene.bed_labels) + k)}</audioTrackUIDRef>", "</audioObject>",
            f'<audioPackFormat audioPackFormatID="AP_{num}" audioPackFormatName={name} typeLabel="0003" '
            'typeDefinition="Objects">',
            f"<audioChannelFormatIDRef>AC_{num}</audioChannelFormatIDRef>", "</audioPackFormat>",
            f'<audioChannelFormat audioChannelFormatID="AC_{num}" audioChannelFormatName={name} '
            'typeLabel="0003" typeDefinition="Objects">', *blocks, "</audioChannelFormat>",
            f'<audioStreamFormat audioStreamFormatID="AS_{num}" audioStreamFormatName={name} '
            'formatLabel="0001" formatDefinition="PCM">',
            f"<audioChannelFormatIDRef>AC_{num}</audioChannelFormatIDRef>",
            f"<audioTrackFormatIDRef>AT_{num}_01</audioTrackFormatIDRef>", "</audioStreamFormat>",
            f'<audioTrackFormat audioTrackFormatID="AT_{num}_01" audioTrackFormatName={name} '
            'formatLabel="0001" formatDefinition="PCM">',
            f"<audioStreamFormatIDRef>AS_{num}</audioStreamFormatIDRef>", "</audioTrackFormat>"]


class AdmSceneWriter:
    """Stream a scene's tracks into an ADM BWF (BW64 + chna + axml) file.

    :meth:`write` takes a :class:`~filmrestore.upmix.render.RenderedBlock`-like
    pair (bed [shape=(12, n)], feeds [shape=(5, n)]) or the tracks directly
    (:meth:`write_tracks`, [shape=(n_tracks, n)]). ``chna`` goes before the
    audio, ``axml`` (which holds the duration) after it at :meth:`close`; past
    4 GiB the file becomes BW64 with ``ds64``. On an exception inside ``with``
    the partial file is removed.
    """

    def __init__(self, path: str | Path, scene: AdmScene, title: str) -> None:
        self.scene = scene
        self.title = title
        self._closed = False
        self.writer = AudioWriter(path, scene.sample_rate_hz, scene.n_tracks, subtype="PCM_24", channel_mask=0,
                                  head_chunks=[(b"chna", chna_body(scene))], large_magic=b"BW64")

    def write(self, bed: np.ndarray, feeds: np.ndarray) -> None:
        """Append a block given the bed [shape=(12, n)] and feeds [shape=(5, n)] of the renderer."""
        self.write_tracks(np.vstack([bed, feeds])[list(self.scene.track_rows)])

    def write_tracks(self, tracks: np.ndarray) -> None:
        """Append [shape=(n_tracks, n_frames)] in the scene's track order."""
        self.writer.write(tracks)

    def close(self, publish: bool = True) -> Path:
        """Append ``axml`` with the final duration and rename the file into place (``publish=False``:
        leave it complete under its temporary name, see :meth:`AudioWriter.close`)."""
        axml = axml_body(self.scene, self.writer.n_frames, self.title)
        self._closed = True
        return self.writer.close(tail_chunks=[(b"axml", axml)], publish=publish)

    def abort(self) -> None:
        self.writer.abort()

    @property
    def content_hash(self) -> str:
        return self.writer.content_hash

    def __enter__(self) -> AdmSceneWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.writer.abort()
        elif not self._closed:
            self.close()


# ----------------------------------------------------------------------------- reading back and checking

def read_pcm24_frames(path: str | Path, start_frame: int, n_frames: int) -> np.ndarray:
    """Frames of a 24-bit RIFF/BW64 file [shape=(n_channels, n)] float32 (libsndfile does not open BW64)."""
    chunks = read_chunks(path, (b"fmt ",))
    n_channels, bits = struct.unpack("<H", chunks[b"fmt "][2:4])[0], struct.unpack("<H", chunks[b"fmt "][14:16])[0]
    if bits != 24:
        raise AudioFormatError(path, f"{bits}-bit samples; this reader reads 24-bit PCM")
    offset, size = struct.unpack("<QQ", chunks[b"data@"])
    frame_bytes = 3 * n_channels
    n_frames = max(0, min(n_frames, size // frame_bytes - start_frame))
    with open(path, "rb") as f:
        f.seek(offset + start_frame * frame_bytes)
        raw = np.frombuffer(f.read(n_frames * frame_bytes), np.uint8).reshape(-1, 3).astype(np.int32)
    ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
    return (ints.reshape(n_frames, n_channels).T / np.float32(2**23)).astype(np.float32)


def check_adm_file(path: str | Path, profile: str | AdmProfile = "ebu") -> list[str]:
    """Everything in an ADM BWF file that breaks ``profile``, as sentences (empty: it conforms)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    chunks = read_chunks(path)
    problems = _format_problems(chunks, profile)
    if b"chna" not in chunks or b"axml" not in chunks:
        return problems + [f"missing chunk(s): {[t.decode() for t in (b'chna', b'axml') if t not in chunks]}"]
    try:
        root = ET.fromstring(chunks[b"axml"])
    except ET.ParseError as exc:
        return problems + [f"axml is not well-formed XML ({exc})"]
    elements = [e for e in root.iter()]
    return problems + _structure_problems(elements, chunks[b"chna"], profile)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _format_problems(chunks: dict[bytes, bytes], profile: AdmProfile) -> list[str]:
    fmt = chunks.get(b"fmt ")
    if fmt is None or len(fmt) < 16:
        return ["no fmt chunk"]
    n_channels, rate, _, _, bits = struct.unpack("<HIIHH", fmt[2:16])
    problems = []
    if profile.sample_rates_hz is not None and rate not in profile.sample_rates_hz:
        problems.append(f"sample rate {rate} Hz; the {profile.name} profile allows {list(profile.sample_rates_hz)}")
    if bits not in profile.bit_depths:
        problems.append(f"{bits}-bit samples; the {profile.name} profile allows {list(profile.bit_depths)}")
    if profile.max_tracks is not None and n_channels > profile.max_tracks:
        problems.append(f"{n_channels} tracks; the {profile.name} profile allows at most {profile.max_tracks}")
    return problems


def _structure_problems(elements: list[ET.Element], chna: bytes, profile: AdmProfile) -> list[str]:
    by_tag: dict[str, list[ET.Element]] = {}
    for e in elements:
        by_tag.setdefault(_local(e.tag), []).append(e)
    problems = []
    if len(by_tag.get("audioProgramme", [])) != 1:
        problems.append(f"{len(by_tag.get('audioProgramme', []))} audioProgrammes; one is expected")
    n_uids = struct.unpack("<H", chna[2:4])[0] if len(chna) >= 4 else 0
    uids = {chna[4 + 40 * i + 2:4 + 40 * i + 14].decode(errors="replace") for i in range(n_uids)}
    declared = {e.get("UID") for e in by_tag.get("audioTrackUID", [])}
    if uids - declared:
        problems.append(f"chna tracks without an audioTrackUID in axml: {sorted(uids - declared)[:5]}")
    problems += _bed_problems(by_tag, profile)
    channels = [c for c in by_tag.get("audioChannelFormat", []) if c.get("typeDefinition") == "Objects"]
    if profile.max_objects is not None and len(channels) > profile.max_objects:
        problems.append(f"{len(channels)} objects; the {profile.name} profile allows at most {profile.max_objects}")
    for channel in channels:
        problems += [f"{channel.get('audioChannelFormatID')}: {p}" for p in _block_problems(channel, profile)]
    return problems


def _bed_problems(by_tag: dict[str, list[ET.Element]], profile: AdmProfile) -> list[str]:
    problems = []
    packs = {e.text for obj in by_tag.get("audioObject", []) for e in obj if _local(e.tag) == "audioPackFormatIDRef"}
    beds = sorted(p for p in packs if p and p.startswith("AP_0001"))
    for pack in beds:
        if profile.allowed_bed_packs is not None and pack not in profile.allowed_bed_packs:
            layout = next((name for name, pid in COMMON_PACK_FORMATS.items() if pid == pack), "?")
            problems.append(f"bed pack {pack} ({layout}) is larger than the {profile.name} profile allows "
                            f"(at most {profile.max_bed_channels} channels, 7.1.2)")
    return problems


def _parse_time(text: str | None) -> Fraction | None:
    if not text:
        return None
    try:
        h, m, s = text.split(":")
        return (int(h) * 60 + int(m)) * 60 + Fraction(s)
    except ValueError:
        return None


def _block_problems(channel: ET.Element, profile: AdmProfile) -> list[str]:
    blocks = [b for b in channel if _local(b.tag) == "audioBlockFormat"]
    if not blocks:
        return ["no audioBlockFormat"]
    problems, expected_start = [], Fraction(0)
    for n, block in enumerate(blocks, start=1):
        rtime, duration = _parse_time(block.get("rtime")), _parse_time(block.get("duration"))
        if rtime is None or duration is None:
            problems.append(f"block {n} lacks a valid rtime/duration")
            continue
        if rtime != expected_start:
            problems.append(f"block {n} starts at {float(rtime):.5f} s, expected {float(expected_start):.5f} s "
                            "(blocks must be contiguous from 0)")
        expected_start = rtime + duration
        problems += [f"block {n}: {p}" for p in _position_problems(block, duration, profile)]
    return problems


def _position_problems(block: ET.Element, duration: Fraction, profile: AdmProfile) -> list[str]:
    coords = {p.get("coordinate"): p.text for p in block if _local(p.tag) == "position"}
    cartesian = any(_local(e.tag) == "cartesian" and (e.text or "").strip() == "1" for e in block)
    problems = []
    if profile.cartesian and not cartesian:
        problems.append(f"polar position; the {profile.name} profile needs Cartesian (X, Y, Z)")
    ranges = ({"X": (-1, 1), "Y": (-1, 1), "Z": (-1, 1)} if cartesian
              else {"azimuth": (-180, 180), "elevation": (-90, 90)})
    for name, (lo, hi) in ranges.items():
        try:
            value = float(coords.get(name) or "nan")
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and lo <= value <= hi):
            problems.append(f"position {name} = {coords.get(name)!r} is not in [{lo}, {hi}]")
    for jump in (e for e in block if _local(e.tag) == "jumpPosition"):
        length = Fraction(jump.get("interpolationLength", "0"))
        if length > duration:
            problems.append(f"interpolationLength {float(length)} s is longer than the block ({float(duration)} s)")
    return problems
