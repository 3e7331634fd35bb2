"""Bad input through the CLI: one clear line naming the file, exit code 2, no partial deliverables."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from filmrestore.audio import read_audio, write_audio
from filmrestore.cli import EXIT_DELIVERY_FAILED, EXIT_EXPECTED_ERROR, app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _assert_one_clear_line(code: int, output: str, must_name: Path, problem: str) -> None:
    assert code == EXIT_EXPECTED_ERROR, output
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, output
    assert str(must_name) in error_lines[0].replace("\n", "") and problem in error_lines[0], output
    assert "Traceback" not in output


def test_video_without_audio(tmp_path: Path) -> None:
    video = tmp_path / "silent_film.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=24:d=1", "-c:v", "mpeg4", str(video))
    code, output = _invoke("run", video, "--out", tmp_path / "out")
    _assert_one_clear_line(code, output, video, "no audio stream")
    assert not (tmp_path / "out" / "silent_film" / "bed_7.1.4.wav").exists()


def test_corrupt_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mov"
    bogus.write_bytes(b"this is not a movie" * 100)
    code, output = _invoke("run", bogus, "--out", tmp_path / "out")
    _assert_one_clear_line(code, output, bogus, "")


def test_missing_file(tmp_path: Path) -> None:
    code, output = _invoke("run", tmp_path / "nowhere.mov", "--out", tmp_path / "out")
    _assert_one_clear_line(code, output, tmp_path / "nowhere.mov", "does not exist")


def test_silent_soundtrack_is_not_amplified(tmp_path: Path) -> None:
    clip = tmp_path / "silence.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=24:d=4", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono",
            "-t", "4", "-c:v", "mpeg4", "-c:a", "pcm_s24le", str(clip))
    code, output = _invoke("run", clip, "--out", tmp_path / "out")
    assert "silent" in output.lower(), output
    assert code == EXIT_EXPECTED_ERROR
    title_dir = tmp_path / "out" / "silence"
    assert not (title_dir / "bed_7.1.4.wav").exists() and not (title_dir / "adm.wav").exists()
    # refused at extract, naming the source: restore and separate never ran
    assert str(clip) in output.replace("\n", "") and "digital silence" in output, output
    assert not (title_dir / "work" / "restored.wav").exists() and not (title_dir / "work" / "stems").exists()


@pytest.mark.parametrize(("audio", "problem"), [
    (["-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "0.1"], "is too short: its audio stream lasts 0.100 s"),
    (["-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "6", "-af", "volume=-67dB"],
     "is too quiet to deliver: every 400 ms block is under BS.1770's -70 LUFS absolute gate (sample peak -8"),
])
def test_too_short_and_too_quiet_are_refused_at_extract_naming_the_source(tmp_path: Path, audio: list[str],
                                                                           problem: str) -> None:
    clip = tmp_path / "clip.wav"
    _ffmpeg(*audio, "-c:a", "pcm_s24le", str(clip))
    code, output = _invoke("run", clip, "--out", tmp_path / "out")
    _assert_one_clear_line(code, output, clip, problem)
    assert not (tmp_path / "out" / "clip" / "work" / "restored.wav").exists()  # restore never ran


def test_changed_presets_are_custom_and_a_failed_delivery_exits_3(tmp_path: Path, demo_clip: Path) -> None:
    """A preset with a changed number is reported as custom; -6 LUFS under a -1 dBTP ceiling cannot
    be met: everything is written, the verdict says FAIL, and the exit code (3) tells a script."""
    out, title_dir = tmp_path / "out", tmp_path / "out" / demo_clip.stem
    code, output = _invoke("run", demo_clip, "--out", out, "--target", "-16", "--device", "cpu")
    assert "loudness (custom (from ebu-r128)):" in output, output
    qc = json.loads((title_dir / "qc.json").read_text())
    assert (qc["verdict"]["preset"], qc["verdict"]["based_on"], qc["verdict"]["target_lufs"]) == \
        ("custom", "ebu-r128", -16.0)
    assert code == (0 if qc["verdict"]["pass"] else EXIT_DELIVERY_FAILED), output

    code, output = _invoke("run", demo_clip, "--out", out, "--preset", "custom", "--target", "-6",
                           "--ceiling", "-1", "--device", "cpu")  # stages before normalize are reused
    assert code == EXIT_DELIVERY_FAILED != EXIT_EXPECTED_ERROR, output
    assert "loudness (custom): FAIL" in output, output
    qc = json.loads((title_dir / "qc.json").read_text())
    assert qc["verdict"]["pass"] is False and qc["verdict"]["loudness_pass"] is False
    assert qc["verdict"]["true_peak_dbtp"] <= -1.0
    assert (title_dir / "bed_7.1.4.wav").is_file() and (title_dir / "adm.wav").is_file()


@pytest.mark.parametrize(("options", "problem"), [
    (["--adm-profile", "bogus"], "unknown ADM profile 'bogus'"),
    (["--preset", "custom"], "preset 'custom' needs a target"),
    (["--separator", "neural", "--checkpoint", "missing.safetensors"], "missing.safetensors"),
    (["--shifts", "17"], "shifts must be a whole number from 1 to 16, got 17"),
    (["--target", "-90"], "target -90.0 LUFS out of (-70, 0)"),
    (["--separation-deployment", "separate-title"], "is not a deployment name"),
    (["--separation-deployment", "separate-title/nowhere"], "separation_deployment 'separate-title/nowhere'"),
])
def test_bad_options_are_refused_before_any_stage_runs(tmp_path: Path, demo_clip: Path, options: list[str],
                                                       problem: str) -> None:
    code, output = _invoke("run", demo_clip, "--out", tmp_path / "out", *options)
    assert code == EXIT_EXPECTED_ERROR, output
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and problem in error_lines[0], output
    assert not (tmp_path / "out").exists()  # nothing extracted, nothing created


def test_a_folder_as_source_is_not_called_missing(tmp_path: Path) -> None:
    code, output = _invoke("run", tmp_path, "--out", tmp_path / "out")
    _assert_one_clear_line(code, output, tmp_path, "is not a regular file")


def test_no_command_writes_over_its_input(tmp_path: Path, demo_clip: Path) -> None:
    """extract onto its source, separate into the folder of its input stem, run from inside the
    title folder it writes, or through a hard link: refused, and the input is left as it was."""
    clip = tmp_path / "clip.mov"
    clip.write_bytes(demo_clip.read_bytes())
    before = clip.read_bytes()
    code, output = _invoke("extract", clip, clip)
    _assert_one_clear_line(code, output, clip, "refusing to overwrite the input")
    linked = tmp_path / "linked.wav"
    linked.hardlink_to(clip)
    code, output = _invoke("extract", clip, linked)
    _assert_one_clear_line(code, output, clip, "refusing to overwrite the input")
    stems = tmp_path / "d"
    stems.mkdir()
    write_audio(stems / "dialogue.wav", np.zeros((1, 4800), np.float32) + 0.1, 48_000)
    code, output = _invoke("separate", stems / "dialogue.wav", "--out", stems)
    _assert_one_clear_line(code, output, stems / "dialogue.wav", "refusing to overwrite the input")
    inside = tmp_path / "out" / "t" / "work" / "soundtrack.mov"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(before)
    code, output = _invoke("run", inside, "--out", tmp_path / "out", "--title", "t")
    _assert_one_clear_line(code, output, inside, "lies inside the folder this command writes")
    assert clip.read_bytes() == before and inside.read_bytes() == before


def test_a_title_being_written_by_another_run_is_refused(tmp_path: Path, demo_clip: Path,
                                                       title_locked_elsewhere: Any) -> None:
    title_dir = tmp_path / "out" / demo_clip.stem
    with title_locked_elsewhere(title_dir) as holder:
        code, output = _invoke("run", demo_clip, "--out", tmp_path / "out", "--device", "cpu")
    _assert_one_clear_line(code, output, title_dir, f"is being written by another run (pid {holder.pid})")
    assert not (title_dir / "work").exists()


def test_titles_keep_their_letters_in_the_folder_and_their_name_in_qc_and_adm(tmp_path: Path,
                                                                          demo_clip: Path) -> None:
    from filmrestore.audio import read_chunks

    clip = tmp_path / "Ça tourne (version française) 1962.mov"
    clip.write_bytes(demo_clip.read_bytes())
    result = runner.invoke(app, ["run", str(clip), "--out", str(tmp_path / "out"), "--separator", "dsp",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    title_dir = tmp_path / "out" / "Ca_tourne_version_francaise_1962"
    printed = json.loads(result.stdout)  # stdout is the JSON alone; messages went to stderr
    assert printed["title_dir"] == str(title_dir.resolve()) and printed["verdict"]["pass"] is True
    qc = json.loads((title_dir / "qc.json").read_text())
    assert (qc["title"], qc["folder"]) == ("Ça tourne (version française) 1962", title_dir.name)
    axml = read_chunks(title_dir / "adm.wav")[b"axml"].decode("utf-8")
    assert 'audioProgrammeName="Ça tourne (version française) 1962"' in axml
    code, output = _invoke("run", clip, "--out", tmp_path / "out", "--title", "../../escape", "--separator", "dsp",
                           "--device", "cpu")
    assert code == 0 and (tmp_path / "out" / "escape" / "qc.json").is_file(), output  # confined to --out
    assert not (tmp_path / "escape").exists()


def test_unwritable_output_folder(tmp_path: Path, demo_clip: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    code, output = _invoke("run", demo_clip, "--out", blocker / "out")
    _assert_one_clear_line(code, output, blocker / "out", "cannot create output folder")


def test_loudness_json_keys(tmp_path: Path) -> None:
    t = np.arange(48_000 * 5) / 48_000
    tone = (10 ** (-23 / 20) * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    write_audio(tmp_path / "tone.wav", np.vstack([tone, tone]), 48_000)
    code, output = _invoke("loudness", tmp_path / "tone.wav", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert {"integrated_lufs", "true_peak_dbtp", "lra_lu"} <= set(report)
    assert abs(report["integrated_lufs"] - (-23.0)) < 0.1


def test_loudness_of_silence_is_null(tmp_path: Path) -> None:
    write_audio(tmp_path / "silence.wav", np.zeros((2, 48_000 * 3), np.float32), 48_000)
    code, output = _invoke("loudness", tmp_path / "silence.wav", "--json")
    assert code == 0, output
    assert json.loads(output)["integrated_lufs"] is None


def test_extract_and_separate_commands(tmp_path: Path, demo_clip: Path) -> None:
    wav = tmp_path / "soundtrack.wav"
    code, output = _invoke("extract", demo_clip, wav)
    assert code == 0, output
    code, output = _invoke("separate", wav, "--out", tmp_path / "stems", "--device", "cpu")
    assert code == 0, output
    for stem in ("dialogue", "music", "effects"):
        assert (tmp_path / "stems" / f"{stem}.wav").is_file()
    # Two shifted passes: other stems, still adding up to the soundtrack.
    code, output = _invoke("separate", wav, "--out", tmp_path / "shifted", "--device", "cpu", "--shifts", "2")
    assert code == 0, output
    stems = {s: read_audio(tmp_path / "shifted" / f"{s}.wav") for s in ("dialogue", "music", "effects")}
    np.testing.assert_allclose(sum(stems.values()), read_audio(wav), atol=1e-4)
    assert np.abs(stems["dialogue"] - read_audio(tmp_path / "stems" / "dialogue.wav")).max() > 1e-4
    # The video itself: its soundtrack decoded as extract decodes it, then separated.
    code, output = _invoke("separate", demo_clip, "--out", tmp_path / "from_video", "--device", "cpu")
    assert code == 0, output
    from_video = {s: read_audio(tmp_path / "from_video" / f"{s}.wav") for s in ("dialogue", "music", "effects")}
    np.testing.assert_allclose(sum(from_video.values()), read_audio(wav), atol=1e-4)
    np.testing.assert_allclose(from_video["dialogue"], read_audio(tmp_path / "stems" / "dialogue.wav"), atol=1e-5)
    code, output = _invoke("separate", demo_clip, "--out", tmp_path / "refused", "--stream", "3")
    assert code == EXIT_EXPECTED_ERROR and "no audio stream #3" in output, output
    for options, problem in ((["--separator", "dsp", "--shifts", "2"], "the 'dsp' separator takes no shifts"),
                             (["--shifts", "0"], "shifts must be a whole number from 1 to 16, got 0")):
        code, output = _invoke("separate", wav, "--out", tmp_path / "refused", *options)
        assert code == EXIT_EXPECTED_ERROR and output.strip().startswith(f"error: {problem}"), output
        assert len(output.strip().splitlines()) == 1, output


def test_expected_error_prints_no_traceback_from_a_real_process(tmp_path: Path) -> None:
    """What a user sees in the terminal: Prefect logs the failed run (its state line names the
    file and the problem) but no traceback, then the CLI's one error line, exit code 2."""
    import sys

    video = tmp_path / "silent_film.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=24:d=1", "-c:v", "mpeg4", str(video))
    cli = Path(sys.executable).parent / "filmrestore"
    proc = subprocess.run([str(cli), "run", str(video), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_EXPECTED_ERROR, output
    assert "Traceback" not in output
    assert f"error: {video}: no audio stream" in output.replace("\n", "")


def test_version() -> None:
    from filmrestore import __version__

    code, output = _invoke("--version")
    assert (code, output.strip()) == (0, f"filmrestore {__version__}")


def test_loudness_measures_the_soundtrack_of_a_video(tmp_path: Path, demo_clip: Path) -> None:
    """`loudness` on a .mov decodes its audio stream as extract does and meters that."""
    from filmrestore.loudness.measure import measure_file
    from filmrestore.media import extract_audio

    code, output = _invoke("loudness", demo_clip, "--json", "--no-dialogue")
    assert code == 0, output
    extract_audio(demo_clip, tmp_path / "a.wav")
    assert json.loads(output)["integrated_lufs"] == pytest.approx(measure_file(tmp_path / "a.wav").integrated_lufs,
                                                                   abs=0.001)


def test_an_expected_error_is_one_line_on_stderr_and_nothing_else(tmp_path: Path, demo_clip: Path) -> None:
    """Through the real command: a bad --stream or an empty file is refused before any stage or
    Prefect server starts, with exactly one stderr line and nothing on stdout."""
    import sys

    cli = Path(sys.executable).with_name("filmrestore")
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    for args, problem in (([str(demo_clip), "--stream", "5"], "no audio stream #5"),
                          ([str(empty)], "is empty (0 bytes)")):
        proc = subprocess.run([str(cli), "run", *args, "--out", str(tmp_path / "out")], capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode == EXIT_EXPECTED_ERROR
        assert proc.stdout == "" and proc.stderr.count("\n") == 1 and problem in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_over_damaged_packets_says_where_the_gaps_are(tmp_path: Path) -> None:
    """Lost packets are filled in sync (tests/test_extract.py); the run says so in qc.json,
    qc.md and on the terminal, not as a silent PASS."""
    from test_extract import _damage_packets

    clean = tmp_path / "clean.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=8", "-f", "lavfi", "-i",
            "aevalsrc=0.3*sin(2*PI*(300*t+40*t*t))*(0.6+0.4*sin(2*PI*0.7*t)):s=48000:d=8",
            "-c:v", "mpeg4", "-c:a", "aac", str(clean))
    hit_s = _damage_packets(clean, tmp_path / "reel 3.mp4", after_s=4.0, every=4, count=6)
    code, output = _invoke("run", tmp_path / "reel 3.mp4", "--out", tmp_path / "out", "--separator", "dsp")
    assert code == 0, output
    qc = json.loads((tmp_path / "out" / "reel_3" / "qc.json").read_text())
    gaps = qc["stages"]["extract"]["report"]["gaps"]
    assert gaps and all(min(abs(g["at_s"] - t) for t in hit_s) < 1e-3 for g in gaps)
    assert len(qc["warnings"]) == 1 and f"{len(gaps)} gap(s) in the decoded audio" in qc["warnings"][0]
    assert f"at {gaps[0]['at_s']:.3f} s" in qc["warnings"][0]
    assert "## Warnings" in (tmp_path / "out" / "reel_3" / "qc.md").read_text()
    assert [line for line in output.splitlines() if line.startswith("warning:")] == \
        [f"warning: {qc['warnings'][0]} (see qc.md)"]


def test_a_disk_too_small_for_the_title_is_refused_before_any_stage(tmp_path: Path, demo_clip: Path,
                                                                     small_disk: Any) -> None:
    with small_disk(tmp_path / "disk", 20) as disk:
        code, output = _invoke("run", demo_clip, "--out", disk / "out")
        _assert_one_clear_line(code, output, disk / "out", "not enough free space")
        assert "needs about" in output and "free there" in output
        assert not any(p.is_file() for p in disk.rglob("*"))  # nothing written


def test_a_disk_that_fills_during_a_write_names_the_file_and_leaves_nothing(tmp_path: Path,
                                                                            small_disk: Any) -> None:
    from filmrestore.audio import AudioWriter
    from filmrestore.errors import OutputNotWritableError

    with small_disk(tmp_path / "disk", 2) as disk:
        with pytest.raises(OutputNotWritableError, match=r"big.wav: cannot be written: No space left on device"):
            with AudioWriter(disk / "big.wav", 48_000, 12) as writer:
                for _ in range(10):  # 1.7 MB a second of 12-channel 24-bit audio
                    writer.write(np.zeros((12, 48_000), np.float32))
        assert list(disk.iterdir()) == []  # no partial file under any name


def test_ffmpeg_running_out_of_space_blames_the_output_not_the_source(tmp_path: Path, demo_clip: Path,
                                                                       small_disk: Any) -> None:
    with small_disk(tmp_path / "disk", 1) as disk:  # the 12 s clip decodes to 2.3 MB of float samples
        code, output = _invoke("extract", demo_clip, disk / "soundtrack.wav")
        _assert_one_clear_line(code, output, disk / "soundtrack.wav", "No space left on device")
        assert "cannot decode" not in output and str(demo_clip) not in output
        assert list(disk.iterdir()) == []


def _stage_records(stage: str, n: int = 50) -> list:
    import logging

    from filmrestore.stagelog import STAGE_LOGGER, terminal_progress

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(STAGE_LOGGER)
    keep, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.DEBUG)
    try:
        progress = terminal_progress(stage)
        for i in range(n + 1):
            progress(i * 1000, n * 1000)
        logger.info("%s done in 1.0 s: x", stage, extra={"filmrestore_stage": True})
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    return records


def test_progress_is_plain_lines_when_piped_and_bars_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from filmrestore.cli import progress as cli_progress

    records = _stage_records("separate")
    assert 50 <= len(records) <= 52  # one per 1 % (of 50 updates), and the stage line
    monkeypatch.setattr(cli_progress, "PLAIN_AFTER_S", 0.0)
    piped = io.StringIO()
    handler = cli_progress.StageConsole(Console(file=piped, force_terminal=False, width=200))
    for record in records:
        handler.handle(record)
    lines = [line.split(" ", 1)[1] for line in piped.getvalue().splitlines()]
    assert lines == [f"separate {p} %" for p in range(10, 100, 10)] + ["separate done in 1.0 s: x"]
    shown = io.StringIO()
    handler = cli_progress.StageConsole(Console(file=shown, force_terminal=True, width=100))
    for record in records:
        handler.handle(record)
    text = shown.getvalue()
    assert "separate  \x1b[" in text and "━" in text and "%" in text  # a live bar (redrawn 10 times a second)
    assert text.rstrip().endswith("separate done in 1.0 s: x")  # the bar gone, the stage line kept


def test_an_unsupported_channel_count_is_refused_before_any_stage(tmp_path: Path) -> None:
    video = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=3"]
    many = tmp_path / "many.mov"
    _ffmpeg(*video, "-f", "lavfi", "-i", "anoisesrc=d=3:a=0.1:r=48000", "-filter_complex",
            "[1:a]pan=hexadecagonal|" + "|".join(f"c{k}=c0" for k in range(16)) + "[a]",
            "-map", "0:v", "-map", "[a]", "-c:v", "mpeg4", "-c:a", "pcm_s16le", str(many))
    code, output = _invoke("run", many, "--out", tmp_path / "out", "--separator", "dsp")
    _assert_one_clear_line(code, output, many, "has 16 channels")
    assert "choose another stream with --stream" in output and not (tmp_path / "out" / "many").exists()
    back_centre = tmp_path / "4.0.wav"  # FL FR FC BC: four channels, but no layout the upmix places
    _ffmpeg("-f", "lavfi", "-i", "aevalsrc=0.1*sin(2*PI*300*t)|0.1*sin(2*PI*400*t)|0.1*sin(2*PI*500*t)|"
            "0.1*sin(2*PI*600*t):s=48000:c=4.0:d=2", "-c:a", "pcm_s16le", str(back_centre))
    code, output = _invoke("run", back_centre, "--out", tmp_path / "out", "--separator", "dsp")
    _assert_one_clear_line(code, output, back_centre, "FL+FR+FC+BC, a layout filmrestore does not place")


def test_the_cli_choices_are_the_library_vocabulary() -> None:
    """The CLI keeps its own enums (importing the loudness library would slow every command's start);
    they must name exactly what the library knows."""
    from typing import get_args

    from filmrestore.cli.options import Gate, Preset, RemuxFormat
    from filmrestore.loudness import specs
    from filmrestore.remux import CONTAINERS

    assert {p.value for p in Preset} == set(specs.PRESETS) | {"custom"}
    assert {g.value for g in Gate} == set(get_args(specs.Gate))
    assert {f.value for f in RemuxFormat} == set(CONTAINERS)
    from typer.main import get_command

    from filmrestore.cli import app

    run = get_command(app).commands["run"]
    metavars = {p.name: p.metavar for p in run.params}
    from filmrestore.separation import SEPARATOR_NAMES
    from filmrestore.upmix.adm import PROFILES

    assert set(metavars["separator"].split("|")) == set(SEPARATOR_NAMES)
    assert set(metavars["adm_profile"].split("|")) == set(PROFILES)
    # ... and so must the restore-title flow's parameter types (the run form's choices in the UI).
    from filmrestore.flows import restore_title as flow
    from filmrestore.separation import SEPARATOR_NAMES
    from filmrestore.upmix.adm import PROFILES

    assert set(get_args(flow.Preset)) == set(specs.PRESETS) | {"custom"}
    assert set(get_args(flow.Gate)) == set(get_args(specs.Gate))
    assert set(get_args(flow.Container)) == set(CONTAINERS)
    assert set(get_args(flow.Separator)) == set(SEPARATOR_NAMES)
    assert set(get_args(flow.AdmProfile)) == set(PROFILES)
    form = flow.restore_title.parameters.model_dump()["properties"]
    assert all(form[name].get("description") for name in form), [n for n in form if not form[n].get("description")]


def test_an_output_name_that_lies_about_the_format_is_refused(tmp_path: Path, demo_clip: Path) -> None:
    code, output = _invoke("extract", demo_clip, tmp_path / "soundtrack.mp3")
    _assert_one_clear_line(code, output, tmp_path / "soundtrack.mp3", "name the output .wav")
    assert not list(tmp_path.iterdir())


def test_a_broken_plan_json_is_refused_before_any_stage(tmp_path: Path, demo_clip: Path) -> None:
    title_dir = tmp_path / "out" / "demo_clip"
    title_dir.mkdir(parents=True)
    (title_dir / "plan.json").write_text('{"format": "someone-elses-plan"}')  # an engineer's wrong file
    code, output = _invoke("run", demo_clip, "--out", tmp_path / "out", "--separator", "dsp")
    _assert_one_clear_line(code, output, title_dir / "plan.json", "format is 'someone-elses-plan'")
    assert not (title_dir / "work").exists()  # refused before extract
