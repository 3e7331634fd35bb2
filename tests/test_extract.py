"""Extract stage: real ffmpeg on tiny clips that the tests make with ffmpeg's lavfi sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import read_audio
from filmrestore.errors import CorruptMediaError, EmptyAudioError, NoAudioStreamError
from filmrestore.media import extract_audio, probe_audio_streams

SR = 48_000
VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration={d}"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def make_clip(path: Path, audio_inputs: list[list[str]], duration_s: float = 1.0,
              acodec: str = "pcm_s16le", video: bool = True, extra: tuple[str, ...] = ()) -> Path:
    """A clip with an optional test-pattern video and one stream per audio input."""
    args: list[str] = []
    maps: list[str] = []
    if video:
        args += [a.format(d=duration_s) for a in VIDEO]
        maps += ["-map", "0:v"]
    for i, audio in enumerate(audio_inputs):
        args += audio
        maps += ["-map", f"{i + int(video)}:a"]
    vcodec = ["-c:v", "mpeg4"] if video else []
    ffmpeg(*args, *maps, *vcodec, "-c:a", acodec, *extra, str(path))
    return path


def sine(freq_hz: float, duration_s: float = 1.0, rate_hz: int = SR) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq_hz}:sample_rate={rate_hz}:duration={duration_s}"]


def tones(freqs_hz: list[float], layout: str, duration_s: float = 1.0) -> list[str]:
    exprs = "|".join(f"0.25*sin(2*PI*{f}*t)" for f in freqs_hz)
    return ["-f", "lavfi", "-i", f"aevalsrc={exprs}:s={SR}:c={layout}:d={duration_s}"]


def dominant_hz(x: np.ndarray, rate_hz: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate_hz / x.size)


def onset_s(x: np.ndarray, threshold: float, rate_hz: int = SR) -> float:
    return float(np.argmax(np.abs(x) > threshold) / rate_hz)


def test_mono_stays_mono(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "mono.mkv", [sine(1000)])
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)
    assert (record.n_channels, record.sample_rate_hz, record.n_frames) == (1, SR, SR)
    assert report["codec"] == "pcm_s16le" and report["start_offset_s"] == 0.0
    assert abs(dominant_hz(y[0]) - 1000) < 2
    assert abs(np.sqrt(np.mean(y[0] ** 2)) - 0.125 / np.sqrt(2)) < 1e-3  # lavfi sine: amplitude 1/8


def test_stereo_keeps_channel_order(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "st.mkv", [tones([440, 880], "stereo")])
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)
    assert y.shape == (2, SR) and report["channel_layout"] == "stereo"
    assert [round(dominant_hz(ch)) for ch in y] == [440, 880]


def test_five_one_gives_six_channels(tmp_path: Path) -> None:
    freqs = [300, 500, 700, 900, 1100, 1300]
    clip = make_clip(tmp_path / "51.mov", [tones(freqs, "5.1")], acodec="pcm_s24le")  # mov keeps the layout
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)
    assert y.shape == (6, SR) and report["channel_layout"].startswith("5.1")
    assert [round(dominant_hz(ch)) for ch in y] == freqs


def test_44k1_is_resampled_to_48k_with_exact_duration(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "441.mkv", [sine(1000, 1.5, 44_100)], duration_s=1.5)
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)
    assert report["original_sample_rate_hz"] == 44_100 and record.sample_rate_hz == SR
    assert abs(record.duration_s - 1.5) <= 0.001
    assert abs(dominant_hz(y[0, SR // 4: SR // 4 + SR]) - 1000) < 1.5


@pytest.mark.parametrize(("suffix", "acodec"), [("mkv", "pcm_s16le"), ("mov", "aac")])
def test_late_audio_is_padded_to_the_picture_zero(tmp_path: Path, suffix: str, acodec: str) -> None:
    audio = ["-itsoffset", "0.5", *sine(1000, 1.0)]
    clip = make_clip(tmp_path / f"late.{suffix}", [audio], duration_s=1.5, acodec=acodec)
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)[0]
    assert abs(report["start_offset_s"] - 0.5) < 0.025  # AAC's priming shows in the declared start
    assert np.max(np.abs(y[: int(0.47 * SR)])) < 1e-4  # AAC smears a little pre-echo into 0.478..0.5 s
    assert abs(onset_s(y, 0.05) - 0.5) <= 0.005
    assert abs(record.duration_s - 1.5) <= 0.005


def test_stream_option_picks_the_second_audio_stream(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "two.mkv", [sine(440), sine(1000)])
    streams, zero_s = probe_audio_streams(clip)
    assert [s.audio_index for s in streams] == [0, 1] and [s.index for s in streams] == [1, 2]
    assert zero_s == 0.0
    first, _ = extract_audio(clip, tmp_path / "a0.wav")
    second, report = extract_audio(clip, tmp_path / "a1.wav", stream=1)
    assert round(dominant_hz(read_audio(first.path)[0])) == 440
    assert round(dominant_hz(read_audio(second.path)[0])) == 1000
    assert report["stream_index"] == 2


def test_stream_out_of_range_lists_the_available_streams(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "two.mkv", [sine(440), sine(1000)])
    with pytest.raises(NoAudioStreamError, match=r"no audio stream #2; available: #0 .*#1 ") as err:
        extract_audio(clip, tmp_path / "out.wav", stream=2)
    assert err.value.path == clip
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".*.part"))


def test_no_audio_stream_names_the_file(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "silent_film.mkv", [])
    with pytest.raises(NoAudioStreamError, match="silent_film.mkv: no audio stream"):
        extract_audio(clip, tmp_path / "out.wav")


def test_text_file_renamed_mov_is_corrupt(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mov"
    fake.write_text("this is not a film\n" * 50)
    with pytest.raises(CorruptMediaError, match=r"notes.mov: ffprobe cannot read it: (moov atom not found|Invalid data)"):
        extract_audio(fake, tmp_path / "out.wav")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorruptMediaError, match="nowhere.mov: file not found"):
        probe_audio_streams(tmp_path / "nowhere.mov")


@pytest.mark.parametrize("suffix", ["mkv", "mov"])
def test_truncated_file_is_reported(tmp_path: Path, suffix: str) -> None:
    clip = make_clip(tmp_path / f"whole.{suffix}", [sine(1000, 2.0)], duration_s=2.0)
    data = clip.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    # mkv keeps its header: the decode stops early; mov loses its index (moov at the end).
    with pytest.raises(CorruptMediaError, match=r"cut\.(mkv: truncated: decoded 0\.|mov: ffprobe cannot)"):
        extract_audio(cut, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists() and not list(tmp_path.glob(".*.part"))


def test_audio_stream_without_samples_is_empty(tmp_path: Path) -> None:
    audio = ["-f", "lavfi", "-i", f"anullsrc=r={SR}:cl=mono"]
    clip = make_clip(tmp_path / "empty.mkv", [audio], extra=("-frames:a", "0", "-t", "1"))
    with pytest.raises(EmptyAudioError, match="empty.mkv: the audio stream decodes to zero samples"):
        extract_audio(clip, tmp_path / "out.wav")


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "p.mkv", [sine(1000, 2.0)], duration_s=2.0)
    calls: list[tuple[int, int]] = []
    record, _ = extract_audio(clip, tmp_path / "out.wav", on_progress=lambda d, t: calls.append((d, t)))
    assert calls and all(t == record.n_frames for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] >= 0.9 * record.n_frames


def test_early_audio_is_trimmed_to_the_picture_zero(tmp_path: Path) -> None:
    # Audio from 0 s with a tone from 0.4 s; the picture starts at 0.25 s (6 frames) -> tone at 0.15 s.
    audio = ["-f", "lavfi", "-i", f"aevalsrc=if(gte(t\\,0.4)\\,0.25*sin(2*PI*1000*t)\\,0):s={SR}:d=1.3"]
    video = ["-itsoffset", "0.25", *[a.format(d=1.0) for a in VIDEO]]
    clip = tmp_path / "early.mkv"
    ffmpeg(*video, *audio, "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-c:a", "pcm_s16le", str(clip))
    record, report = extract_audio(clip, tmp_path / "out.wav")
    y = read_audio(record.path)[0]
    assert abs(report["zero_time_s"] - 0.25) < 1e-3 and abs(report["start_offset_s"] + 0.25) < 1e-3
    assert abs(onset_s(y, 0.05) - 0.15) <= 0.005
    assert abs(record.duration_s - 1.05) <= 0.005


@pytest.mark.parametrize(("suffix", "acodec", "rate_hz"), [("webm", "libvorbis", 44_100), ("mkv", "libvorbis", 22_050),
                                                           ("webm", "libopus", 48_000), ("flv", "libmp3lame", 22_050),
                                                           ("avi", "pcm_u8", 22_050), ("mov", "pcm_mulaw", 8_000)])
def test_legacy_codecs_decode_without_gaps(tmp_path: Path, suffix: str, acodec: str, rate_hz: int) -> None:
    """A steady stereo tone through a lossy codec and a container with coarse (1 ms) or odd
    timestamps comes out steady: no inserted silence, no level change (Vorbis in WebM once
    came out 90 % zeros when alignment and SoX resampling shared one aresample filter)."""
    tone = ["-f", "lavfi", "-i", f"sine=frequency=997:sample_rate={rate_hz}:duration=4,volume=0.5"]
    video = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=4"]
    vcodec = {"webm": "libvpx", "flv": "flv"}.get(suffix, "mpeg4")
    src = tmp_path / f"clip.{suffix}"
    ffmpeg(*video, *tone, "-map", "0:v", "-map", "1:a", "-c:v", vcodec, "-c:a", acodec, "-ac", "2", str(src))
    extract_audio(src, tmp_path / "out.wav")
    y = read_audio(tmp_path / "out.wav")
    assert y.shape[0] == 2
    body = y[:, SR // 2: 3 * SR]
    frame_rms = np.sqrt(np.mean(body.reshape(2, -1, 480) ** 2, axis=-1))  # 10 ms frames
    plain = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-f", "f32le", "-"], capture_output=True,
                           check=True).stdout  # ffmpeg's own decode, at the stream's rate
    reference = np.frombuffer(plain, np.float32).reshape(-1, 2)[rate_hz // 2: 3 * rate_hz]
    expected = np.sqrt(np.mean(reference ** 2))
    assert np.all(np.abs(20 * np.log10(frame_rms / expected)) < 1.0), (frame_rms.min(), expected)
    assert abs(dominant_hz(body[0]) - 997.0) < 2.0


def _damage_packets(src: Path, dst: Path, after_s: float, every: int, count: int) -> list[float]:
    """Copy ``src`` with the payload of ``count`` audio packets (every ``every``-th after ``after_s``)
    overwritten by random bytes, as a damaged transfer leaves them; returns their timestamps."""
    import ffmpeg as ffmpeg_python

    packets = ffmpeg_python.probe(str(src), select_streams="a:0", show_entries="packet=pts_time,pos,size")["packets"]
    hit = [p for p in packets if float(p["pts_time"]) > after_s][::every][:count]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    for p in hit:
        pos, size = int(p["pos"]), int(p["size"])
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return [float(p["pts_time"]) for p in hit]


def test_damaged_packets_become_reported_gaps_and_the_rest_stays_in_sync(tmp_path: Path) -> None:
    # A chirp: tonal (the AAC decoder's noise substitution, whose random state a lost frame
    # changes, stays out of it) and never periodic (a shift shows).
    chirp = ["-f", "lavfi", "-i", f"aevalsrc=0.3*sin(2*PI*(300*t+40*t*t)):s={SR}:d=6"]
    clean = make_clip(tmp_path / "clean.mp4", [chirp], duration_s=6.0, acodec="aac")
    damaged = tmp_path / "damaged.mp4"
    hit_s = _damage_packets(clean, damaged, after_s=3.0, every=3, count=8)
    _, clean_report = extract_audio(clean, tmp_path / "clean.wav")
    _, report = extract_audio(damaged, tmp_path / "damaged.wav")
    assert clean_report["gaps"] == [] and clean_report["gaps_total_s"] == 0.0
    frame_s = 1024 / SR  # one AAC frame
    gaps = report["gaps"]
    assert 1 <= len(gaps) <= 8 and all(abs(g["duration_s"] % frame_s) < 1e-3 or
                                       abs(g["duration_s"] % frame_s - frame_s) < 1e-3 for g in gaps)
    assert all(min(abs(g["at_s"] - t) for t in hit_s) < 1e-3 for g in gaps)  # where the damage is
    assert report["gaps_total_s"] == pytest.approx(sum(g["duration_s"] for g in gaps))
    a, b = read_audio(tmp_path / "clean.wav")[0], read_audio(tmp_path / "damaged.wav")[0]
    assert a.shape == b.shape  # every sample after the damage is still at its timestamp
    after = slice(int((max(hit_s) + 0.2) * SR), a.size - SR // 10)
    np.testing.assert_allclose(b[after], a[after], atol=1e-4)
    for g in gaps:  # the lost frames are silence, not shifted audio
        hole = b[int((g["at_s"] + 0.002) * SR): int((g["at_s"] + g["duration_s"] - 0.002) * SR)]
        assert hole.size and np.abs(hole).max() < 1e-4
