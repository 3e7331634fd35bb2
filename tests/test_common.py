"""Shared pieces: the streaming writer, manifests, cache keys and resume from disk."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from filmrestore.audio import (AudioWriter, hash_audio_data, iter_blocks, partial_path, read_audio, read_info,
                               to_pcm24_bytes, write_audio)
from filmrestore.errors import AudioFormatError, OutputNotWritableError
from filmrestore.manifest import FileRecord, StageManifest
from filmrestore.resume import load_valid_manifest, run_stage, stage_key


def _noise(n_channels: int, n_frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n_channels, n_frames)) * 0.2).astype(np.float32)


def _channel_mask(path: Path) -> int:
    raw = path.read_bytes()[:200]
    fmt = raw.index(b"fmt ")
    return struct.unpack("<I", raw[fmt + 8 + 20 : fmt + 8 + 24])[0]


@pytest.mark.parametrize("subtype, tol", [("FLOAT", 0.0), ("PCM_24", 2.0**-23)])
def test_writer_round_trip(tmp_path: Path, subtype: str, tol: float) -> None:
    x = _noise(2, 10_000)
    write_audio(tmp_path / "x.wav", x, 48_000, subtype)
    y = read_audio(tmp_path / "x.wav")
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol


def _pcm24_reference(block: np.ndarray) -> bytes:
    """24-bit packing spelled out in numpy: scale, clip, round half to even, three low bytes."""
    scaled = np.clip(block.T * np.float32(2**23), -(2**23), 2**23 - 1)
    with np.errstate(invalid="ignore"):
        ints = np.ascontiguousarray(np.rint(scaled), dtype="<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pcm24_packing_equals_the_numpy_formulation(dtype: type) -> None:
    x = _noise(13, 5_000).astype(dtype)
    edges = [np.nan, np.inf, -np.inf, 1.0, -1.0, 1.5, -1.5, 0.0, -0.0, 1e-30, 0.99999994, -0.99999994]
    ties = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2**23 - 0.5, 2**23 - 0.75]) / 2**23
    x[0, :len(edges) + len(ties)] = np.concatenate([edges, ties])
    for block in (x, x[2:7, 11:]):  # contiguous, and a strided view
        assert bytes(to_pcm24_bytes(block)) == _pcm24_reference(block)


def test_writer_blocks_equal_whole_and_hash_is_stable(tmp_path: Path) -> None:
    x = _noise(12, 9_999)
    whole = write_audio(tmp_path / "a.wav", x, 48_000, "PCM_24")
    with AudioWriter(tmp_path / "b.wav", 48_000, 12) as w:
        for start in range(0, x.shape[1], 1234):
            w.write(x[:, start : start + 1234])
    assert w.content_hash == whole
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert _channel_mask(tmp_path / "a.wav") == 0x2D63F
    assert sf.info(str(tmp_path / "a.wav")).channels == 12


def test_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    with pytest.raises(RuntimeError):
        with AudioWriter(target, 48_000, 1) as w:
            w.write(_noise(1, 100))
            raise RuntimeError("crash mid-write")
    assert not target.exists() and not partial_path(target).exists()


def test_unwritable_output_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match=str(blocker)):
        AudioWriter(blocker / "x.wav", 48_000, 1)


def test_read_info_rejects_non_audio(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wav"
    bogus.write_text("hello")
    with pytest.raises(AudioFormatError, match="bogus.wav"):
        read_info(bogus)


def test_iter_blocks_covers_the_file(tmp_path: Path) -> None:
    x = _noise(1, 5_000)
    write_audio(tmp_path / "x.wav", x, 48_000)
    blocks = list(iter_blocks(tmp_path / "x.wav", 777))
    assert np.array_equal(np.concatenate(blocks, axis=1), x)


def test_stage_key_depends_on_content_not_on_report(tmp_path: Path) -> None:
    rec = FileRecord("/a.wav", 48_000, 1, 10, "h1")
    m1 = StageManifest("restore", {"restored": rec}, report={"elapsed_s": 1.0}).to_dict()
    m2 = StageManifest("restore", {"restored": rec}, report={"elapsed_s": 9.0}).to_dict()
    m3 = StageManifest("restore", {"restored": FileRecord("/a.wav", 48_000, 1, 10, "h2")}).to_dict()
    assert stage_key("separate", {"in": m1, "sep": "dsp"}) == stage_key("separate", {"in": m2, "sep": "dsp"})
    assert stage_key("separate", {"in": m1, "sep": "dsp"}) != stage_key("separate", {"in": m3, "sep": "dsp"})
    assert stage_key("separate", {"in": m1, "sep": "dsp"}) != stage_key("separate", {"in": m1, "sep": "x"})


def test_run_stage_resumes_and_redoes_missing_outputs(tmp_path: Path) -> None:
    calls = []

    def compute() -> StageManifest:
        calls.append(1)
        h = write_audio(tmp_path / "o.wav", _noise(1, 100), 48_000)
        return StageManifest("restore", {"restored": FileRecord(str(tmp_path / "o.wav"), 48_000, 1, 100, h)})

    params = {"x": 1}
    first, reused1 = run_stage(tmp_path, "restore", params, compute)
    second, reused2 = run_stage(tmp_path, "restore", params, compute)
    assert (reused1, reused2, len(calls)) == (False, True, 1)
    assert second.files == first.files
    (tmp_path / "o.wav").unlink()
    assert load_valid_manifest(tmp_path, "restore", stage_key("restore", params)) is None
    run_stage(tmp_path, "restore", params, compute)
    assert len(calls) == 2
    run_stage(tmp_path, "restore", {"x": 2}, compute)
    assert len(calls) == 3


@pytest.mark.parametrize("damage", ["truncate", "random_bytes", "delete"])
def test_reuse_re_verifies_content_and_redoes_a_damaged_stage(tmp_path: Path, damage: str) -> None:
    """A reused stage's files are re-hashed: a truncated file, random bytes in the samples or a
    missing file make the stage run again (and say so), never a silent reuse."""
    path = tmp_path / "work" / "out.wav"
    runs = []

    def compute() -> StageManifest:
        runs.append(1)
        write_audio(path, _noise(2, 48_000), 48_000)
        return StageManifest("restore", {"out": FileRecord.from_path(path)})

    first, reused = run_stage(tmp_path, "restore", {"x": 1}, compute)
    assert not reused and first.file("out").content_hash == hash_audio_data(path)
    assert run_stage(tmp_path, "restore", {"x": 1}, compute)[1]  # intact: reused, not hashed into a redo
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-3000])
    elif damage == "random_bytes":
        raw = bytearray(path.read_bytes())
        raw[-6000:-3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(raw))
    else:
        path.unlink()
    again, reused = run_stage(tmp_path, "restore", {"x": 1}, compute)
    assert not reused and len(runs) == 2
    assert again.report.get("redone_because_damaged") == [str(path)]
    assert hash_audio_data(path) == again.file("out").content_hash


def test_the_data_hash_of_a_file_is_the_hash_its_writer_computed(tmp_path: Path) -> None:
    x = _noise(3, 20_001)
    written = write_audio(tmp_path / "a.wav", x, 48_000, "PCM_24")
    assert hash_audio_data(tmp_path / "a.wav") == written == FileRecord.from_path(tmp_path / "a.wav").content_hash
    (tmp_path / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioFormatError, match="b.wav: has no data chunk"):
        hash_audio_data(tmp_path / "b.wav")


def test_a_second_run_of_a_title_is_refused_while_the_first_holds_its_lock(tmp_path: Path,
                                                                          title_locked_elsewhere: Any) -> None:
    """Two real processes: the holder's pid is named; the OS frees the lock when the holder dies."""
    from filmrestore.errors import TitleBusyError
    from filmrestore.resume import title_lock

    title_dir = tmp_path / "out" / "reel"
    with title_locked_elsewhere(title_dir) as holder:
        with pytest.raises(TitleBusyError, match=rf"{title_dir}: is being written by another run \(pid {holder.pid}\)"):
            with title_lock(title_dir):
                pass
    with title_lock(title_dir):  # released by the OS when its holder was killed
        with pytest.raises(TitleBusyError):  # and a second holder in this process is refused too
            with title_lock(title_dir):
                pass


@pytest.mark.parametrize("change", ["option", "source", "edited", "touched", "added", "deleted", "dropped"])
def test_a_run_record_answers_only_the_same_request_over_an_unchanged_folder(tmp_path: Path, change: str) -> None:
    """The record of a finished run gives its result back for the same request while every file of
    the title folder is as the run left it; any other option or source, or any file edited,
    touched, added or removed (or the record dropped by a starting run), and the title must run."""
    import os

    from filmrestore.titles import drop_run_record, finished_run, run_request, write_run_record

    source = tmp_path / "film.mov"
    source.write_bytes(b"picture and sound" * 1000)
    title_dir = tmp_path / "out" / "film"
    write_audio(title_dir / "bed_7.1.4.wav", _noise(12, 4800), 48_000)
    (title_dir / "plan.json").write_text("{}")
    options = {"preset": "ebu-r128", "separator": "dsp", "device": "cpu"}
    base = {"source": source, "out": tmp_path / "out", "title": "film", "display_title": "Film"}
    request = run_request({**base, **options})
    result = {"title_dir": str(title_dir), "verdict": {"pass": True}}
    write_run_record(title_dir, request, result)
    assert finished_run(title_dir, request) == result
    # The device is not part of what a run makes; the same request comes back equal.
    assert finished_run(title_dir, run_request({**base, **options, "device": "cuda"})) == result
    if change == "option":
        request = run_request({**base, **options, "preset": "netflix"})
    elif change == "source":
        source.write_bytes(b"another cut" * 1000)
        request = run_request({**base, **options})
    elif change == "edited":
        (title_dir / "plan.json").write_text('{"objects": []}')
    elif change == "touched":
        st = (title_dir / "bed_7.1.4.wav").stat()
        os.utime(title_dir / "bed_7.1.4.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == "added":
        (title_dir / "stems").mkdir()
        (title_dir / "stems" / "extra.wav").write_bytes(b"")
    elif change == "deleted":
        (title_dir / "bed_7.1.4.wav").unlink()
    else:
        drop_run_record(title_dir)
    assert finished_run(title_dir, request) is None


def test_a_run_request_holds_the_shifts_a_run_resolves_to(tmp_path: Path) -> None:
    """Asking for the shifts the checkpoint already uses is the same request as asking for none
    (the title is not run again); other shifts, or other shifts in the checkpoint's JSON, are not."""
    import json

    from filmrestore.separation.bandsplit import BandSplitConfig, BandSplitNet
    from filmrestore.separation.checkpoint import config_path, save_checkpoint
    from filmrestore.titles import run_request

    source = tmp_path / "film.mov"
    source.write_bytes(b"picture and sound" * 1000)
    net = BandSplitNet(BandSplitConfig(dim=8, n_layers=1, mask_hidden=8, dilations=(1,)))
    weights = save_checkpoint(tmp_path / "m.safetensors", net, inference={"mask_power": 0.9})
    base = {"source": source, "out": tmp_path / "out", "title": "film", "separator": "neural",
            "checkpoint": str(weights)}
    asked = {shifts: run_request({**base, "shifts": shifts}) for shifts in (None, 1, 2)}
    assert asked[1] == asked[None]
    assert asked[2] != asked[None]
    doc = json.loads(config_path(weights).read_text())
    config_path(weights).write_text(json.dumps({**doc, "inference": {"mask_power": 0.9, "shifts": 2}}))
    assert run_request({**base, "shifts": 2}) == run_request(base) != asked[None]


def test_a_run_request_takes_the_title_flows_defaults() -> None:
    """An option left out of a request is the ``restore_title`` flow's default, as the flow runs it."""
    import inspect

    from filmrestore.flows.restore_title import restore_title
    from filmrestore.titles import REQUEST_OPTIONS

    defaults = {k: p.default for k, p in inspect.signature(restore_title.fn).parameters.items()}
    assert {k: defaults[k] for k in REQUEST_OPTIONS} == REQUEST_OPTIONS
