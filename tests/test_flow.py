"""End to end: the restore_title flow on a generated clip, with real ffmpeg and a real Prefect server."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.signal
import pytest
import soundfile as sf

from filmrestore.audio import read_audio
from filmrestore.flows.restore_title import run_restore_title
from filmrestore.resume import MANIFEST_DIR
from filmrestore.titles import RUN_RECORD, file_stamps
from filmrestore.layouts import BED_7_1_4

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

STAGES = ("extract", "restore", "separate", "plan", "normalize", "render")


@pytest.fixture(scope="module")
def restored(demo_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("out")
    return run_restore_title(demo_clip, out, "clip", preset="ebu-r128", device="cpu")


def _mtimes(title_dir: Path) -> dict[str, int]:
    """Modification times of every stage output (the QC report, qc.* and qc/, is rewritten each flow run,
    and so are the title lock, .lock, with the running pid, and the finished run's record)."""
    return {str(p.relative_to(title_dir)): p.stat().st_mtime_ns for p in title_dir.rglob("*") if p.is_file()
            and not p.name.startswith("qc.") and p.relative_to(title_dir).parts[0] != "qc" and p.name != ".lock"
            and p.relative_to(title_dir).as_posix() != RUN_RECORD}


def _wave_format(path: Path) -> tuple[int, int, int]:
    """(channels, bits per sample, channel mask) from the fmt chunk."""
    raw = path.read_bytes()[:512]
    fmt = raw.index(b"fmt ") + 8
    channels, bits, mask = struct.unpack("<H", raw[fmt + 2 : fmt + 4])[0], struct.unpack(
        "<H", raw[fmt + 14 : fmt + 16])[0], struct.unpack("<I", raw[fmt + 20 : fmt + 24])[0]
    return channels, bits, mask


def test_deliverables_are_complete(restored: dict) -> None:
    title_dir = Path(restored["title_dir"])
    for name in ("bed_7.1.4.wav", "adm.wav", "stems/dialogue.wav", "stems/music.wav", "stems/effects.wav",
                 "stems/me.wav", "foldown/stereo.wav", "foldown/5.1.wav", "qc.json", "qc.md"):
        assert (title_dir / name).is_file(), name
    assert _wave_format(title_dir / "bed_7.1.4.wav") == (12, 24, 0x2D63F)
    assert not list(title_dir.rglob("*.part"))


def test_bed_is_in_sync_and_as_long_as_the_picture(restored: dict, demo_clip: Path) -> None:
    title_dir = Path(restored["title_dir"])
    bed = sf.info(str(title_dir / "bed_7.1.4.wav"))
    assert bed.samplerate == 48_000
    assert abs(bed.frames / 48_000 - 12.0) < 0.01
    assert sf.info(str(title_dir / "stems/dialogue.wav")).frames == bed.frames


def test_centre_carries_the_dialogue_stem(restored: dict) -> None:
    title_dir = Path(restored["title_dir"])
    bed = read_audio(title_dir / "bed_7.1.4.wav").astype(np.float64)
    dialogue = read_audio(title_dir / "stems/dialogue.wav")[0].astype(np.float64)
    # The centre path is phase-matched to the fronts by an all-pass, so compare with a
    # phase-blind measure: magnitude-squared coherence over the speech band, and level.
    freqs, centre_coh = scipy.signal.coherence(bed[2], dialogue, fs=48_000, nperseg=4096)
    _, front_coh = scipy.signal.coherence(bed[0], dialogue, fs=48_000, nperseg=4096)
    band = (freqs >= 200) & (freqs <= 4000)
    assert np.mean(centre_coh[band]) > 0.95
    assert np.mean(front_coh[band]) < np.mean(centre_coh[band]) - 0.2
    assert abs(10 * np.log10(np.sum(bed[2] ** 2) / np.sum(dialogue**2))) < 0.5


def test_stems_sum_to_the_normalised_mix(restored: dict) -> None:
    title_dir = Path(restored["title_dir"])
    qc = json.loads((title_dir / "qc.json").read_text())
    gain = 10 ** (qc["loudness"]["gain_db"] / 20)
    stems = {k: read_audio(title_dir / f"stems/{k}.wav") for k in ("dialogue", "music", "effects", "me")}
    mix = read_audio(title_dir / "work/restored.wav") * gain
    assert np.max(np.abs(stems["dialogue"] + stems["music"] + stems["effects"] - mix)) < 1e-4 * max(gain, 1) + 3e-7
    assert np.max(np.abs(stems["music"] + stems["effects"] - stems["me"])) < 3e-7


def test_qc_reports_loudness_and_passes_the_preset(restored: dict) -> None:
    qc = json.loads((Path(restored["title_dir"]) / "qc.json").read_text())
    assert set(STAGES) <= set(qc["stages"])
    for stage in STAGES:
        assert qc["stages"][stage]["elapsed_s"] is not None
    before, after = qc["loudness"]["before"], qc["loudness"]["after"]
    assert {"dialogue", "music", "effects", "mix", "bed_7.1.4"} <= set(before)
    bed_after = after["bed_7.1.4"]
    assert abs(bed_after["integrated_lufs"] - (-23.0)) <= 1.0
    assert bed_after["true_peak_dbtp"] <= -1.0
    assert qc["verdict"]["pass"] is True
    assert qc["foldown_check"]["max_abs_diff_db"] <= 1.0


def test_qc_says_what_restoration_found_and_did(restored: dict) -> None:
    """The demo's soundtrack carries 50 Hz hum at -42 dBFS, white hiss at -50 dBFS and clicks."""
    title_dir = Path(restored["title_dir"])
    report = json.loads((title_dir / "qc.json").read_text())["stages"]["restore"]["report"]
    assert {"dehum", "dehiss"} <= set(report["applied"])
    assert report["hum"]["fundamental_hz"] == 50.0 and abs(report["hum"]["level_dbfs"] - (-42.0)) < 1.0
    assert abs(report["hiss"]["floor_dbfs"] - (-50.8)) < 2.0  # white -50 dBFS, 100 Hz-20 kHz of it
    table = (title_dir / "qc.md").read_text().split("## Restoration")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| yes |" in rows["hum"] and rows["hum"].rstrip().endswith("| dehum |")
    assert "| yes |" in rows["hiss"] and rows["hiss"].rstrip().endswith("| dehiss |")
    assert f"{report['clicks_repaired']} repaired" in rows["clicks"]


def test_rerun_reuses_every_stage(restored: dict, demo_clip: Path) -> None:
    title_dir = Path(restored["title_dir"])
    before = _mtimes(title_dir)
    run_restore_title(demo_clip, title_dir.parent, "clip", preset="ebu-r128", device="cpu")
    assert _mtimes(title_dir) == before


def test_changed_preset_redoes_only_what_depends_on_it(restored: dict, demo_clip: Path) -> None:
    title_dir = Path(restored["title_dir"])
    manifests = title_dir / MANIFEST_DIR
    before = {s: (manifests / f"{s}.json").stat().st_mtime_ns for s in STAGES}
    run_restore_title(demo_clip, title_dir.parent, "clip", preset="atsc-a85", device="cpu")
    after = {s: (manifests / f"{s}.json").stat().st_mtime_ns for s in STAGES}
    assert [s for s in STAGES if after[s] != before[s]] == ["normalize", "render"]
    qc = json.loads((title_dir / "qc.json").read_text())
    assert qc["verdict"]["preset"] == "atsc-a85"
    assert abs(qc["loudness"]["after"]["bed_7.1.4"]["integrated_lufs"] - (-24.0)) <= 1.0


@pytest.mark.ear
def test_adm_file_renders_in_the_ebu_adm_renderer(restored: dict, tmp_path: Path) -> None:
    import ear_env

    title_dir = Path(restored["title_dir"])
    theirs = ear_env.render_in_wav_order(title_dir / "adm.wav", tmp_path / "ear.wav").astype(np.float64)
    ours = read_audio(title_dir / "bed_7.1.4.wav").astype(np.float64)
    assert theirs.shape == ours.shape
    with np.errstate(divide="ignore"):
        ours_db, theirs_db = (10 * np.log10(np.sum(x**2, axis=1)) for x in (ours, theirs))
    for label, a, b in zip(BED_7_1_4.labels, ours_db, theirs_db):
        assert abs(a - b) < 1.0, (label, a, b)


def test_cli_demo_runs_end_to_end(tmp_path: Path) -> None:
    """README's first command ends in `filmrestore demo`: run it for real, in a subprocess."""
    cli = Path(sys.executable).with_name("filmrestore")
    proc = subprocess.run([str(cli), "demo", "--out", str(tmp_path), "--duration", "6"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "demo_clip" / "adm.wav").is_file()
    assert "deliverables in" in proc.stdout and "deliverables in" not in proc.stderr  # the result: stdout
    assert "\x1b[" not in proc.stdout  # piped: no colour codes
    # No Prefect API configured: the flow runs in this process, with no temporary server.
    assert "temporary server" not in proc.stderr
    assert all(f"{stage} done in" in proc.stderr for stage in STAGES), proc.stderr
    # --quiet: the result only (a re-run here: answered from the finished run's record, no line says so).
    title_dir = tmp_path / "demo_clip"
    rerun = [str(cli), "--quiet", "run", str(tmp_path / "demo_clip.mov"), "--out", str(tmp_path), "--title", "demo_clip"]
    before = file_stamps(title_dir)
    quiet = subprocess.run(rerun, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == ""  # nothing but the result, and that on stdout
    assert quiet.stdout.startswith("deliverables in") and "loudness (ebu-r128): PASS" in quiet.stdout
    assert file_stamps(title_dir) == before  # nothing ran: not even the QC report was rewritten
    # A deliverable gone: the run goes through the stages again, redoes the render, and leaves a new record.
    (title_dir / "stems" / "me.wav").unlink()
    again = subprocess.run(rerun[:1] + rerun[2:], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "render done in" in again.stderr and "separate reused" in again.stderr, \
        again.stderr[-2000:]
    assert (title_dir / "stems" / "me.wav").is_file() and (title_dir / RUN_RECORD).is_file()
    last = subprocess.run(rerun[:1] + rerun[2:], capture_output=True, text=True, timeout=600)
    assert "nothing to run" in last.stderr and " done in " not in last.stderr and last.stdout == again.stdout


def _hashes(title_dir: Path) -> dict[str, str]:
    import hashlib

    names = ("bed_7.1.4.wav", "stems/dialogue.wav", "stems/music.wav", "stems/effects.wav", "stems/me.wav",
             "foldown/stereo.wav", "foldown/5.1.wav")
    return {n: hashlib.sha256((title_dir / n).read_bytes()).hexdigest() for n in names}


def test_without_a_prefect_api_the_flow_runs_in_process_with_the_same_deliverables(
        restored: dict, demo_clip: Path, tmp_path: Path, no_prefect_api: None,
        caplog: pytest.LogCaptureFixture) -> None:
    from filmrestore.stagelog import STAGE_LOGGER

    flow_run = Path(restored["title_dir"])
    preset = json.loads((flow_run / "qc.json").read_text())["verdict"]["preset"]  # as the last flow run left it
    with caplog.at_level("INFO", logger=STAGE_LOGGER):
        local = run_restore_title(demo_clip, tmp_path, "clip", preset=preset, device="cpu")
    assert [r.getMessage().split(" ")[0] for r in caplog.records if r.name == STAGE_LOGGER] == list(STAGES)
    assert _hashes(Path(local["title_dir"])) == _hashes(flow_run)
    assert local["verdict"] == json.loads((flow_run / "qc.json").read_text())["verdict"]
    # ... and resumes like a flow run: every stage reused, nothing rewritten.
    before = _mtimes(Path(local["title_dir"]))
    caplog.clear()
    with caplog.at_level("INFO", logger=STAGE_LOGGER):
        run_restore_title(demo_clip, tmp_path, "clip", preset=preset, device="cpu")
    assert _mtimes(Path(local["title_dir"])) == before
    assert sum("reused from a previous run" in r.getMessage() for r in caplog.records) == len(STAGES)


def test_a_server_answering_on_the_default_port_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from filmrestore.flows import api

    harness = get_current_settings().api.url  # the session's real test server
    monkeypatch.setattr(api, "LOCAL_SERVER", harness)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert api.prefect_api_url() == harness
        monkeypatch.setattr(api, "LOCAL_SERVER", "http://127.0.0.1:9/api")
        assert api.prefect_api_url() is None
    assert api.prefect_api_url() == harness  # configured: used as it is


def test_in_process_stages_retry_transient_faults_only(no_prefect_api: None) -> None:
    import errno

    from prefect import task

    from filmrestore.flows.restore_title import stage

    calls = []

    @task(retries=2, retry_delay_seconds=0)
    def flaky(code: int) -> str:
        calls.append(code)
        if len(calls) == 1:
            raise OSError(code, "fault")
        return "done"

    assert stage(flaky, errno.EIO) == "done" and len(calls) == 2  # an I/O error: tried again
    calls.clear()
    with pytest.raises(OSError, match="fault"):
        stage(flaky, errno.ENOSPC)  # a full disk stays full: not retried
    assert len(calls) == 1


def test_a_moved_title_folder_reuses_and_reports_its_own_files(restored: dict, demo_clip: Path, tmp_path: Path,
                                                               no_prefect_api: None) -> None:
    import shutil

    copied = tmp_path / "elsewhere" / "clip"
    shutil.copytree(restored["title_dir"], copied)
    manifest = json.loads((copied / MANIFEST_DIR / "render.json").read_text())
    assert manifest["files"]["bed_7.1.4"]["path"] == "bed_7.1.4.wav"  # relative to the title folder
    preset = json.loads((copied / "qc.json").read_text())["verdict"]["preset"]
    (copied / "qc.json").unlink()
    before = _mtimes(copied)
    shutil.rmtree(Path(restored["title_dir"]) / "stems")  # the original's files must not be what is reused
    try:
        result = run_restore_title(demo_clip, copied.parent, "clip", preset=preset, device="cpu")
    finally:
        run_restore_title(demo_clip, Path(restored["title_dir"]).parent, "clip", preset=preset, device="cpu")
    assert _mtimes(copied) == before  # every stage reused, from the copy
    assert all(Path(p).is_relative_to(copied) for p in result["deliverables"].values())
    qc = json.loads((copied / "qc.json").read_text())
    assert all(Path(p).is_relative_to(copied) for p in qc["deliverables"].values())


def test_a_crash_while_the_render_renames_its_files_is_completed_by_the_next_run(
        demo_clip: Path, tmp_path: Path, no_prefect_api: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The render's files appear as one set: a crash part-way through renaming them (caused here,
    since a real one cannot be timed) leaves no manifest or QC report describing a mixed set, and
    the next run first completes the set from its journal."""
    from filmrestore import resume
    from filmrestore.resume import damaged_files

    first = run_restore_title(demo_clip, tmp_path, "clip", preset="ebu-r128", device="cpu", separator="dsp")
    title_dir = Path(first["title_dir"])
    real_complete = resume._complete

    class PowerCut(BaseException):  # the process dies: nothing of it retries or cleans up
        pass

    def crash_after_three(title_dir: Path, journal: Path) -> list[str]:
        renames = json.loads(journal.read_text())["renames"]
        for src, dst in renames[:3]:
            Path(src).replace(dst)
        raise PowerCut("power cut")

    monkeypatch.setattr(resume, "_complete", crash_after_three)
    with pytest.raises(PowerCut):
        run_restore_title(demo_clip, tmp_path, "clip", preset="atsc-a85", device="cpu", separator="dsp")
    assert not (title_dir / "qc.json").exists() and not (title_dir / MANIFEST_DIR / "render.json").exists()
    assert (title_dir / MANIFEST_DIR / "render.publishing.json").is_file()
    monkeypatch.setattr(resume, "_complete", real_complete)
    before = (title_dir / "bed_7.1.4.wav").stat().st_mtime_ns
    result = run_restore_title(demo_clip, tmp_path, "clip", preset="atsc-a85", device="cpu", separator="dsp")
    assert not (title_dir / MANIFEST_DIR / "render.publishing.json").exists()
    assert not list(title_dir.rglob("*.part"))
    manifest = resume.StageManifest.load(title_dir / MANIFEST_DIR / "render.json", root=title_dir)
    assert damaged_files(manifest) == []  # every file is the one this render wrote
    assert (title_dir / "bed_7.1.4.wav").stat().st_mtime_ns == before  # completed from the journal, not redone
    assert json.loads((title_dir / "qc.json").read_text())["verdict"]["preset"] == "atsc-a85"
    assert result["verdict"]["preset"] == "atsc-a85"
