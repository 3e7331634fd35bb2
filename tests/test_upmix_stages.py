"""The plan, normalize and render stages: an edited plan re-measures and re-renders, a bad plan fails
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import read_audio, write_audio
from filmrestore.errors import PlanError
from filmrestore.manifest import FileRecord, StageManifest
from filmrestore.tasks.normalize import run_normalize
from filmrestore.tasks.plan import PLAN_FILE, run_plan
from filmrestore.tasks.render import run_render
from filmrestore.upmix.adm import check_adm_file
from filmrestore.layouts import BED_7_1_4

FS = 48_000
N_FRAMES = 6 * FS


@pytest.fixture
def stages(tmp_path: Path) -> dict:
    """Stereo stems on disk (speech-like bursts, noise music, effects panned left) and their manifests."""
    rng = np.random.default_rng(4)
    t_s = np.arange(N_FRAMES) / FS
    bursts = (np.sin(2 * np.pi * 1.5 * t_s) > 0).astype(np.float32)
    dialogue = 0.1 * bursts * rng.standard_normal(N_FRAMES).astype(np.float32)
    stems = {"dialogue": np.vstack([dialogue, dialogue]) * np.float32(np.sqrt(0.5)),
             "music": (0.03 * rng.standard_normal((2, N_FRAMES))).astype(np.float32),
             "effects": (0.05 * rng.standard_normal(N_FRAMES) * np.array([[1.0], [0.1]])).astype(np.float32)}
    records = {}
    for name, x in stems.items():
        path = tmp_path / "work" / "stems" / f"{name}.wav"
        write_audio(path, x, FS)
        records[name] = FileRecord.from_path(path)
    restored_path = tmp_path / "work" / "restored.wav"
    write_audio(restored_path, sum(stems.values()), FS)
    title_dir = tmp_path / "title"
    return {"stems": StageManifest("separate", records),
            "restored": StageManifest("restore", {"restored": FileRecord.from_path(restored_path)}),
            "title_dir": title_dir}


def _run(stages: dict, adm_profile: str = "ebu") -> tuple[StageManifest, StageManifest, StageManifest, list[bool]]:
    """plan -> normalize -> render, as the flow runs them; also whether each stage was reused."""
    title_dir = stages["title_dir"]
    plan, plan_reused = run_plan(stages["stems"], title_dir, adm_profile)
    norm, norm_reused = run_normalize(stages["restored"], stages["stems"], plan, title_dir)
    rendered, render_reused = run_render(stages["stems"], plan, norm, title_dir, adm_profile)
    return plan, norm, rendered, [plan_reused, norm_reused, render_reused]


def test_edited_plan_re_measures_and_re_renders_and_bad_plan_fails_first(stages: dict) -> None:
    title_dir = stages["title_dir"]
    plan, norm, rendered, reused = _run(stages)
    assert reused == [False, False, False]
    assert norm.report["speech"]["segments"] and norm.report["speech"]["n_sub_blocks"] == N_FRAMES // 4800
    assert plan.report["effects_ild_db"][0][0] > 10  # the effects lean left
    assert check_adm_file(title_dir / "adm.wav", "ebu") == []
    doc = json.loads((title_dir / PLAN_FILE).read_text())
    effects_l = next(o for o in doc["objects"] if o["feed"] == "effects.L")
    assert effects_l["blocks"][0]["azimuth_deg"] > 35  # pushed out towards the side by its ILD
    assert _run(stages)[3] == [True, True, True]  # unchanged plan: everything reused

    side = BED_7_1_4.index("M+090")
    before = read_audio(title_dir / "bed_7.1.4.wav")[side]
    dialogue = next(o for o in doc["objects"] if o["feed"] == "dialogue")
    dialogue["blocks"][0]["azimuth_deg"] = 90.0  # an engineer moves the dialogue to the left side
    (title_dir / PLAN_FILE).write_text(json.dumps(doc))
    plan2, norm2, again, reused = _run(stages)
    assert reused == [False, False, False] and again.report["plan"]["edited"]
    after = read_audio(title_dir / "bed_7.1.4.wav")[side]
    assert np.sum(after.astype(np.float64) ** 2) > 3 * np.sum(before.astype(np.float64) ** 2)
    # BS.1770 weighs a side channel +1.5 dB: the bed is measured louder, and the gain follows.
    assert norm2.report["gain_db"] < norm.report["gain_db"] - 0.2
    loudness = again.report["after"]["bed_7.1.4"]["integrated_lufs"]
    assert abs(loudness - norm2.report["spec"]["target_lufs"]) <= 0.5

    outputs = {p: p.stat().st_mtime_ns for p in title_dir.rglob("*.wav")}
    dialogue["blocks"][0]["elevation_deg"] = float("nan")
    (title_dir / PLAN_FILE).write_text(json.dumps(doc))
    with pytest.raises(PlanError, match=r"plan.json: object 'Dialogue': block 0: elevation_deg = nan"):
        _run(stages)
    assert {p: p.stat().st_mtime_ns for p in title_dir.rglob("*.wav")} == outputs
    assert not list(title_dir.rglob("*.part"))


def test_a_deleted_plan_is_made_again(stages: dict) -> None:
    title_dir = stages["title_dir"]
    plan, norm, _, _ = _run(stages)
    (title_dir / PLAN_FILE).unlink()
    plan2, norm2, _, reused = _run(stages)
    assert reused == [False, True, True]  # the same plan again: the measurement and render stand
    assert (title_dir / PLAN_FILE).is_file() and plan2.report["digest"] == plan.report["digest"]


def test_dolby_profile_refuses_a_plan_with_too_many_objects(stages: dict) -> None:
    title_dir = stages["title_dir"]
    _run(stages, adm_profile="dolby")
    assert check_adm_file(title_dir / "adm.wav", "dolby") == []
    doc = json.loads((title_dir / PLAN_FILE).read_text())
    doc["objects"] += [dict(doc["objects"][0], name=f"Copy {i}") for i in range(112)]
    (title_dir / PLAN_FILE).write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="121 objects .* exceed the dolby profile's limit of 118"):
        run_plan(stages["stems"], title_dir, adm_profile="dolby")  # refused before normalize runs


def test_a_render_that_fails_mid_stream_leaves_no_files(stages: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks already handed to the background writer are dropped with the rest: no deliverable, no .part."""
    from filmrestore.errors import AudioFormatError

    title_dir = stages["title_dir"]
    plan, _ = run_plan(stages["stems"], title_dir)
    norm, _ = run_normalize(stages["restored"], stages["stems"], plan, title_dir)
    monkeypatch.setattr("filmrestore.tasks.render.BLOCK_FRAMES", FS)  # 1 s blocks: several written before the end
    music = Path(stages["stems"].file("music").path)
    write_audio(music, read_audio(music)[:, :N_FRAMES - 2 * FS], FS)  # 2 s short: fails at block 5 of 6
    with pytest.raises(AudioFormatError, match="differ in length"):
        run_render(stages["stems"], plan, norm, title_dir)
    assert not list(title_dir.rglob("*.part"))
    assert not list(title_dir.rglob("*.wav"))


def _restore_multichannel(tmp_path: Path, layout: str) -> tuple[np.ndarray, Path]:
    """A 10 s soundtrack in ``layout`` (dialogue in the centre, music left/right, ambience in the
    surrounds, booms in the LFE) run through the whole pipeline: its channels and the title folder."""
    import scipy.signal
    from typer.testing import CliRunner

    from filmrestore.cli import app
    from filmrestore.layouts import get_layout
    from filmrestore.synth import make_film_mix

    source_layout = get_layout(layout)
    n = 10 * FS
    rng = np.random.default_rng(11)
    film = make_film_mix(n / FS, rng)
    ambience = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal((4, n))).astype(np.float32) * 0.01
    booms = np.sin(2 * np.pi * 40 * np.arange(n) / FS) * (np.sin(2 * np.pi * 0.4 * np.arange(n) / FS) > 0.6)
    by_label = {"M+030": film["music"][0] + ambience[0] * 2, "M-030": np.roll(film["music"][0], 4800) + ambience[1] * 2,
                "M+000": film["dialogue"][0] + 0.3 * film["effects"][0], "LFE1": 0.2 * booms,
                "M+110": ambience[2], "M-110": ambience[3], "M+090": ambience[2], "M-090": ambience[3],
                "M+135": 0.7 * ambience[0] + 0.3 * ambience[2], "M-135": 0.7 * ambience[1] + 0.3 * ambience[3]}
    x = np.vstack([by_label[label] for label in source_layout.labels]).astype(np.float32)
    clip = tmp_path / "reel.wav"
    write_audio(clip, x, FS, channel_mask=source_layout.channel_mask)
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(tmp_path / "out"), "--separator", "dsp",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return x, tmp_path / "out" / "reel"


@pytest.mark.integration
@pytest.mark.parametrize("layout", ["5.1(side)", "0+7+0"])
def test_a_multichannel_source_keeps_its_channels_in_place(tmp_path: Path, layout: str) -> None:
    """A 5.1 (7.1) soundtrack: dialogue in the centre, music left/right, ambience in the surrounds,
    booms in the LFE. After the whole pipeline each source channel is in the bed speaker at its
    position (correlation >= 0.8), the missing positions are synthesised, and the report says
    which is which; the stereo fold-down of the bed still matches the source's."""
    from filmrestore.layouts import get_layout

    source_layout = get_layout(layout)
    x, title = _restore_multichannel(tmp_path, layout)
    bed = read_audio(title / "bed_7.1.4.wav")
    qc = json.loads((title / "qc.json").read_text())
    plays = {row["label"]: row["plays"] for row in qc["bed_channels"]}
    expected_at = {"M+110": "M+090", "M-110": "M-090"}  # 5.1 surrounds play from the side surrounds
    for c, speaker in enumerate(source_layout.speakers):
        at = expected_at.get(speaker.label, speaker.label)
        corr = np.corrcoef(x[c, FS:-FS], bed[BED_7_1_4.index(at), FS:-FS])[0, 1]
        assert corr >= 0.8, (speaker.label, at, corr)
        if at not in ("M+030", "M-030"):
            assert plays[at] == f"kept: source {speaker.wave_name}", (at, plays[at])
    for height in ("U+045", "U-045", "U+135", "U-135"):
        assert plays[height].startswith("synthesised")
        assert np.sqrt(np.mean(bed[BED_7_1_4.index(height)] ** 2)) > 1e-4  # filled, not silent
    if layout == "5.1(side)":
        assert plays["M+135"].startswith("synthesised")
    assert qc["foldown_check"]["pass"], qc["foldown_check"]
    assert "7.1.4 bed channels" in (title / "qc.md").read_text()
    assert check_adm_file(title / "adm.wav", "ebu") == []


@pytest.mark.ear
def test_ear_renders_a_multichannel_title_back(tmp_path: Path) -> None:
    """The ADM bed carries the channels a 5.1 source keeps in place (the centre's music and
    effects, the fronts' dialogue), so the EBU ADM renderer gives the 7.1.4 bed back."""
    import ear_env

    _, title = _restore_multichannel(tmp_path, "5.1(side)")
    ours = read_audio(title / "bed_7.1.4.wav").astype(np.float64)
    theirs = ear_env.render_in_wav_order(title / "adm.wav", tmp_path / "ear.wav").astype(np.float64)
    with np.errstate(divide="ignore"):
        diff_db = 10 * np.log10(np.sum(theirs**2, axis=1) / np.sum(ours**2, axis=1))
    assert np.max(np.abs(diff_db)) < 1.0, dict(zip(BED_7_1_4.labels, np.round(diff_db, 2)))
    assert np.max(np.abs(theirs - ours)) < 1e-4
