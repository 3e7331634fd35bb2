"""--remux: the source's pictures, subtitles and chapters with the restored audio, in sync (real ffmpeg)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import read_audio
from filmrestore.errors import ConfigError
from filmrestore.flows.restore_title import run_restore_title, validate_options
from filmrestore.remux import AUDIO_TRACKS, remux

pytestmark = pytest.mark.integration

SR = 48_000
PICTURE_START_S = 0.5  # the picture starts half a second into the container's timeline


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _probe(path: Path, *entries: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *entries, str(path)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def _packet_md5s(path: Path) -> list[str]:
    """The video packets' MD5s, in order (ffmpeg's framemd5 of a stream copy)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framemd5",
                          "-"], capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Matroska file with H.264 pictures starting 0.5 s after its AAC soundtrack (French:
    speech-like chirps over a hum), SubRip subtitles, two chapters and a title."""
    tmp = tmp_path_factory.mktemp("film")
    (tmp / "subs.srt").write_text("1\n00:00:01,000 --> 00:00:02,500\nBonjour.\n\n"
                                  "2\n00:00:04,000 --> 00:00:05,000\nAu revoir.\n")
    (tmp / "chapters.txt").write_text(";FFMETADATA1\ntitle=Le Film\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=3000\n"
                                      "title=Un\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=3000\nEND=6000\ntitle=Deux\n")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24:duration=5.5", "-c:v", "libx264", "-preset",
            "ultrafast", str(tmp / "pictures.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "aevalsrc=0.2*sin(2*PI*(250*t+30*t*t))*(0.5+0.5*sin(2*PI*3*t))"
            "+0.05*sin(2*PI*50*t):s=48000:d=6", "-c:a", "aac", str(tmp / "sound.m4a"))
    src = tmp / "le film.mkv"
    _ffmpeg("-itsoffset", str(PICTURE_START_S), "-i", str(tmp / "pictures.mp4"), "-i", str(tmp / "sound.m4a"),
            "-i", str(tmp / "subs.srt"), "-i", str(tmp / "chapters.txt"),
            "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map_metadata", "3", "-map_chapters", "3",
            "-c", "copy", "-metadata:s:a:0", "language=fre", str(src))
    return src


@pytest.fixture(scope="module")
def restored(film: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_restore_title(film, tmp_path_factory.mktemp("out"), separator="dsp", device="cpu", remux="mkv")


def test_remux_copies_the_pictures_and_carries_every_deliverable(film: Path, restored: dict) -> None:
    path = Path(restored["deliverables"]["remux"])
    assert path == Path(restored["title_dir"]) / "remux.mkv" and path.is_file()
    assert _packet_md5s(path) == _packet_md5s(film)  # packet for packet
    streams = _probe(path, "-show_streams")["streams"]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    assert [s["channels"] for s in audio] == [12, 6, 2, 1]
    assert [s["codec_name"] for s in audio] == ["pcm_s24le", "flac", "flac", "flac"]
    assert [s["tags"]["language"] for s in audio] == ["fre", "fre", "fre", "zxx"]
    assert [s["tags"]["title"] for s in audio] == [title for _, title, _ in AUDIO_TRACKS]
    title_dir = Path(restored["title_dir"])
    for index, (name, _, _) in enumerate(AUDIO_TRACKS):  # lossless: the deliverable, sample for sample
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:a:{index}", "-f", "f32le", "-"],
                             capture_output=True, check=True).stdout
        ours = read_audio(title_dir / f"{name}.wav")
        theirs = np.frombuffer(raw, np.float32).reshape(-1, ours.shape[0]).T
        assert theirs.shape == ours.shape, name
        np.testing.assert_array_equal(theirs, ours, err_msg=name)


def test_remux_audio_starts_with_the_picture(film: Path, restored: dict) -> None:
    source = {s["codec_type"]: float(s["start_time"]) for s in _probe(film, "-show_streams")["streams"]}
    # (Matroska shifted the AAC priming, 21 ms, off the start: the picture is that much later still.)
    assert source["video"] - source["audio"] == pytest.approx(PICTURE_START_S, abs=0.03)
    streams = _probe(Path(restored["deliverables"]["remux"]), "-show_streams")["streams"]
    video = next(float(s["start_time"]) for s in streams if s["codec_type"] == "video")
    assert video == pytest.approx(source["video"] - min(source.values()), abs=0.002)
    for s in streams:
        if s["codec_type"] == "audio":  # sample 0 of each deliverable is the first picture
            assert float(s["start_time"]) == pytest.approx(video, abs=0.002), s["tags"]["title"]


def test_remux_keeps_subtitles_and_chapters_and_resumes(film: Path, restored: dict) -> None:
    path = Path(restored["deliverables"]["remux"])
    info = _probe(path, "-show_streams", "-show_chapters", "-show_format")
    subtitles = [s for s in info["streams"] if s["codec_type"] == "subtitle"]
    assert [s["codec_name"] for s in subtitles] == ["subrip"]
    assert [c["tags"]["title"] for c in info["chapters"]] == ["Un", "Deux"]
    assert info["format"]["tags"]["title"] == "Le Film"
    qc = json.loads((Path(restored["title_dir"]) / "qc.json").read_text())
    assert qc["stages"]["remux"]["report"]["subtitle_streams"] == 1 and qc["deliverables"]["remux"] == str(path)
    before = path.stat().st_mtime_ns
    run_restore_title(film, Path(restored["title_dir"]).parent, separator="dsp", device="cpu", remux="mkv")
    assert path.stat().st_mtime_ns == before  # reused, not rewritten


def test_quicktime_remux_keeps_the_bed_layout(film: Path, restored: dict, tmp_path: Path) -> None:
    title_dir = Path(restored["title_dir"])
    _, report = remux(film, {name: title_dir / f"{name}.wav" for name, _, _ in AUDIO_TRACKS}, tmp_path / "r.mov",
                      "fra", container="mov")
    streams = _probe(tmp_path / "r.mov", "-show_streams")["streams"]
    bed = next(s for s in streams if s["codec_type"] == "audio")
    assert bed["channel_layout"].endswith("(FL+FR+FC+LFE+BL+BR+SL+SR+TFL+TFR+TBL+TBR)")
    assert [s["codec_name"] for s in streams if s["codec_type"] == "subtitle"] == ["mov_text"]  # SubRip as text
    assert report["container"] == "mov" and report["subtitles_not_kept"] == []


def test_an_unknown_remux_container_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="unknown remux container 'avi'"):
        validate_options(separator="dsp", remux="avi")


def test_every_audio_stream_is_restored_and_remuxed_in_one_run(film: Path, tmp_path: Path) -> None:
    """--stream all on a film with a French soundtrack and an English stereo commentary: each
    stream its own deliverables and QC, the remux holds both sets, in sync, tagged."""
    from typer.testing import CliRunner

    from filmrestore.cli import app

    _ffmpeg("-f", "lavfi", "-i", "aevalsrc=0.1*sin(2*PI*400*t)*(0.5+0.5*sin(2*PI*2*t))|"
            "0.1*sin(2*PI*600*t)*(0.5+0.5*sin(2*PI*2*t)):s=48000:d=6", "-c:a", "aac", str(tmp_path / "comm.m4a"))
    two = tmp_path / "two.mkv"
    _ffmpeg("-i", str(film), "-i", str(tmp_path / "comm.m4a"), "-map", "0", "-map", "1:a", "-c", "copy",
            "-metadata:s:a:1", "language=eng", str(two))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(two), "--out", str(out), "--stream", "all", "--remux",
                                      "--separator", "dsp", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    title_dir, extra = out / "two", out / "two" / "streams" / "1_eng"
    assert [Path(s["title_dir"]) for s in summary["streams"]] == [extra]
    for folder, channels in ((title_dir, 1), (extra, 2)):
        assert read_audio(folder / "stems" / "dialogue.wav").shape[0] == channels
        assert (folder / "bed_7.1.4.wav").is_file() and (folder / "adm.wav").is_file()
        assert json.loads((folder / "qc.json").read_text())["verdict"]["pass"]
    remuxed = Path(summary["deliverables"]["remux"])
    assert _packet_md5s(remuxed) == _packet_md5s(film)
    audio = [s for s in _probe(remuxed, "-show_streams")["streams"] if s["codec_type"] == "audio"]
    assert [s["channels"] for s in audio] == [12, 6, 2, 1, 12, 6, 2, 2]  # each M&E as its stems: mono, stereo
    assert [s["tags"]["language"] for s in audio] == ["fre", "fre", "fre", "zxx", "eng", "eng", "eng", "zxx"]
    assert audio[4]["tags"]["title"] == f"{AUDIO_TRACKS[0][1]} (stream 1, eng)"
    video = next(float(s["start_time"]) for s in _probe(remuxed, "-show_streams")["streams"]
                 if s["codec_type"] == "video")
    ends = []
    for s in audio:
        assert float(s["start_time"]) == pytest.approx(video, abs=0.002)
        h, m, sec = s["tags"]["DURATION"].split(":")  # Matroska: the stream's end, HH:MM:SS.nnnnnnnnn
        ends.append(3600 * int(h) + 60 * int(m) + float(sec))
    assert max(ends) - min(ends) < 0.05  # both soundtracks end together, as in the source
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(remuxed), "-map", "0:a:4", "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    ours = read_audio(extra / "bed_7.1.4.wav")
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(-1, 12).T, ours)


def test_an_mpeg_program_stream_remuxes_in_sync(tmp_path: Path) -> None:
    """DVD/MPEG-2 program streams carry video packets without timestamps (Matroska refused them:
    "unknown timestamp") and a B-frame delay between decode and presentation time (a shift to the
    input's start left the audio 5-10 ms off the picture)."""
    src = tmp_path / "reel.mpg"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-f", "lavfi", "-i",
            "aevalsrc=0.2*sin(2*PI*300*t)*(0.6+0.4*sin(2*PI*3*t)):s=48000:d=4", "-c:v", "mpeg2video",
            "-c:a", "mp2", str(src))
    result = run_restore_title(src, tmp_path / "out", separator="dsp", device="cpu", remux="mkv")
    path = Path(result["deliverables"]["remux"])
    assert _packet_md5s(path) == _packet_md5s(src)
    source = {s["codec_type"]: float(s["start_time"]) for s in _probe(src, "-show_streams")["streams"]}
    streams = _probe(path, "-show_streams")["streams"]
    video = next(float(s["start_time"]) for s in streams if s["codec_type"] == "video")
    assert video == pytest.approx(source["video"], abs=0.002)  # the source's own timeline
    for s in streams:
        if s["codec_type"] == "audio":
            assert float(s["start_time"]) == pytest.approx(video, abs=0.001), s["tags"]["title"]
