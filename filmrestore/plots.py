"""The QC plots (PNG, matplotlib's Agg canvas, no pyplot state so titles may run in threads),
drawn into ``<title>/qc/``: short-term loudness over time before and after normalisation, a
spectrogram of each stem, and the 7.1.4 speaker map with each channel's true peak. Every
reader of audio here works on a bounded number of short windows, so memory does not grow
with the film."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from filmrestore import STEMS
from filmrestore.audio import read_audio, read_info
from filmrestore.manifest import StageManifest, write_json
from filmrestore.qc import loudness_series

if TYPE_CHECKING:
    from filmrestore.upmix.plan import ObjectPlan


PLOT_DIR = "qc"
#: zlib level 1: a sixth of the default level's encoding time for a few % more bytes.
PNG_OPTIONS = {"compress_level": 1}
SPECTROGRAM_COLUMNS = 600  # time columns per stem, whatever the film's length
SPECTROGRAM_FFT_FRAMES = 4096  # 85 ms at 48 kHz: 11.7 Hz bins

def stem_spectrogram(path: str | Path, n_columns: int = SPECTROGRAM_COLUMNS,
                     fft_frames: int = SPECTROGRAM_FFT_FRAMES, span: tuple[int, int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A QC spectrogram from ``n_columns`` Hann windows spread evenly over the file (or over
    ``span`` = ``(first_frame, n_frames)`` of it).

    Returns ``(times_s [shape=(n_columns,)], freqs_hz [shape=(fft_frames // 2 + 1,)],
    power_db [shape=(n_bins, n_columns)])``; channels are summed to mono. Reads one
    window per column, so memory is independent of the file's length.
    """
    info = read_info(path)
    first, n_frames = span if span is not None else (0, info.n_frames)
    n_columns = max(1, min(n_columns, n_frames // fft_frames))
    starts = first + np.linspace(0, max(n_frames - fft_frames, 0), n_columns).astype(np.int64)
    window = np.hanning(fft_frames).astype(np.float32)
    power = np.empty((fft_frames // 2 + 1, n_columns), dtype=np.float32)
    if span is not None:  # a bounded excerpt: read once, every window in one batched FFT
        x = read_audio(path, first, n_frames).sum(axis=0)
        x = np.pad(x, (0, max(0, fft_frames - x.shape[0])))
        frames = np.lib.stride_tricks.sliding_window_view(x, fft_frames)[starts - first]
        power[:] = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).T
    else:  # a whole film: one window read at a time
        for i, start in enumerate(starts):
            x = read_audio(path, int(start), fft_frames).sum(axis=0)
            x = np.pad(x, (0, fft_frames - x.shape[0]))
            power[:, i] = np.abs(np.fft.rfft(x * window)) ** 2
    # |X(f0)| = A sum(w) / 2 for a sine of amplitude A: scale so that a full-scale sine peaks at 0 dB.
    power_db = 10.0 * np.log10(np.maximum(4.0 * power / window.sum() ** 2, 1e-12))
    times_s = (starts + fft_frames / 2) / info.sample_rate_hz
    return times_s, np.fft.rfftfreq(fft_frames, 1.0 / info.sample_rate_hz), power_db


# ----------------------------------------------------------------------------- drawing

def _figure(width_in: float, height_in: float, rows: int = 1, left: float = 0.7, right: float = 0.2,
            top: float = 0.35, bottom: float = 0.55, gap: float = 0.45) -> Any:
    """A figure whose ``rows`` stacked axes leave fixed margins in inches (room for tick labels,
    axis labels and titles) and ``gap`` inches between them. Fixed margins, because
    matplotlib's constrained layout measures every text box again on each draw: a third of a
    figure's time."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    axes_in = (height_in - top - bottom - (rows - 1) * gap) / rows
    fig.subplots_adjust(left=left / width_in, right=1.0 - right / width_in, top=1.0 - top / height_in,
                        bottom=bottom / height_in, hspace=gap / axes_in)
    return fig


def clock_label(seconds: float, _position: object = None) -> str:
    """An axis label in film time: ``m:ss`` under an hour, ``h:mm:ss`` from an hour on."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


CLOCK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def _clock_axis(ax: Any) -> None:
    """Ticks on whole film-time steps (1 s to 1 h: at most about ten), labelled m:ss / h:mm:ss."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    low, high = ax.get_xlim()
    step = next((s for s in CLOCK_STEPS_S if (high - low) / s <= 10), CLOCK_STEPS_S[-1])
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(clock_label))


def plot_loudness(path: Path, series: dict[str, dict[str, list]], target_lufs: float | None) -> Path:
    """Short-term loudness (LUFS, 3 s) against film time, one line per series, with each second's
    momentary (400 ms) maximum as a thin line of the same colour; the target dashed."""
    fig = _figure(9, 3.4)
    ax = fig.add_subplot()
    for name, s in series.items():
        values = np.array([np.nan if v is None else v for v in s["short_term_lufs"]], dtype=float)
        (line,) = ax.plot(s["time_s"], values, label=f"{name} (short-term)", linewidth=1.4)
        if s.get("momentary_time_s"):
            peaks = np.array([np.nan if v is None else v for v in s["momentary_max_lufs"]], dtype=float)
            ax.plot(s["momentary_time_s"], peaks, color=line.get_color(), linewidth=0.6, alpha=0.5,
                    label=f"{name} (momentary max)")
    if target_lufs is not None:
        ax.axhline(target_lufs, color="k", linestyle="--", linewidth=0.8, label=f"target {target_lufs:.0f} LUFS")
    ax.set(xlabel="film time", ylabel="loudness (LUFS)", title="Loudness: short-term (3 s) and momentary maximum")
    _clock_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="x-small")
    fig.savefig(path, pil_kwargs=PNG_OPTIONS)
    return path


FREQUENCY_TICKS_HZ = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
DISPLAY_BANDS = 240  # log-spaced rows of a drawn spectrogram, 20 Hz to Nyquist (about 1/24 octave)


def log_frequency_rows(freqs_hz: np.ndarray, power_db: np.ndarray, n_rows: int = DISPLAY_BANDS,
                       low_hz: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample a spectrogram onto ``n_rows`` log-spaced frequencies from ``low_hz`` to the top
    bin: each row is the mean power of the FFT bins in its band, or the nearest bin where the
    band is narrower than one bin (low frequencies). What a log axis shows, at a fraction of
    the quads to draw. Returns ``(centres_hz [shape=(n_rows,)], power_db [shape=(n_rows, T)])``."""
    edges = np.geomspace(low_hz, freqs_hz[-1], n_rows + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    power = 10.0 ** (power_db / 10.0)
    lo, hi = np.searchsorted(freqs_hz, edges[:-1]), np.searchsorted(freqs_hz, edges[1:])
    nearest = np.clip(np.searchsorted(freqs_hz, centres), 0, len(freqs_hz) - 1)
    cumulative = np.vstack([np.zeros((1, power.shape[1])), np.cumsum(power, axis=0)])
    counts = (hi - lo)[:, None]
    mean = (cumulative[hi] - cumulative[lo]) / np.maximum(counts, 1)
    rows = np.where(counts > 0, mean, power[nearest])
    return centres, 10.0 * np.log10(np.maximum(rows, 1e-12))


def _frequency_axis(ax: Any, rows_hz: np.ndarray, title: str) -> None:
    """A log10(Hz) y axis with the fixed frequency ticks that lie in ``rows_hz``."""
    ticks = [t for t in FREQUENCY_TICKS_HZ if rows_hz[0] <= t <= rows_hz[-1]]
    ax.set_yticks(np.log10(ticks), [f"{t / 1000:g}k" if t >= 1000 else f"{t:g}" for t in ticks])
    ax.set(ylabel="Hz", title=title)


def plot_spectrograms(path: Path, stems: dict[str, Path]) -> Path:
    """One spectrogram panel per stem (dB, log frequency axis)."""
    fig = _figure(9, 2.4 * len(stems), rows=len(stems), right=0.2)
    axes = fig.subplots(len(stems), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (name, stem_path) in zip(axes, stems.items()):
        times_s, freqs_hz, power_db = stem_spectrogram(stem_path)
        rows_hz, rows_db = log_frequency_rows(freqs_hz, power_db)
        # Drawn on log10(Hz) with fixed ticks: matplotlib's log axis spends most of the figure's
        # time laying out its minor tick labels.
        image = ax.pcolormesh(times_s, np.log10(rows_hz), rows_db, shading="nearest", cmap="magma",
                              vmin=-100.0, vmax=-10.0, rasterized=True)
        _frequency_axis(ax, rows_hz, name)
    axes[-1].set_xlabel("film time")
    _clock_axis(axes[-1])
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="power (dB re full-scale sine)")
    fig.savefig(path, pil_kwargs=PNG_OPTIONS)
    return path


def plot_restoration(path: Path, source: Path, restored: Path, span: tuple[int, int]) -> Path:
    """Source before restoration, restored, and what restoration took out (source minus restored
    power, dB), over one excerpt (``span``: first frame, frames) at full time resolution: where
    a hum line, hiss or a click went, and that the programme stayed."""
    fig = _figure(9, 7.2, rows=3, right=0.35)
    axes = fig.subplots(3, 1, sharex=True)
    columns = max(1, min(SPECTROGRAM_COLUMNS, span[1] // 2048))
    spectra = [stem_spectrogram(p, columns, span=span) for p in (source, restored)]
    times_s, freqs_hz = spectra[0][0], spectra[0][1]
    (rows_hz, before), (_, after) = (log_frequency_rows(freqs_hz, db) for _, _, db in spectra)
    removed = np.clip(before - after, 0.0, 30.0)
    panels = [(before, "source (before restoration)", "magma", -100.0, -10.0),
              (after, "restored", "magma", -100.0, -10.0), (removed, "taken out (dB)", "viridis", 0.0, 30.0)]
    # Rows are log-spaced and columns evenly spaced: an image on (time, log10 Hz) is exact, and far
    # cheaper to draw than a mesh.
    log_hz = np.log10(rows_hz)
    half_t = (times_s[1] - times_s[0]) / 2 if len(times_s) > 1 else 0.5
    half_f = (log_hz[1] - log_hz[0]) / 2
    extent = (times_s[0] - half_t, times_s[-1] + half_t, log_hz[0] - half_f, log_hz[-1] + half_f)
    for ax, (data, title, cmap, lo, hi) in zip(axes, panels):
        image = ax.imshow(data, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=lo, vmax=hi,
                          interpolation="nearest")
        _frequency_axis(ax, rows_hz, title)
        fig.colorbar(image, ax=ax, label="dB", pad=0.01)
    axes[-1].set_xlabel("film time")
    _clock_axis(axes[-1])
    fig.savefig(path, pil_kwargs=PNG_OPTIONS)
    return path


def plot_layout(path: Path, peaks_dbtp: list[float | None], objects: list[ObjectPlan] | None = None) -> Path:
    """The 7.1.4 bed seen from above (front up, left on the left), each channel's true peak, and
    where the plan's objects play: a dot per object position (effect event objects as stars,
    with how many events they play)."""
    from filmrestore.layouts import BED_7_1_4
    from filmrestore.upmix.plan import EVENT_FEEDS

    fig = _figure(5.5, 5.5, left=0.1, right=0.1, top=0.6, bottom=0.1)
    ax = fig.add_subplot()
    ax.add_patch(_circle(1.0))
    ax.add_patch(_circle(0.6))
    for speaker, peak in zip(BED_7_1_4.speakers, list(peaks_dbtp) + [None] * BED_7_1_4.n_channels):
        height = speaker.elevation_deg > 0
        radius = 0.0 if speaker.is_lfe else (0.6 if height else 1.0)  # upper ring drawn inside
        az = np.radians(speaker.azimuth_deg)
        x, y = -radius * np.sin(az), radius * np.cos(az) - (0.25 if speaker.is_lfe else 0.0)
        ax.scatter([x], [y], s=380, marker="^" if height else ("s" if speaker.is_lfe else "o"),
                   c="tab:orange" if height else "tab:blue", edgecolors="k", zorder=3)
        label = f"{speaker.wave_name}\n{'–' if peak is None else f'{peak:.1f}'}"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(0, -26), ha="center", fontsize=8)
    for obj in objects or []:
        playing = [b for b in obj.blocks if b.gain > 0]
        spots = {(round(b.azimuth_deg), round(b.elevation_deg)) for b in playing}
        event = obj.feed in EVENT_FEEDS
        radius = 0.68 if event else 0.82  # inside the speaker ring, events inside the other objects
        for az, el in spots:
            r = radius * math.cos(math.radians(el))
            x, y = -r * math.sin(math.radians(az)), r * math.cos(math.radians(az))
            ax.scatter([x], [y], s=140 if event else 40, marker="*" if event else ".", zorder=4,
                       c="tab:red" if event else "tab:green")
            if event:
                ax.annotate(f"{len(playing)} events", (x, y), textcoords="offset points", xytext=(9, -3),
                            fontsize=7, color="tab:red")
    ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), aspect="equal",
           title="7.1.4 (4+7+0): true peak (dBTP); ● mid, ▲ upper, ■ LFE\n"
                 "objects: green dots, effect events: red stars")
    ax.text(0, 1.25, "screen", ha="center", fontsize=9)
    ax.axis("off")
    fig.savefig(path, pil_kwargs=PNG_OPTIONS)
    return path


def _circle(radius: float) -> Any:
    from matplotlib.patches import Circle

    return Circle((0, 0), radius, fill=False, linestyle=":", color="0.6")


def write_plots(title_dir: str | Path, qc: dict[str, Any], manifests: list[StageManifest]) -> dict[str, str]:
    """Draw the QC plots into ``<title>/qc/``; returns ``{name: path relative to the title folder}``."""
    title_dir = Path(title_dir)
    folder = title_dir / PLOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stages = {m.stage: m for m in manifests}
    # Plots depend only on the stages' outputs: a re-run with the same manifests keeps them.
    stamp, key = folder / "plots.key", "\n".join(sorted(m.cache_key for m in stages.values())) + "\n"
    previous = json.loads((folder / "plots.json").read_text()) if (folder / "plots.json").is_file() else None
    if previous and stamp.is_file() and stamp.read_text() == key and \
            all((title_dir / rel).is_file() for rel in previous.values()):
        return previous
    target = (stages["normalize"].report.get("spec") or {}).get("target_lufs") if "normalize" in stages else None
    plots = {"loudness": plot_loudness(folder / "loudness.png", loudness_series(stages), target)}
    stems = {name: title_dir / "stems" / f"{name}.wav" for name in STEMS}
    if all(p.is_file() for p in stems.values()):
        plots["spectrograms"] = plot_spectrograms(folder / "spectrograms.png", stems)
    before, after = title_dir / "work" / "soundtrack.wav", title_dir / "work" / "restored.wav"
    if before.is_file() and after.is_file() and stems["dialogue"].is_file():
        from filmrestore.qc_html import preview_window  # the excerpt the previews play

        plots["restoration"] = plot_restoration(folder / "restoration.png", before, after,
                                                preview_window(stems["dialogue"]))
    peaks = (qc["loudness"]["after"].get("bed_7.1.4") or {}).get("true_peak_per_channel_dbtp") or []
    objects = None
    if "plan" in stages and Path(stages["plan"].report.get("path", "")).is_file():
        from filmrestore.upmix.plan import load_plan

        objects = list(load_plan(stages["plan"].report["path"]).objects)
    plots["layout"] = plot_layout(folder / "layout.png", peaks, objects)
    relative = {name: str(path.relative_to(title_dir)) for name, path in plots.items()}
    write_json(folder / "plots.json", relative)
    stamp.write_text(key)
    return relative
