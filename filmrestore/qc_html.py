"""``qc.html``: the QC report as one self-contained page to look at and listen to.

The page is qc.md rendered (the ``markdown`` package, tables included) with the QC plots
embedded, and audio players for short previews of the source before restoration, the
restored mix, each stem, the M&E and the stereo fold-down of the bed: one excerpt of the
same span for all of them (the ``PREVIEW_S`` seconds with the most dialogue, so the previews
can be compared with each other), compressed to MP3 through pydub (ffmpeg). Plots and audio
are ``data:`` URIs, so the file can be mailed or archived on its own. The previews also stay
in ``qc/previews/`` for players that want files.

A small script counts the players whose audio the browser could decode
(``<body data-audio-ready="N" data-audio-errors="M">``), which is what the headless-browser
test reads.
"""

from __future__ import annotations

import base64
import html
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from filmrestore.audio import iter_blocks, read_audio, read_info, read_layout

PREVIEW_S = 30.0
PREVIEW_DIR = "qc/previews"
#: (name, label, file under the title folder) of every preview, in page order.
PREVIEWS: tuple[tuple[str, str, str], ...] = (
    ("source", "Source (before restoration)", "work/soundtrack.wav"),
    ("restored", "Restored mix", "work/restored.wav"),
    ("dialogue", "Dialogue stem", "stems/dialogue.wav"),
    ("music", "Music stem", "stems/music.wav"),
    ("effects", "Effects stem", "stems/effects.wav"),
    ("me", "M&E (music and effects)", "stems/me.wav"),
    ("stereo", "Stereo fold-down of the 7.1.4 bed (delivered level)", "foldown/stereo.wav"),
)
_BITRATE = {1: "96k", 2: "160k"}

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
img { max-width: 100%; border: 1px solid #ddd; }
code { font-size: 90%; }
.previews td:first-child { white-space: nowrap; }
audio { width: 22rem; }
"""

_SCRIPT = """
(function () {
  const players = Array.from(document.querySelectorAll('audio'));
  let ready = 0, errors = 0;
  const show = () => { document.body.dataset.audioReady = ready; document.body.dataset.audioErrors = errors; };
  players.forEach(a => {
    a.addEventListener('loadedmetadata', () => { if (isFinite(a.duration) && a.duration > 0) ready++; show(); });
    a.addEventListener('error', () => { errors++; show(); });
    a.load();
  });
  show();
})();
"""


def preview_window(dialogue_path: str | Path, seconds: float = PREVIEW_S) -> tuple[int, int]:
    """``(first_frame, n_frames)`` of the ``seconds`` of the programme with the most dialogue
    energy (the whole programme when it is shorter), on a one-second grid."""
    info = read_info(dialogue_path)
    rate = info.sample_rate_hz
    n_frames = min(info.n_frames, int(round(seconds * rate)))
    energy = np.array([float(np.sum(np.square(b, dtype=np.float64))) for b in iter_blocks(dialogue_path, rate)])
    width = max(1, int(round(n_frames / rate)))
    if energy.size <= width:
        return 0, n_frames
    sums = np.convolve(energy, np.ones(width), "valid")
    first = int(np.argmax(sums)) * rate
    return first, min(n_frames, info.n_frames - first)


def write_preview(wav: Path, mp3: Path, first_frame: int, n_frames: int) -> Path:
    """An MP3 of ``n_frames`` of ``wav`` from ``first_frame``, through pydub: mono and stereo as they
    are, more channels as their stereo fold-down (what a browser can play)."""
    import warnings

    with warnings.catch_warnings():  # pydub imports audioop, deprecated since Python 3.11 (audioop-lts on 3.13)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment

    from filmrestore.upmix.foldown import downmix_to_stereo

    rate = read_info(wav).sample_rate_hz
    x = read_audio(wav, first_frame, n_frames)
    if x.shape[0] > 2:
        x = downmix_to_stereo(x, read_layout(wav))
    pcm = (np.clip(x.T, -1.0, 1.0) * 32767.0).astype("<i2")
    segment = AudioSegment(pcm.tobytes(), sample_width=2, frame_rate=rate, channels=x.shape[0])
    mp3.parent.mkdir(parents=True, exist_ok=True)
    tmp = mp3.with_name(f".{mp3.name}.part")
    # LAME's fastest algorithm (compression_level 9): a listening preview, a third of the time.
    segment.export(tmp, format="mp3", bitrate=_BITRATE[x.shape[0]], parameters=["-compression_level", "9"])
    tmp.replace(mp3)
    return mp3


def write_previews(title_dir: str | Path, key: str, seconds: float = PREVIEW_S) -> dict[str, Any]:
    """Write every preview of :data:`PREVIEWS` whose file exists; ``{"window_s": [start, end],
    "files": {name: path relative to the title folder}}``. Kept when ``key`` (the stages' cache
    keys) has not changed since the last run."""
    title_dir = Path(title_dir)
    folder = title_dir / PREVIEW_DIR
    index = folder / "previews.json"
    if index.is_file():
        previous = json.loads(index.read_text())
        if previous.get("key") == key and all((title_dir / rel).is_file() for rel in previous["files"].values()):
            return {k: v for k, v in previous.items() if k != "key"}
    dialogue = title_dir / "stems" / "dialogue.wav"
    first, n_frames = preview_window(dialogue, seconds) if dialogue.is_file() else (0, 0)
    todo = [(name, title_dir / rel) for name, _, rel in PREVIEWS if (title_dir / rel).is_file() and n_frames]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each encode is an ffmpeg process: both cores
        done = pool.map(lambda item: write_preview(item[1], folder / f"{item[0]}.mp3", first, n_frames), todo)
        files = {name: str(path.relative_to(title_dir)) for (name, _), path in zip(todo, done)}
    rate = read_info(dialogue).sample_rate_hz if dialogue.is_file() else 48_000
    result = {"window_s": [first / rate, (first + n_frames) / rate], "files": files}
    folder.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({**result, "key": key}, indent=2))
    return result


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def qc_html(title_dir: str | Path, qc_md: str, previews: dict[str, Any]) -> str:
    """The page: ``qc_md`` rendered, its images inlined, and the preview players."""
    import markdown

    title_dir = Path(title_dir)
    body = markdown.markdown(qc_md, extensions=["tables"], output_format="html")

    def inline(match: re.Match[str]) -> str:
        path = title_dir / html.unescape(match.group(1))
        return f'src="{_data_uri(path, "image/png")}"' if path.is_file() else match.group(0)

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    rows = []
    for name, label, _ in PREVIEWS:
        rel = previews.get("files", {}).get(name)
        if rel:
            uri = _data_uri(title_dir / rel, "audio/mpeg")
            rows.append(f'<tr><td>{html.escape(label)}</td><td><audio controls preload="metadata" '
                        f'data-preview="{name}" src="{uri}"></audio></td></tr>')
    start, end = previews.get("window_s", [0.0, 0.0])
    listen = ""
    if rows:
        listen = (f'<h2>Listen</h2><p>The same excerpt of every signal, {_clock(start)} to {_clock(end)} '
                  f'(the span with the most dialogue).</p><table class="previews">{"".join(rows)}</table>')
    title = re.search(r"<h1>(.*?)</h1>", body)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title.group(1) if title else 'QC'}</title><style>{_STYLE}</style></head>"
            f"<body>{body}{listen}<script>{_SCRIPT}</script></body></html>\n")


def _clock(seconds: float) -> str:
    """``hh:mm:ss`` of a time in seconds."""
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def write_qc_html(title_dir: str | Path, qc_md: str, previews: dict[str, Any]) -> Path:
    """Write ``qc.html`` into the title folder under a temporary name, renamed when complete."""
    path = Path(title_dir) / "qc.html"
    tmp = path.with_name(".qc.html.part")
    tmp.write_text(qc_html(title_dir, qc_md, previews), encoding="utf-8")
    tmp.replace(path)
    return path
