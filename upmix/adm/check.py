"""Checking an ADM BWF file against a profile.

:func:`check_adm_file` reads a file back (RIFF or BW64 with ``ds64``) and lists
what breaks a profile: the format, the chunks, the programme, the bed pack, and
every object's blocks (contiguous from 0, positions in range, interpolationLength
within its block).
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

from filmrestore.audio import read_chunks
from filmrestore.upmix.adm.profile import AdmProfile, get_profile
from filmrestore.upmix.adm.scene import COMMON_PACK_FORMATS


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
