"""Catalogues (media-root confinement), the restore_catalog fan-out, the gpu limit, QC plots, Dask."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from filmrestore.audio import write_audio
from filmrestore.errors import CatalogError
from filmrestore.flows.catalog import read_catalog


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("title,source,preset,options\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "films").mkdir(parents=True)
    (root / "films" / "a.mov").write_bytes(b"not really a film")
    return root


def silent_video(path: Path, duration_s: float = 2.0) -> Path:
    """A picture-only file: the 'broken title' of a catalogue (no audio stream)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=160x120:rate=24:duration={duration_s}", "-an", str(path)], check=True)
    return path


# ----------------------------------------------------------------------------- catalogue files

def test_csv_and_json_catalogues_give_the_same_entries(media: Path, tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "c.csv", ['a,films/a.mov,netflix,"{""stream"": 1, ""device"": ""cpu""}"',
                                              f"b,{media / 'films' / 'a.mov'},,"])
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps({"titles": [
        {"title": "a", "source": "films/a.mov", "preset": "netflix", "options": {"stream": 1, "device": "cpu"}},
        {"title": "b", "source": str(media / "films" / "a.mov")}]}))
    from_csv, from_json = read_catalog(csv_path, media), read_catalog(json_path, media)
    assert from_csv == from_json
    a, b = from_csv
    assert a.source == str((media / "films" / "a.mov").resolve()) == b.source
    assert (a.preset, a.options, b.preset, b.options) == ("netflix", {"stream": 1, "device": "cpu"}, "ebu-r128", {})
    assert a.flow_parameters("/out") == {"source": a.source, "out": "/out", "title": "a", "preset": "netflix",
                                         "stream": 1, "device": "cpu"}


@pytest.mark.parametrize("source, expected", [
    ("../outside.mov", "contains '..'"),
    ("films/../films/a.mov", "contains '..'"),
    ("/etc/hostname", "outside the media root"),
])
def test_a_row_leaving_the_media_root_refuses_the_catalogue(media: Path, tmp_path: Path, source: str,
                                                            expected: str) -> None:
    path = _write_csv(tmp_path / "c.csv", ["ok,films/a.mov,,", f"bad,{source},,"])
    with pytest.raises(CatalogError) as err:
        read_catalog(path, media)
    assert "row 2 (title 'bad')" in str(err.value) and expected in str(err.value) and str(path) in str(err.value)


def test_symlinks_may_not_escape_the_media_root(media: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.mov"
    outside.write_bytes(b"x")
    (media / "films" / "escape.mov").symlink_to(outside)
    (media / "linked").symlink_to(tmp_path)  # a folder link out of the root
    (media / "films" / "alias.mov").symlink_to(media / "films" / "a.mov")  # stays inside: fine
    assert read_catalog(_write_csv(tmp_path / "ok.csv", ["a,films/alias.mov,,"]), media)[0].source == \
        str((media / "films" / "a.mov").resolve())
    for i, source in enumerate(("films/escape.mov", "linked/secret.mov")):
        with pytest.raises(CatalogError, match=r"row 1 \(title 'x'\).*symlink that leads outside the media root"):
            read_catalog(_write_csv(tmp_path / f"bad{i}.csv", [f"x,{source},,"]), media)


@pytest.mark.parametrize("row, expected", [
    ("a b,films/a.mov,,", "title must be"),
    ("a,films/a.mov,loud,", "unknown loudness preset 'loud'"),
    ("a,films/a.mov,,\"{\"\"speed\"\": 2}\"", "unknown option(s) ['speed']"),
    ("a,films/a.mov,,not json", "options are not a JSON object"),
    ("a,films/a.mov,,\"{\"\"stream\"\": \"\"abc\"\"}\"", "stream must be a non-negative integer"),
    ("a,films/a.mov,,\"{\"\"remux\"\": \"\"avi\"\"}\"", "unknown remux container 'avi'"),
    ("a,films/a.mov,,\"{\"\"adm_profile\"\": \"\"bogus\"\"}\"", "unknown ADM profile 'bogus'"),
    ("a,films/a.mov,,\"{\"\"separator\"\": \"\"dsp\"\", \"\"checkpoint\"\": \"\"m.safetensors\"\"}\"",
     "has no weights"),
    ("a,films/a.mov,,\"{\"\"shifts\"\": \"\"2\"\"}\"", "shifts must be a whole number from 1 to 16, got '2'"),
    ("a,films/a.mov,,\"{\"\"separator\"\": \"\"dsp\"\", \"\"shifts\"\": 2}\"", "the 'dsp' separator takes no shifts"),
    ("a,,,", "empty source path"),
])
def test_malformed_rows_are_refused_by_row(media: Path, tmp_path: Path, row: str, expected: str) -> None:
    with pytest.raises(CatalogError) as err:
        read_catalog(_write_csv(tmp_path / "c.csv", [row]), media)
    assert "row 1" in str(err.value) and expected in str(err.value)


def test_duplicate_titles_name_both_rows(media: Path, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"row 3 \(title 'a'\): duplicate title \(also row 1\)"):
        read_catalog(_write_csv(tmp_path / "c.csv", ["a,films/a.mov,,", "b,films/a.mov,,", "a,films/a.mov,,"]),
                     media)


def test_cli_refuses_an_escaping_catalogue_before_running_anything(media: Path, tmp_path: Path) -> None:
    from filmrestore.cli import app

    path = _write_csv(tmp_path / "c.csv", ["ok,films/a.mov,,", "evil,../../etc/passwd,,"])
    result = CliRunner().invoke(app, ["catalog", str(path), "--media-root", str(media), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "row 2 (title 'evil')" in result.output and "'..'" in result.output
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- fan-out

@pytest.mark.usefixtures("prefect_harness")
def test_a_title_whose_delivery_fails_counts_as_failed_and_the_summary_shows_the_verdict_figure() -> None:
    from filmrestore.flows.restore_catalog import SUMMARY_COLUMNS, summary_markdown, title_failed

    def row(title: str, status: str, verdict: str | None, lufs: float | None, gate: str | None) -> dict[str, Any]:
        return {**{k: None for k in SUMMARY_COLUMNS}, "title": title, "status": status, "duration_s": 1.0,
                "message": "", "verdict": verdict, "verdict_lufs": lufs, "verdict_gate": gate,
                "loudness_after_lufs": -24.5}

    rows = [row("ok", "Completed", "PASS", -27.1, "dialogue"), row("loud", "Completed", "FAIL", -6.9, "programme"),
            row("broken", "Failed", None, None, None)]
    assert [title_failed(r) for r in rows] == [False, True, True]
    text = summary_markdown("reels.csv", rows, None)
    assert "**1 of 3 titles completed and passed.**" in text
    assert "PASS (-27.1 LUFS dialogue-gated)" in text and "FAIL (-6.9 LUFS programme-gated)" in text


def test_fan_out_keeps_at_most_parallel_in_flight() -> None:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from filmrestore.flows.restore_catalog import fan_out

    @task
    def hold(i: int) -> tuple[int, float, float]:
        start = time.monotonic()
        time.sleep(0.4)
        return i, start, time.monotonic()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def many() -> list:
        return fan_out(list(range(6)), hold.submit, parallel=2)

    spans = many()
    assert sorted(i for i, _, _ in spans) == list(range(6))
    events = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans], key=lambda x: (x[0], x[1]))
    in_flight = np.cumsum([d for _, d in events])
    assert in_flight.max() == 2  # the runner had 8 threads: the bound is fan_out's


# ----------------------------------------------------------------------------- gpu concurrency

def _restored_manifest(folder: Path, duration_s: float = 20.0) -> StageManifest:
    """A restore-stage manifest around a synthetic film mix (what separation takes as input)."""
    from filmrestore.manifest import FileRecord, StageManifest
    from filmrestore.synth import SAMPLE_RATE_HZ, make_film_mix

    mix = make_film_mix(duration_s, np.random.default_rng(7))["mix"]
    path = folder / "restored.wav"
    write_audio(path, mix, SAMPLE_RATE_HZ)
    return StageManifest("restore", {"restored": FileRecord.from_path(path)})


def _separation_spans(tmp_path: Path, restored: StageManifest, tag: str) -> list[tuple[float, float]]:
    """Run two separations at once (threads); (start, end) of each from its progress artifact."""
    from prefect import flow, get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.task_runners import ThreadPoolTaskRunner

    from filmrestore.tasks.common import artifact_key
    from filmrestore.tasks.separate import separate_task

    dirs = [str(tmp_path / f"{tag}{i}") for i in range(2)]

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two_separations() -> None:
        futures = [separate_task.submit(restored, d, "dsp", "cpu") for d in dirs]
        for f in futures:
            f.result()

    two_separations()
    spans = []
    with get_client(sync_client=True) as client:
        for d in dirs:
            key = artifact_key(d, "separate-progress")
            (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert artifact.data == 100.0
            spans.append((artifact.created.timestamp(), artifact.updated.timestamp()))
    return sorted(spans)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_a_gpu_limit_of_one_runs_two_separations_one_after_the_other(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from filmrestore.tasks import separate
    from filmrestore.tasks.separate import GPU_LIMIT

    monkeypatch.setattr(separate, "uses_gpu", lambda device: True)  # a machine with a GPU (CI has none)

    restored = _restored_manifest(tmp_path)
    spans: list[tuple[float, float]] = []
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
        try:
            # Control: while the test itself holds the only slot, no separation may start.
            held = client.increment_concurrency_slots_with_lease(
                names=[GPU_LIMIT], slots=1, mode="concurrency", lease_duration=300).json()
            runner = threading.Thread(target=lambda: spans.extend(_separation_spans(tmp_path, restored, "gpu")))
            runner.start()
            time.sleep(4.0)
            assert not _progress_artifacts(client, tmp_path, "gpu"), "a separation started without the gpu slot"
            released_at = time.time()
            client.release_concurrency_slots_with_lease(held["lease_id"])
            runner.join(timeout=300)
        finally:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
    assert not runner.is_alive() and len(spans) == 2
    (a0, a1), (b0, b1) = spans
    assert a0 >= released_at - 0.5, "the first separation started before the test released the slot"
    assert a0 < a1 <= b0 < b1, f"second separation started {b0 - a1:.3f} s after the first ended"


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_separations_on_the_cpu_do_not_queue_for_the_gpu_slot(tmp_path: Path) -> None:
    """With the only gpu slot held elsewhere, two CPU separations still run (and overlap)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    import torch

    from filmrestore.tasks.separate import GPU_LIMIT, uses_gpu

    assert not uses_gpu(torch.device("cpu")) and uses_gpu(torch.device("cuda", 0))
    restored = _restored_manifest(tmp_path)
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
        try:
            held = client.increment_concurrency_slots_with_lease(
                names=[GPU_LIMIT], slots=1, mode="concurrency", lease_duration=300).json()
            (a0, a1), (b0, b1) = _separation_spans(tmp_path, restored, "cpu")  # returns: nothing waited
            client.release_concurrency_slots_with_lease(held["lease_id"])
        finally:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
    assert b0 < a1, "the second CPU separation waited for the first"


def _progress_artifacts(client: Any, tmp_path: Path, tag: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from filmrestore.tasks.common import artifact_key

    keys = [artifact_key(str(tmp_path / f"{tag}{i}"), "separate-progress") for i in range(2)]
    return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))


# ----------------------------------------------------------------------------- QC plots

def test_stem_spectrogram_finds_a_tone_and_reads_a_bounded_number_of_windows(tmp_path: Path) -> None:
    from filmrestore.plots import stem_spectrogram

    rate_hz, tone_hz = 48_000, 1_000.0
    t = np.arange(rate_hz * 30) / rate_hz
    x = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]
    x[:, rate_hz * 10 : rate_hz * 20] = 0.0  # 10 s of silence in the middle
    path = tmp_path / "tone.wav"
    write_audio(path, x, rate_hz)
    times_s, freqs_hz, power_db = stem_spectrogram(path, n_columns=60)
    assert power_db.shape == (freqs_hz.size, 60) and times_s.shape == (60,)
    loud = (times_s < 9.9) | (times_s > 20.1)
    assert np.all(np.abs(freqs_hz[np.argmax(power_db[:, loud], axis=0)] - tone_hz) <= freqs_hz[1])
    # A 0.5-amplitude sine is -6 dB re full scale, within the Hann window's scalloping.
    assert np.all(np.abs(power_db[:, loud].max(axis=0) - 20 * np.log10(0.5)) < 1.5)
    quiet = (times_s > 10.1) & (times_s < 19.9)
    assert quiet.any() and np.all(power_db[:, quiet].max(axis=0) < -100)
    # The drawn rows (log-spaced) keep the tone in the row around 1 kHz, and silence silent.
    from filmrestore.plots import log_frequency_rows

    rows_hz, rows_db = log_frequency_rows(freqs_hz, power_db)
    assert np.all(np.abs(np.log2(rows_hz[np.argmax(rows_db[:, loud], axis=0)] / tone_hz)) < 1 / 12)
    assert np.all(rows_db[:, quiet].max(axis=0) < -100)


def test_log_frequency_rows_keep_the_level_of_a_flat_spectrum() -> None:
    from filmrestore.plots import log_frequency_rows

    freqs_hz = np.fft.rfftfreq(4096, 1 / 48_000)
    flat = np.full((freqs_hz.size, 3), -40.0)
    rows_hz, rows_db = log_frequency_rows(freqs_hz, flat, n_rows=100)
    assert rows_hz.shape == (100,) and np.all(np.diff(rows_hz) > 0) and 20 <= rows_hz[0] < 25
    assert np.allclose(rows_db, -40.0)


def test_report_plots_use_series_from_the_manifests_and_write_pngs(tmp_path: Path) -> None:
    from filmrestore.manifest import StageManifest
    from filmrestore.plots import plot_layout, plot_loudness
    from filmrestore.qc import loudness_series

    series = {"time_s": [3.0, 4.0, 5.0], "short_term_lufs": [-30.0, None, -20.0],
              "momentary_time_s": [1.0, 2.0, 3.0, 4.0, 5.0], "momentary_max_lufs": [-28.0, -25.0, None, -22, -19]}
    stages = {"normalize": StageManifest("normalize", {}, report={"before_series": {"bed_7.1.4": series}}),
              "render": StageManifest("render", {}, report={"after_series": {"bed_7.1.4": series}})}
    assert loudness_series(stages) == {"bed_7.1.4 before": series, "bed_7.1.4 after": series}
    stages["normalize"].report["before_series"]["mix"] = series  # the source's own curve, when measured
    found = loudness_series(stages)
    assert found == {"restored mix, before the gain": series, "bed_7.1.4 after": series}
    for path in (plot_loudness(tmp_path / "l.png", found, -23.0), plot_layout(tmp_path / "m.png", [-3.0] * 12)):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# ----------------------------------------------------------------------------- Dask fan-out

@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_catalogue_fans_out_on_a_dask_local_cluster(tmp_path: Path) -> None:
    import json

    from filmrestore.demo import make_demo_clip
    from filmrestore.cli import app

    media = tmp_path / "media"
    make_demo_clip(media / "good.mov", duration_s=4.0, seed=5)
    silent_video(media / "broken.mov")
    catalog = _write_csv(tmp_path / "night.csv", ["good,good.mov,,", "broken,broken.mov,,"])
    result = CliRunner().invoke(app, ["catalog", str(catalog), "--media-root", str(media), "--out",
                                      str(tmp_path / "out"), "--parallel", "2", "--task-runner", "dask", "--json"])
    assert result.exit_code == 1, result.output  # a title failed
    summary = json.loads(result.stdout)  # the summary alone on stdout
    rows = {r["title"]: r for r in summary["titles"]}
    assert rows["good"]["status"] == "Completed" and rows["good"]["verdict"] == "PASS"
    assert abs(rows["good"]["loudness_after_lufs"] - (-23.0)) <= 1.0
    assert rows["broken"]["status"] == "Failed" and "no audio stream" in rows["broken"]["message"]
    assert (tmp_path / "out" / "good" / "qc" / "spectrograms.png").is_file()
    # Each title ran inside a Dask worker process, not in this one.
    assert {r["worker"].split(":")[0] for r in rows.values()} == {socket.gethostname()}
    assert all(int(r["worker"].split(":")[1]) != os.getpid() for r in rows.values())


# ----------------------------------------------------------------------------- without a Prefect API

def test_without_a_prefect_api_a_catalogue_runs_in_process_and_a_broken_title_fails_alone(
        tmp_path: Path, no_prefect_api: None) -> None:
    from filmrestore.demo import make_demo_clip
    from filmrestore.cli import app

    media = tmp_path / "media"
    make_demo_clip(media / "good.mov", duration_s=4.0, seed=5)
    silent_video(media / "broken.mov")
    catalog = _write_csv(tmp_path / "night.csv", ["good,good.mov,,", "broken,broken.mov,,"])
    result = CliRunner().invoke(app, ["catalog", str(catalog), "--media-root", str(media), "--out",
                                      str(tmp_path / "out"), "--parallel", "2", "--json"])
    assert result.exit_code == 1, result.output  # a title failed
    summary = json.loads(result.stdout)
    assert [r["title"] for r in summary["titles"]] == ["good", "broken"]  # catalogue order
    rows = {r["title"]: r for r in summary["titles"]}
    assert rows["good"]["status"] == "Completed" and rows["good"]["verdict"] == "PASS"
    assert abs(rows["good"]["loudness_after_lufs"] - (-23.0)) <= 1.0
    assert rows["broken"]["status"] == "Failed" and "no audio stream" in rows["broken"]["message"]
    assert json.loads((tmp_path / "out" / "night.summary.json").read_text())["titles"] == summary["titles"]
    assert "good/render done" in result.output  # two titles at once: each stage line names its title
    # Deployment runs and Dask need a server: refused in one line, before anything runs.
    refused = CliRunner().invoke(app, ["catalog", str(catalog), "--media-root", str(media), "--out",
                                       str(tmp_path / "out2"), "--mode", "deployment"])
    assert refused.exit_code == 2 and "runs on a Prefect server" in refused.output
    assert not (tmp_path / "out2" / "good").exists()


@pytest.mark.integration
def test_a_killed_catalogue_leaves_no_process_behind_and_its_rerun_completes(tmp_path: Path) -> None:
    """SIGKILL of the CLI mid-title: nothing it started (no server, no worker) outlives it."""
    import signal
    import sys

    import psutil

    from filmrestore.demo import make_demo_clip

    media = tmp_path / "media"
    make_demo_clip(media / "long.mov", duration_s=30.0, seed=6)
    catalog = _write_csv(tmp_path / "night.csv", ["long,long.mov,,"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cmd = [str(Path(sys.executable).with_name("filmrestore")), "catalog", str(catalog), "--media-root", str(media),
           "--out", str(tmp_path / "out")]
    log = tmp_path / "cli.log"
    with log.open("w") as out:
        cli = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while "restore done" not in log.read_text() and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cli.poll() is None, log.read_text()  # still running: separation is under way
        cli.send_signal(signal.SIGKILL)
        cli.wait()

    def left_behind() -> list[str]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.info["pid"]) == cli.pid:
                    found.append(" ".join(proc.info["cmdline"] or []))
            except (ProcessLookupError, PermissionError):
                continue
        return found

    deadline = time.monotonic() + 15  # an ffmpeg child may take a moment to notice its pipe closed
    while left_behind() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left_behind() == []
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "restore reused from a previous run" in rerun.stderr + rerun.stdout  # resumed, not redone
    assert (tmp_path / "out" / "long" / "adm.wav").is_file()
    # Finished now: the next night's batch answers the title from its run record, running nothing.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "long: finished with these options and unchanged since" in again.stderr and " reused " not in again.stderr


def test_a_site_can_make_cpu_separations_queue_for_the_gpu_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from filmrestore.tasks.separate import SLOT_SETTING, takes_slot

    monkeypatch.delenv(SLOT_SETTING, raising=False)
    assert not takes_slot(torch.device("cpu")) and takes_slot(torch.device("cuda", 0))
    monkeypatch.setenv(SLOT_SETTING, "always")
    assert takes_slot(torch.device("cpu"))
