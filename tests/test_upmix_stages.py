"""The normalize and render stages with a plan: edited plans re-render, bad plans fail before writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import read_audio, write_audio
from filmrestore.errors import PlanError
from filmrestore.manifest import FileRecord, StageManifest
from filmrestore.tasks.normalize import run_normalize
from filmrestore.tasks.render import PLAN_FILE, run_render
from filmrestore.upmix.adm import check_adm_file
from filmrestore.upmix.layouts import BED_7_1_4

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
    return {"stems": StageManifest("separate", records).to_dict(),
            "restored": StageManifest("restore", {"restored": FileRecord.from_path(restored_path)}).to_dict(),
            "title_dir": title_dir}


def test_edited_plan_re_renders_and_bad_plan_fails_first(stages: dict) -> None:
    title_dir = stages["title_dir"]
    norm, _ = run_normalize(stages["restored"], stages["stems"], title_dir)
    assert norm.report["speech"]["segments"] and norm.report["speech"]["n_sub_blocks"] == N_FRAMES // 4800
    assert norm.report["effects_ild_db"][0][0] > 10  # the effects lean left
    rendered, reused = run_render(stages["stems"], norm.to_dict(), title_dir)
    assert not reused and check_adm_file(title_dir / "adm.wav", "ebu") == []
    plan = json.loads((title_dir / PLAN_FILE).read_text())
    effects_l = next(o for o in plan["objects"] if o["feed"] == "effects.L")
    assert effects_l["blocks"][0]["azimuth_deg"] > 35  # pushed out towards the side by its ILD
    assert run_render(stages["stems"], norm.to_dict(), title_dir)[1]  # unchanged plan: reused

    side = BED_7_1_4.index("M+090")
    before = read_audio(title_dir / "bed_7.1.4.wav")[side]
    dialogue = next(o for o in plan["objects"] if o["feed"] == "dialogue")
    dialogue["blocks"][0]["azimuth_deg"] = 90.0  # an engineer moves the dialogue to the left side
    (title_dir / PLAN_FILE).write_text(json.dumps(plan))
    again, reused = run_render(stages["stems"], norm.to_dict(), title_dir)
    assert not reused and again.report["plan"]["edited"]
    after = read_audio(title_dir / "bed_7.1.4.wav")[side]
    assert np.sum(after.astype(np.float64) ** 2) > 3 * np.sum(before.astype(np.float64) ** 2)

    outputs = {p: p.stat().st_mtime_ns for p in title_dir.rglob("*.wav")}
    dialogue["blocks"][0]["elevation_deg"] = float("nan")
    (title_dir / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.raises(PlanError, match=r"plan.json: object 'Dialogue': block 0: elevation_deg = nan"):
        run_render(stages["stems"], norm.to_dict(), title_dir)
    assert {p: p.stat().st_mtime_ns for p in title_dir.rglob("*.wav")} == outputs
    assert not list(title_dir.rglob("*.part"))


def test_dolby_profile_refuses_a_plan_with_too_many_objects(stages: dict) -> None:
    title_dir = stages["title_dir"]
    norm, _ = run_normalize(stages["restored"], stages["stems"], title_dir)
    run_render(stages["stems"], norm.to_dict(), title_dir, adm_profile="dolby")
    assert check_adm_file(title_dir / "adm.wav", "dolby") == []
    plan = json.loads((title_dir / PLAN_FILE).read_text())
    plan["objects"] += [dict(plan["objects"][0], name=f"Copy {i}") for i in range(112)]
    (title_dir / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.raises(PlanError, match="121 objects .* exceed the dolby profile's limit of 118"):
        run_render(stages["stems"], norm.to_dict(), title_dir, adm_profile="dolby")


def test_a_render_that_fails_mid_stream_leaves_no_files(stages: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks already handed to the background writer are dropped with the rest: no deliverable, no .part."""
    from filmrestore.errors import AudioFormatError

    title_dir = stages["title_dir"]
    norm, _ = run_normalize(stages["restored"], stages["stems"], title_dir)
    monkeypatch.setattr("filmrestore.tasks.render.BLOCK_FRAMES", FS)  # 1 s blocks: several written before the end
    music = Path(StageManifest.from_dict(stages["stems"]).file("music").path)
    write_audio(music, read_audio(music)[:, :N_FRAMES - 2 * FS], FS)  # 2 s short: fails at block 5 of 6
    with pytest.raises(AudioFormatError, match="differ in length"):
        run_render(stages["stems"], norm.to_dict(), title_dir)
    assert not list(title_dir.rglob("*.part"))
    assert not list(title_dir.rglob("*.wav"))
