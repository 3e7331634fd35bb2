"""The ``axml`` chunk of a scene: EBUCore-wrapped audioFormatExtended (ITU-R BS.2076-2).

One audioProgramme; one audioContent per stem (dialogue, music, effects) and one
for the bed; a DirectSpeakers bed object that uses only the common definitions
of ITU-R BS.2094 (see :mod:`filmrestore.upmix.adm.scene`); and one Objects
audioObject per object, with its own pack / channel / stream / track formats
(``AP_0003xxxx`` ...) and its audioBlockFormats over time (rtime, duration,
position, gain, width, and jumpPosition with interpolationLength where the plan
says so).
"""

from __future__ import annotations

import math
from fractions import Fraction
from xml.sax.saxutils import quoteattr

from filmrestore.layouts import BED_7_1_4
from filmrestore.upmix.adm.scene import (ALLOCENTRIC_4_7_0, SILENT_UID, AdmObject, AdmScene, pack_format_id,
                                         polar_to_cartesian, track_format_id, track_uid)
from filmrestore.upmix.admtime import TICKS_PER_S, seconds_to_ticks, ticks_time
from filmrestore.upmix.plan import Block

_EBUCORE_NS = "urn:ebu:metadata-schema:ebuCore_2016"
# BS.2076 audioContent <dialogue>: 1 = dialogue, 0 = non-dialogue (kind 1 music, 2 effects), 2 = mixed.
_CONTENT = {"dialogue": ("Dialogue", '<dialogue dialogueContentKind="1">1</dialogue>'),
            "music": ("Music", '<dialogue nonDialogueContentKind="1">0</dialogue>'),
            "effects": ("Effects", '<dialogue nonDialogueContentKind="2">0</dialogue>'),
            "bed": ("Bed", '<dialogue mixedContentKind="0">2</dialogue>')}


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
