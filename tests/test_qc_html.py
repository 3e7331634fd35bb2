"""qc.html: the QC report to look at and listen to, opened in a real headless Chromium."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from filmrestore.audio import write_audio
from filmrestore.qc_html import PREVIEW_S, PREVIEWS, preview_window


class _Media(HTMLParser):
    """The ``src`` of every <audio> and <img>, and the <body> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[str] = []
        self.images: list[str] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "audio":
            self.audio.append(a.get("src") or "")
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "body":
            self.body = a


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the qc.html test (.ci/run installs it)")
        pytest.skip("no Chromium on this machine")
    return found


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--mute-audio", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def title(demo_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from filmrestore.flows.restore_title import run_restore_title

    result = run_restore_title(demo_clip, tmp_path_factory.mktemp("out"), "clip", separator="dsp", device="cpu")
    return Path(result["title_dir"])


def test_qc_html_is_self_contained_with_every_plot_and_preview(title: Path, tmp_path: Path) -> None:
    page = _Media()
    page.feed((title / "qc.html").read_text())
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.audio) == len(PREVIEWS)
    for i, src in enumerate(page.audio):
        assert src.startswith("data:audio/mpeg;base64,")
        mp3 = tmp_path / f"{i}.mp3"
        mp3.write_bytes(base64.b64decode(src.split(",", 1)[1]))
        duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                         "csv=p=0", str(mp3)], capture_output=True, text=True, check=True).stdout)
        assert duration == pytest.approx(min(PREVIEW_S, 12.0), abs=0.1)  # the demo clip is 12 s


def test_qc_html_opens_in_chromium_with_playable_previews_and_plots(title: Path, tmp_path: Path) -> None:
    dom = _browser("--virtual-time-budget=15000", "--dump-dom", (title / "qc.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Media()
    page.feed(dom.stdout)
    assert page.body.get("data-audio-ready") == str(len(PREVIEWS)), page.body  # every player decoded its audio
    assert page.body.get("data-audio-errors") == "0"
    shot = tmp_path / "qc.png"
    run = _browser("--window-size=1280,4000", "--virtual-time-budget=5000", f"--screenshot={shot}",
                   (title / "qc.html").as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    # Text and tables are grey; the plots (colour maps, coloured curves) are what is saturated.
    saturated = (pixels.max(axis=-1) - pixels.min(axis=-1) > 0.3).mean()
    assert saturated > 0.02, saturated


def test_the_preview_window_is_the_span_with_the_most_dialogue(tmp_path: Path) -> None:
    rate, n = 48_000, 90 * 48_000
    x = np.zeros((1, n), np.float32)
    x[0, 50 * rate:65 * rate] = 0.1 * np.random.default_rng(0).standard_normal(15 * rate)
    write_audio(tmp_path / "d.wav", x, rate)
    first, n_frames = preview_window(tmp_path / "d.wav", 30.0)
    assert n_frames == 30 * rate and first <= 50 * rate and first + n_frames >= 65 * rate
    write_audio(tmp_path / "short.wav", x[:, :10 * rate], rate)
    assert preview_window(tmp_path / "short.wav", 30.0) == (0, 10 * rate)


def test_previews_are_kept_when_nothing_changed(title: Path) -> None:
    from filmrestore.qc_html import write_previews

    folder = title / "qc" / "previews"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")}
    key = (folder / "previews.json").read_text()
    import json

    write_previews(title, json.loads(key)["key"])
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")} == before
