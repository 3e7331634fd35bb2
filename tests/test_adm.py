"""ADM BWF export with a bed and objects: chunks, profiles, adm-check, > 4 GiB, and the EBU ADM renderer as oracle."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from filmrestore.audio import partial_path, read_chunks
from filmrestore.errors import PlanError
from filmrestore.upmix.adm import (AdmSceneWriter, check_adm_file, get_profile, polar_to_cartesian,
                                   read_pcm24_frames, scene_for)
from filmrestore.upmix.admtime import adm_time
from filmrestore.layouts import BED_7_1_4, LAYOUTS
from filmrestore.upmix.plan import Block, ImageAnalysis, ObjectPlan, make_plan
from filmrestore.upmix.render import SceneRenderer

FS = 48_000


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _stems(n_frames: int, seed: int = 3) -> dict[str, np.ndarray]:
    """Stereo noise stems; the effects sweep from hard left to hard right (a moving source)."""
    rng = np.random.default_rng(seed)
    pan = np.linspace(0.0, 1.0, n_frames)
    effects = 0.1 * rng.standard_normal(n_frames) * np.vstack([np.cos(pan * np.pi / 2), np.sin(pan * np.pi / 2)])
    return {"dialogue": (0.05 * rng.standard_normal((2, n_frames))).astype(np.float32),
            "music": (0.05 * rng.standard_normal((2, n_frames))).astype(np.float32),
            "effects": effects.astype(np.float32)}


def _plan(stems: dict[str, np.ndarray]):
    n_frames = next(iter(stems.values())).shape[1]
    analysis = ImageAnalysis(FS)
    analysis.process(stems["effects"])
    return make_plan(FS, n_frames, effects_ild_db=analysis.ild_db())


def _render_and_write(path: Path, stems: dict[str, np.ndarray], plan, profile: str = "ebu") -> np.ndarray:
    """Render in two blocks, write the ADM file; returns our 7.1.4 mix."""
    scene = scene_for(plan, get_profile(profile))
    renderer = SceneRenderer(FS, 2, plan)
    mixes = []
    with AdmSceneWriter(path, scene, "Feature & <test>") as writer:
        for part in (slice(0, 70_001), slice(70_001, None)):
            rendered = renderer.process({k: v[:, part] for k, v in stems.items()})
            writer.write(rendered.bed, rendered.feeds)
            mixes.append(rendered.mix)
        writer.close()
    return np.concatenate(mixes, axis=1)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("adm")
    stems = _stems(3 * FS)
    plan = _plan(stems)
    mixes = {p: _render_and_write(folder / f"{p}.wav", stems, plan, p) for p in ("ebu", "dolby")}
    return {"folder": folder, "plan": plan, "mix": mixes["ebu"], "stems": stems}


def test_chna_ties_every_track_to_a_declared_uid(written: dict) -> None:
    chunks = read_chunks(written["folder"] / "ebu.wav")
    chna, root = chunks[b"chna"], ET.fromstring(chunks[b"axml"])
    n_tracks, n_uids = struct.unpack("<HH", chna[:4])
    plan = written["plan"]
    assert n_tracks == n_uids == 9 + len(plan.objects)  # 8 ambience + LFE1 bed tracks, one per object
    rows = [struct.unpack("<H12s14s11sx", chna[4 + 40 * i:44 + 40 * i]) for i in range(n_tracks)]
    assert [r[0] for r in rows] == list(range(1, n_tracks + 1))
    assert {r[3].decode() for r in rows[:9]} == {"AP_00010017"}
    assert all(r[3].decode().startswith("AP_0003") for r in rows[9:])
    declared = {e.get("UID") for e in root.iter() if _local(e.tag) == "audioTrackUID"}
    assert {r[1].decode() for r in rows} == declared
    data, rate = sf.read(written["folder"] / "ebu.wav", dtype="float32", always_2d=True)
    assert rate == FS and data.shape == (3 * FS, n_tracks)


def test_axml_has_one_programme_contents_per_stem_and_objects_over_time(written: dict) -> None:
    root = ET.fromstring(read_chunks(written["folder"] / "ebu.wav")[b"axml"])
    by_tag: dict[str, list] = {}
    for e in root.iter():
        by_tag.setdefault(_local(e.tag), []).append(e)
    assert len(by_tag["audioProgramme"]) == 1
    assert by_tag["audioProgramme"][0].get("audioProgrammeName") == "Feature & <test>"
    assert [c.get("audioContentName") for c in by_tag["audioContent"]] == ["Dialogue", "Music", "Effects", "Bed"]
    bed = next(o for o in by_tag["audioObject"] if o.get("audioObjectID") == "AO_1001")
    refs = [e.text for e in bed if _local(e.tag) == "audioTrackUIDRef"]
    assert len(refs) == 12 and refs.count("ATU_00000000") == 3  # fronts and centre are objects, not bed
    channels = [c for c in by_tag["audioChannelFormat"] if c.get("typeDefinition") == "Objects"]
    assert len(channels) == len(written["plan"].objects)
    effects_l = next(c for c in channels if c.get("audioChannelFormatName") == "Effects L")
    blocks = [b for b in effects_l if _local(b.tag) == "audioBlockFormat"]
    assert len(blocks) > 3 and blocks[0].get("rtime") == "00:00:00.00000"
    azimuths = [float(next(p.text for p in b if p.get("coordinate") == "azimuth")) for b in blocks]
    assert azimuths[0] > azimuths[-1]  # it moves right with the sweep
    assert any(_local(e.tag) == "jumpPosition" for b in blocks for e in b)
    assert all(any(_local(e.tag) == name for e in b) for b in blocks for name in ("gain", "width"))


def test_profiles_are_checked(written: dict) -> None:
    ebu, dolby = written["folder"] / "ebu.wav", written["folder"] / "dolby.wav"
    assert check_adm_file(ebu, "ebu") == []
    assert check_adm_file(dolby, "dolby") == []
    problems = check_adm_file(ebu, "dolby")
    assert any("AP_00010017 (4+7+0) is larger" in p for p in problems)
    assert any("polar position" in p for p in problems)
    root = ET.fromstring(read_chunks(dolby)[b"axml"])
    names = [c.get("audioChannelFormatName") for c in root.iter() if _local(c.tag) == "audioChannelFormat"]
    assert {"Ambience U+045", "Ambience U-135"} <= set(names)  # heights leave the 7.1 bed as objects


def test_adm_check_reports_broken_timing_and_positions(tmp_path: Path, written: dict) -> None:
    src = written["folder"] / "ebu.wav"
    raw = src.read_bytes()
    axml = read_chunks(src)[b"axml"]
    broken = axml.replace(b'rtime="00:00:00.50000"', b'rtime="00:00:00.60000"', 1)
    broken = broken.replace(b'<position coordinate="elevation">0.000</position>',
                            b'<position coordinate="elevation">  NaN</position>', 1)
    assert len(broken) == len(axml)
    path = tmp_path / "broken.wav"
    path.write_bytes(raw.replace(axml, broken))
    problems = check_adm_file(path, "ebu")
    assert any("expected 00.50000" in p or "expected 0.50000 s" in p for p in problems), problems
    assert any("position elevation = '  NaN' is not in [-90, 90]" in p for p in problems), problems
    result = CliRunner().invoke(__import__("filmrestore.cli", fromlist=["app"]).app,
                                ["adm-check", str(path)])
    assert result.exit_code == 1 and "expected 0.50000 s" in result.output
    ok = CliRunner().invoke(__import__("filmrestore.cli", fromlist=["app"]).app,
                            ["adm-check", str(written["folder"] / "dolby.wav"), "--profile", "dolby"])
    assert ok.exit_code == 0, ok.output
    as_json = CliRunner().invoke(__import__("filmrestore.cli", fromlist=["app"]).app,
                                 ["adm-check", str(path), "--json"])
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 1 and report["conforms"] is False and report["problems"] == problems


def test_a_plan_that_breaks_the_profile_fails_before_writing(tmp_path: Path) -> None:
    plan = make_plan(FS, FS)
    many = replace(plan, objects=tuple(replace(plan.objects[0], name=f"o{i}") for i in range(116)))
    with pytest.raises(PlanError, match="120 objects .* exceed the dolby profile's limit of 118"):
        scene_for(many, get_profile("dolby"))
    scene_for(many, get_profile("ebu"))  # no object limit there
    bad = replace(plan, objects=(ObjectPlan("Lost", "dialogue", (Block(0.0, 1.0, 0.0, float("nan")),)),))
    with pytest.raises(PlanError, match="elevation_deg = nan"):
        scene_for(bad, get_profile("ebu"))
    assert not list(tmp_path.iterdir())


def test_writer_removes_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "adm.wav"
    scene = scene_for(make_plan(FS, FS), get_profile("ebu"))
    with pytest.raises(RuntimeError):
        with AdmSceneWriter(path, scene, "t") as writer:
            writer.write_tracks(np.zeros((scene.n_tracks, 100), np.float32))
            raise RuntimeError("render failed")
    assert not path.exists() and not partial_path(path).exists()


def test_times_and_cartesian_conversion() -> None:
    assert adm_time(Fraction(1, FS)) == "00:00:00.00003"  # rounded up: covers the sample
    assert adm_time(Fraction(7322, 1)) == "02:02:02.00000"
    assert polar_to_cartesian(0, 0) == (0.0, 1.0, 0.0)
    assert polar_to_cartesian(30, 0) == (-1.0, 1.0, 0.0) and polar_to_cartesian(-110, 0) == (1.0, -1.0, 0.0)
    x, y, z = polar_to_cartesian(0, 90)
    assert (abs(x), abs(y), z) == (0.0, 0.0, 1.0)


@pytest.mark.slow
def test_file_past_4_gib_is_bw64_and_reads_back(tmp_path: Path) -> None:
    """Stream > 4 GiB of PCM (pre-encoded silence between two known blocks) and read both ends back."""
    need = 4.6 * 2**30
    if shutil.disk_usage(tmp_path).free < need + 2**30:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free in {tmp_path}, has {shutil.disk_usage(tmp_path).free / 2**30:.1f}")
    n_tracks = 14
    scene = scene_for(make_plan(FS, FS), get_profile("ebu"))
    assert scene.n_tracks == n_tracks
    rng = np.random.default_rng(1)
    head, tail = (rng.uniform(-0.5, 0.5, (n_tracks, 4800)).astype(np.float32) for _ in range(2))
    path = tmp_path / "big.wav"
    with AdmSceneWriter(path, scene, "big") as writer:
        writer.write_tracks(head)
        silence = bytes(n_tracks * 3 * 2**20)  # 1 Mi frames of 24-bit zeros, encoded once
        while writer.writer.n_frames * n_tracks * 3 < 4.2 * 2**30:
            writer.writer.write_encoded(silence)
        writer.write_tracks(tail)
        writer.close()
    n_frames = writer.writer.n_frames
    with open(path, "rb") as f:
        assert f.read(4) == b"BW64"
    chunks = read_chunks(path)
    assert b"axml" in chunks and b"chna" in chunks  # found after a > 4 GiB data chunk via ds64
    # libsndfile does not know the BW64 magic, so read back with our reader (ds64 sizes).
    offset, size = struct.unpack("<QQ", chunks[b"data@"])
    assert size == n_frames * n_tracks * 3 > 2**32
    np.testing.assert_allclose(read_pcm24_frames(path, 0, 4800), head, atol=2**-22)
    np.testing.assert_allclose(read_pcm24_frames(path, n_frames - 4800, 4800), tail, atol=2**-22)
    path.unlink()


# ----------------------------------------------------------------------------- the EBU ADM renderer as oracle

def _per_channel_db(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.sum(np.asarray(x, dtype=np.float64) ** 2, axis=1))


@pytest.mark.ear
@pytest.mark.parametrize("moving", [False, True], ids=["static", "moving"])
def test_ear_renders_our_bed_back(tmp_path: Path, moving: bool) -> None:
    import ear_env

    stems = _stems(3 * FS, seed=9)
    plan = _plan(stems) if moving else make_plan(FS, 3 * FS)
    assert any(not o.is_static for o in plan.objects) == moving
    ours = _render_and_write(tmp_path / "adm.wav", stems, plan)
    theirs = ear_env.render_in_wav_order(tmp_path / "adm.wav", tmp_path / "out.wav")
    assert theirs.shape == ours.shape
    diff_db = _per_channel_db(theirs) - _per_channel_db(ours)
    for label, d in zip(BED_7_1_4.labels, diff_db):
        assert abs(d) < 1.0, (label, d)
    assert np.max(np.abs(theirs - ours)) < 1e-4  # in fact sample for sample


@pytest.mark.ear
def test_ear_renders_the_dolby_file_of_a_static_plan_back(tmp_path: Path) -> None:
    import ear_env

    stems = _stems(2 * FS, seed=4)
    ours = _render_and_write(tmp_path / "adm.wav", stems, make_plan(FS, 2 * FS), "dolby")
    theirs = ear_env.render_in_wav_order(tmp_path / "adm.wav", tmp_path / "out.wav")
    diff_db = _per_channel_db(theirs) - _per_channel_db(ours)
    assert np.max(np.abs(diff_db)) < 1.0, dict(zip(BED_7_1_4.labels, diff_db))


_EAR_GAINS = """
import sys, json, numpy as np
from ear.core import bs2051, point_source
layout = bs2051.get_layout(sys.argv[1]).without_lfe
psp = point_source.configure(layout)
np.save(sys.argv[3], np.array([psp.handle(d) for d in np.load(sys.argv[2])]))
print(json.dumps(layout.channel_names))
"""


@pytest.mark.ear
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_point_source_panner_matches_ear(tmp_path: Path, name: str) -> None:
    import ear_env

    from filmrestore.upmix.panner import cart, panner_for

    if ear_env.ear_render_path() is None:
        pytest.skip(f"EBU ADM renderer unavailable: {ear_env.last_error}")
    rng = np.random.default_rng(11)
    directions = cart(rng.uniform(-180, 180, 400), np.degrees(np.arcsin(rng.uniform(-1, 1, 400))))
    np.save(tmp_path / "dirs.npy", directions)
    script = tmp_path / "ear_gains.py"
    script.write_text(_EAR_GAINS)
    done = subprocess.run([str(ear_env.ear_venv_dir() / "bin" / "python"), str(script), name,
                           str(tmp_path / "dirs.npy"), str(tmp_path / "g.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ear_names = json.loads(done.stdout.strip().splitlines()[-1])
    panner = panner_for(name)
    ours = np.array([panner.gains(d) for d in directions])
    theirs = np.load(tmp_path / "g.npy")[:, [ear_names.index(s.label) for s in panner.layout.non_lfe]]
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


_EAR_EXTENT_GAINS = """
import sys, json, numpy as np
from ear.core import bs2051, point_source
from ear.core.geom import cart
from ear.core.objectbased.gain_calc import PolarExtentHandler
layout = bs2051.get_layout(sys.argv[1]).without_lfe
handler = PolarExtentHandler(point_source.configure(layout))
cases = np.load(sys.argv[2])
np.save(sys.argv[3], np.array([handler.handle(cart(az, el, 1.0), w, 0.0, 0.0) for az, el, w in cases]))
print(json.dumps(layout.channel_names))
"""


@pytest.mark.ear
def test_object_width_pans_as_ear_does(tmp_path: Path) -> None:
    """The polar extent panner (object width) gives ear's gains: widths from a point to a full
    circle, at positions all round, on the mid and upper layers and near the poles."""
    import ear_env

    from filmrestore.upmix.extent import extent_gains

    if ear_env.ear_render_path() is None:
        pytest.skip(f"EBU ADM renderer unavailable: {ear_env.last_error}")
    rng = np.random.default_rng(5)
    cases = np.column_stack([rng.uniform(-180, 180, 60), rng.uniform(-10, 89, 60),
                             rng.choice([0.0, 3.0, 10.0, 25.0, 60.0, 150.0, 300.0, 360.0], 60)])
    cases = np.round(cases, 3)  # the directions the gains are cached at
    np.save(tmp_path / "cases.npy", cases)
    script = tmp_path / "ear_extent.py"
    script.write_text(_EAR_EXTENT_GAINS)
    done = subprocess.run([str(ear_env.ear_venv_dir() / "bin" / "python"), str(script), "4+7+0",
                           str(tmp_path / "cases.npy"), str(tmp_path / "g.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ear_names = json.loads(done.stdout.strip().splitlines()[-1])
    non_lfe = [i for i, s in enumerate(BED_7_1_4.speakers) if not s.is_lfe]
    theirs = np.load(tmp_path / "g.npy")[:, [ear_names.index(BED_7_1_4.speakers[i].label) for i in non_lfe]]
    ours = np.array([extent_gains(BED_7_1_4, az, el, w)[non_lfe] for az, el, w in cases])
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert len({tuple(np.round(g, 6)) for g in ours}) > 50  # the widths really differ


@pytest.mark.ear
def test_ear_renders_wide_objects_back(tmp_path: Path) -> None:
    import ear_env

    stems = _stems(3 * FS, seed=2)
    plan = make_plan(FS, 3 * FS)
    wide = {"Dialogue": 30.0, "Music L": 90.0, "Music R": 5.0}
    objects = tuple(replace(o, blocks=tuple(replace(b, width_deg=wide.get(o.name, 0.0)) for b in o.blocks))
                    for o in plan.objects)
    plan = replace(plan, objects=objects)
    ours = _render_and_write(tmp_path / "adm.wav", stems, plan)
    point = _render_and_write(tmp_path / "point.wav", stems, make_plan(FS, 3 * FS))
    assert np.max(np.abs(ours - point)) > 1e-3  # the widths change the render
    theirs = ear_env.render_in_wav_order(tmp_path / "adm.wav", tmp_path / "out.wav")
    diff_db = _per_channel_db(theirs) - _per_channel_db(ours)
    assert np.max(np.abs(diff_db)) < 1.0, dict(zip(BED_7_1_4.labels, diff_db))
    assert np.max(np.abs(theirs - ours)) < 1e-4
    with pytest.raises(PlanError, match="width"):
        scene_for(plan, get_profile("dolby"))
