"""ADM BWF export of the 7.1.4 bed: chunk contents, and the EBU ADM renderer as oracle."""

from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from filmrestore.audio import partial_path
from filmrestore.upmix.adm import adm_time, bed_adm_chunks, open_adm_writer, write_adm_bwf
from filmrestore.upmix.layouts import BED_7_1_4, get_layout

FS = 48_000
# BS.2094 common track formats, in the bed's WAV order (FL FR FC LFE BL BR SL SR TFL TFR TBL TBR).
EXPECTED_TRACK_FORMATS = [
    "AT_00010001_01", "AT_00010002_01", "AT_00010003_01", "AT_00010004_01",
    "AT_0001001c_01", "AT_0001001d_01", "AT_0001000a_01", "AT_0001000b_01",
    "AT_00010022_01", "AT_00010023_01", "AT_0001001e_01", "AT_0001001f_01",
]


def _known_bed(n_frames: int) -> np.ndarray:
    """Noise with a different level in every channel (0, -1.5, ... -16.5 dB)."""
    gains = 10 ** (-1.5 * np.arange(12) / 20)
    noise = np.random.default_rng(3).standard_normal((12, n_frames))
    return (0.1 * gains[:, None] * noise).astype(np.float32)


def _riff_chunks(path: Path) -> dict[bytes, bytes]:
    raw = path.read_bytes()
    chunks, pos = {}, 12
    while pos + 8 <= len(raw):
        tag, size = struct.unpack("<4sI", raw[pos:pos + 8])
        chunks[tag] = raw[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    return chunks


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _write(path: Path, bed: np.ndarray) -> None:
    write_adm_bwf(path, [bed[:, :7000], bed[:, 7000:]], BED_7_1_4, FS, "Feature & <test>")


def test_chna_maps_every_track(tmp_path: Path) -> None:
    path = tmp_path / "adm.wav"
    _write(path, _known_bed(FS // 2))
    chna = _riff_chunks(path)[b"chna"]
    n_tracks, n_uids = struct.unpack("<HH", chna[:4])
    assert (n_tracks, n_uids) == (12, 12) and len(chna) == 4 + 40 * 12
    rows = [struct.unpack("<H12s14s11sx", chna[4 + 40 * i:44 + 40 * i]) for i in range(12)]
    assert [r[0] for r in rows] == list(range(1, 13))
    assert [r[1].decode() for r in rows] == [f"ATU_{i:08X}" for i in range(1, 13)]
    assert [r[2].decode() for r in rows] == EXPECTED_TRACK_FORMATS
    assert {r[3].decode() for r in rows} == {"AP_00010017"}


def test_axml_references_the_common_pack(tmp_path: Path) -> None:
    path = tmp_path / "adm.wav"
    bed = _known_bed(FS // 2)
    _write(path, bed)
    root = ET.fromstring(_riff_chunks(path)[b"axml"])
    elements = {_local(e.tag): e for e in root.iter()}
    programme, obj = elements["audioProgramme"], elements["audioObject"]
    assert programme.get("audioProgrammeName") == "Feature & <test>"
    assert programme.get("end") == "00:00:00.50000" and obj.get("duration") == "00:00:00.50000"
    refs = {_local(e.tag): [] for e in obj}
    for e in obj:
        refs[_local(e.tag)].append(e.text)
    assert refs["audioPackFormatIDRef"] == ["AP_00010017"]
    assert refs["audioTrackUIDRef"] == [f"ATU_{i:08X}" for i in range(1, 13)]
    uids = [e for e in root.iter() if _local(e.tag) == "audioTrackUID"]
    assert [u[0].text for u in uids] == EXPECTED_TRACK_FORMATS
    # The samples round-trip at 24-bit in WAV order, with the 7.1.4 channel mask.
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == FS and np.max(np.abs(data.T - bed)) < 2.0**-22
    fmt = _riff_chunks(path)[b"fmt "]
    assert struct.unpack("<HH", fmt[:4]) == (0xFFFE, 12) and struct.unpack("<I", fmt[20:24])[0] == 0x2D63F


def test_chunks_for_other_layouts_and_times() -> None:
    chna, axml = bed_adm_chunks(get_layout("5.1"), 480, FS, "t")
    assert struct.unpack("<HH", chna[:4]) == (6, 6) and b"AP_00010003" in axml
    assert adm_time(Fraction(1, FS)) == "00:00:00.00003"  # rounded up: covers the sample
    assert adm_time(Fraction(7322, 1)) == "02:02:02.00000"


def test_writer_removes_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "adm.wav"
    with pytest.raises(RuntimeError):
        with open_adm_writer(path, BED_7_1_4, FS, "t") as writer:
            writer.write(np.zeros((12, 100), np.float32))
            raise RuntimeError("render failed")
    assert not path.exists() and not partial_path(path).exists()


@pytest.mark.ear
def test_ear_renders_our_bed_back(tmp_path: Path) -> None:
    import ear_env

    path = tmp_path / "adm.wav"
    bed = _known_bed(FS // 2)
    _write(path, bed)
    rendered = ear_env.render_in_wav_order(path, tmp_path / "out.wav")
    assert rendered.shape == bed.shape
    ours_db = 10 * np.log10(np.sum(bed.astype(np.float64) ** 2, axis=1))
    ear_db = 10 * np.log10(np.sum(rendered.astype(np.float64) ** 2, axis=1))
    for label, ours, theirs in zip(BED_7_1_4.labels, ours_db, ear_db):
        assert abs(theirs - ours) < 1.0, (label, theirs, ours)
