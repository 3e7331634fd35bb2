"""Last stage, report: gather every stage's findings into qc.json and qc.md, with plots.

The plots (PNG, matplotlib's Agg canvas, no pyplot state so titles may run in
threads) go to ``<title>/qc/``: short-term loudness over time before and after
normalisation, a spectrogram of each stem, and the 7.1.4 speaker map with each
channel's true peak. qc.md links them; every reader of audio here works on a
bounded number of short windows, so memory does not grow with the film.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from filmrestore import __version__
from filmrestore import STEMS
from filmrestore.audio import read_audio, read_info
from filmrestore.manifest import StageManifest, write_json

PLOT_DIR = "qc"
SPECTROGRAM_COLUMNS = 600  # time columns per stem, whatever the film's length
SPECTROGRAM_FFT_FRAMES = 4096  # 85 ms at 48 kHz: 11.7 Hz bins
SERIES_KEYS = {"before": ("normalize", "before_series"), "after": ("render", "after_series")}


def build_qc(source: str | Path, title_dir: str | Path, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The QC document: per stage its timing, parameters and findings; loudness; the verdict."""
    stages = {m["stage"]: StageManifest.from_dict(m) for m in manifests}
    rendered = stages["render"]
    return {
        "title": Path(title_dir).name,
        "source": str(source),
        "filmrestore_version": __version__,
        "stages": {
            name: {"elapsed_s": m.report.get("elapsed_s"), "params": m.params, "report": m.report}
            for name, m in stages.items()
        },
        "loudness": {
            "before": stages["normalize"].report.get("before", {}),
            "after": rendered.report.get("after", {}),
            "gain_db": stages["normalize"].report.get("gain_db"),
        },
        "verdict": rendered.report.get("verdict", {}),
        "foldown_check": rendered.report.get("foldown_check", {}),
        "deliverables": {name: rec.path for name, rec in rendered.files.items()},
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def qc_markdown(qc: dict[str, Any]) -> str:
    """A human-readable QC report (also shown as a Prefect markdown artifact)."""
    verdict = qc["verdict"]
    lines = [
        f"# QC: {qc['title']}",
        "",
        f"Source: `{qc['source']}`  ",
        f"Preset: **{verdict.get('preset', '?')}** — **{'PASS' if verdict.get('pass') else 'FAIL'}** "
        f"({verdict.get('summary', '')})",
        "",
        "## Stages",
        "",
        "| stage | time (s) | findings |",
        "| --- | ---: | --- |",
    ]
    for name, stage in qc["stages"].items():
        findings = {k: v for k, v in stage["report"].items() if k != "elapsed_s" and not isinstance(v, (dict, list))}
        lines.append(f"| {name} | {_fmt(stage['elapsed_s'])} | {', '.join(f'{k}={v}' for k, v in findings.items())} |")
    lines += _restoration_lines((qc["stages"].get("restore") or {}).get("report") or {})
    lines += ["", "## Loudness", "", "| signal | when | integrated (LUFS) | true peak (dBTP) | LRA (LU) | dialogue (LUFS) |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for when in ("before", "after"):
        for signal, r in qc["loudness"][when].items():
            lines.append(
                f"| {signal} | {when} | {_fmt(r.get('integrated_lufs'))} | {_fmt(r.get('true_peak_dbtp'))} "
                f"| {_fmt(r.get('lra_lu'))} | {_fmt(r.get('dialogue_lufs'))} |"
            )
    lines += ["", f"Programme gain: {_fmt(qc['loudness']['gain_db'], ' dB')}", ""]
    check = qc.get("foldown_check") or {}
    if check:
        lines += ["## Fold-down check", "",
                  f"Stereo fold-down vs input mix, worst octave band: {_fmt(check.get('max_abs_diff_db'), ' dB')} "
                  f"({'ok' if check.get('pass') else 'too far'})", ""]
    lines += _plot_lines(qc.get("plots") or {})
    lines += ["## Deliverables", ""] + [f"- `{name}`: `{path}`" for name, path in qc["deliverables"].items()]
    return "\n".join(lines) + "\n"


def _restoration_lines(report: dict[str, Any]) -> list[str]:
    """What the restore stage found (hum, clicks, hiss) and whether it applied each repair."""
    if "applied" not in report:
        return []
    applied = set(report["applied"])
    hum, clicks, hiss = report.get("hum") or {}, report.get("clicks") or {}, report.get("hiss") or {}
    hum_found = hum.get("fundamental_hz") is not None
    rows = [
        ("hum", "dehum", hum_found,
         f"{_fmt(hum.get('fundamental_exact_hz'), ' Hz')}, harmonics {hum.get('harmonic_numbers')}, "
         f"strongest {_fmt(hum.get('level_dbfs'), ' dBFS')}" if hum_found else "no mains series"),
        ("clicks", "declick", bool(clicks.get("detected")),
         f"{clicks.get('n_clicks', 0)} in {_fmt(clicks.get('analysed_s'), ' s')} analysed "
         f"({_fmt(clicks.get('rate_per_min'))}/min); {report.get('clicks_repaired', 0)} repaired in the programme"),
        ("hiss", "dehiss", bool(hiss.get("detected")),
         f"floor {_fmt(hiss.get('floor_dbfs'), ' dBFS')}, {_fmt(hiss.get('headroom_db'), ' dB')} below the "
         f"programme, spread {_fmt(hiss.get('spread_db'), ' dB')}, flatness {_fmt(hiss.get('flatness'))}"),
    ]
    channels = report.get("channels") or {}
    if channels.get("correlation") is not None:  # stereo: a lost side or a reversed polarity
        fault = channels.get("fault")
        repair = {"dead-channel": "copy-live-channel", "polarity": "fix-polarity"}.get(fault or "", "")
        rows.insert(0, ("channels", repair, fault is not None,
                        f"{fault or 'none'}; levels {channels.get('levels_dbfs')} dBFS, "
                        f"correlation {channels['correlation']:.2f}"))
    lines = ["", "## Restoration", "", "| damage | found | measured | repair |", "| --- | --- | --- | --- |"]
    for name, repair, found, measured in rows:
        lines.append(f"| {name} | {'yes' if found else 'no'} | {measured} | {repair if repair in applied else '–'} |")
    return lines


_PLOT_TITLES = {"loudness": "Loudness over time", "spectrograms": "Stem spectrograms",
                "layout": "7.1.4 layout: true peak per channel"}


def _plot_lines(plots: dict[str, str]) -> list[str]:
    """Markdown image links, relative to the title folder (where qc.md lies)."""
    lines: list[str] = []
    for name, rel in plots.items():
        lines += [f"## {_PLOT_TITLES.get(name, name)}", "", f"![{name}]({rel})", ""]
    return lines


# ----------------------------------------------------------------------------- plot data

def loudness_series(stages: dict[str, StageManifest]) -> dict[str, dict[str, list]]:
    """Short-term loudness series (1 s steps) of the bed before and after normalisation.

    Read from the normalize/render manifests (``report["before_series"|"after_series"]
    ["bed_7.1.4"]``, as :meth:`LoudnessReport.series_to_dict` writes): those stages'
    meters already saw every sample, so nothing is measured again here.
    """
    series: dict[str, dict[str, list]] = {}
    for when, (stage, key) in SERIES_KEYS.items():
        found = (stages[stage].report.get(key) or {}).get("bed_7.1.4") if stage in stages else None
        if found and found.get("time_s"):
            series[f"bed_7.1.4 {when}"] = found
    return series


def stem_spectrogram(path: str | Path, n_columns: int = SPECTROGRAM_COLUMNS,
                     fft_frames: int = SPECTROGRAM_FFT_FRAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A QC spectrogram from ``n_columns`` Hann windows spread evenly over the file.

    Returns ``(times_s [shape=(n_columns,)], freqs_hz [shape=(fft_frames // 2 + 1,)],
    power_db [shape=(n_bins, n_columns)])``; channels are summed to mono. Reads one
    window per column, so memory is independent of the file's length.
    """
    info = read_info(path)
    n_columns = max(1, min(n_columns, info.n_frames // fft_frames))
    starts = np.linspace(0, max(info.n_frames - fft_frames, 0), n_columns).astype(np.int64)
    window = np.hanning(fft_frames).astype(np.float32)
    power = np.empty((fft_frames // 2 + 1, n_columns), dtype=np.float32)
    for i, start in enumerate(starts):
        x = read_audio(path, int(start), fft_frames).sum(axis=0)
        x = np.pad(x, (0, fft_frames - x.shape[0]))
        power[:, i] = np.abs(np.fft.rfft(x * window)) ** 2
    # |X(f0)| = A sum(w) / 2 for a sine of amplitude A: scale so that a full-scale sine peaks at 0 dB.
    power_db = 10.0 * np.log10(np.maximum(4.0 * power / window.sum() ** 2, 1e-12))
    times_s = (starts + fft_frames / 2) / info.sample_rate_hz
    return times_s, np.fft.rfftfreq(fft_frames, 1.0 / info.sample_rate_hz), power_db


# ----------------------------------------------------------------------------- drawing

def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def plot_loudness(path: Path, series: dict[str, dict[str, list]], target_lufs: float | None) -> Path:
    """Short-term loudness (LUFS) against time, one line per series, the target dashed."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    for name, s in series.items():
        values = np.array([np.nan if v is None else v for v in s["short_term_lufs"]], dtype=float)
        ax.plot(s["time_s"], values, label=name, linewidth=1.2)
    if target_lufs is not None:
        ax.axhline(target_lufs, color="k", linestyle="--", linewidth=0.8, label=f"target {target_lufs:.0f} LUFS")
    ax.set(xlabel="time (s)", ylabel="short-term loudness (LUFS)", title="Short-term loudness (3 s window)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path)
    return path


def plot_spectrograms(path: Path, stems: dict[str, Path]) -> Path:
    """One spectrogram panel per stem (dB, log frequency axis)."""
    fig = _figure(9, 2.4 * len(stems))
    axes = fig.subplots(len(stems), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (name, stem_path) in zip(axes, stems.items()):
        times_s, freqs_hz, power_db = stem_spectrogram(stem_path)
        keep = freqs_hz >= 20.0
        image = ax.pcolormesh(times_s, freqs_hz[keep], power_db[keep], shading="nearest", cmap="magma",
                              vmin=-100.0, vmax=-10.0, rasterized=True)
        ax.set_yscale("log")
        ax.set(ylabel="Hz", title=name)
    axes[-1].set_xlabel("time (s)")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="power (dB re full-scale sine)")
    fig.savefig(path)
    return path


def plot_layout(path: Path, peaks_dbtp: list[float | None]) -> Path:
    """The 7.1.4 bed seen from above (front up, left on the left), each channel's true peak."""
    from filmrestore.upmix.layouts import BED_7_1_4

    fig = _figure(5.5, 5.5)
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
    ax.set(xlim=(-1.35, 1.35), ylim=(-1.35, 1.35), aspect="equal",
           title="7.1.4 (4+7+0): true peak (dBTP); ● mid, ▲ upper, ■ LFE")
    ax.text(0, 1.25, "screen", ha="center", fontsize=9)
    ax.axis("off")
    fig.savefig(path)
    return path


def _circle(radius: float) -> Any:
    from matplotlib.patches import Circle

    return Circle((0, 0), radius, fill=False, linestyle=":", color="0.6")


def write_plots(title_dir: str | Path, qc: dict[str, Any], manifests: list[dict[str, Any]]) -> dict[str, str]:
    """Draw the QC plots into ``<title>/qc/``; returns ``{name: path relative to the title folder}``."""
    title_dir = Path(title_dir)
    folder = title_dir / PLOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stages = {m["stage"]: StageManifest.from_dict(m) for m in manifests}
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
    peaks = (qc["loudness"]["after"].get("bed_7.1.4") or {}).get("true_peak_per_channel_dbtp") or []
    plots["layout"] = plot_layout(folder / "layout.png", peaks)
    relative = {name: str(path.relative_to(title_dir)) for name, path in plots.items()}
    write_json(folder / "plots.json", relative)
    stamp.write_text(key)
    return relative


def artifact_markdown(qc: dict[str, Any], title_dir: str | Path) -> str:
    """qc.md for the Prefect UI: the plots named by their full paths (the UI cannot show local files)."""
    plots = qc.get("plots") or {}
    listed = {name: str(Path(title_dir) / rel) for name, rel in plots.items()}
    text = qc_markdown({**qc, "plots": {}})
    if listed:
        text += "\n## Plots\n\n" + "\n".join(f"- {_PLOT_TITLES.get(n, n)}: `{p}`" for n, p in listed.items()) + "\n"
    return text


def write_qc(title_dir: str | Path, qc: dict[str, Any]) -> dict[str, str]:
    """Write qc.json and qc.md atomically; returns their paths."""
    title_dir = Path(title_dir)
    json_path = write_json(title_dir / "qc.json", qc)
    md_path = title_dir / "qc.md"
    tmp = md_path.with_name(".qc.md.part")
    tmp.write_text(qc_markdown(qc))
    tmp.replace(md_path)
    return {"qc.json": str(json_path), "qc.md": str(md_path)}


@task(name="report", retries=1)
def report_task(source: str, title_dir: str, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """Prefect wrapper: write the QC files and publish them as artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from filmrestore.tasks.common import artifact_key

    qc = build_qc(source, title_dir, manifests)
    qc["plots"] = write_plots(title_dir, qc, manifests)
    paths = write_qc(title_dir, qc)
    create_markdown_artifact(artifact_markdown(qc, title_dir), key=artifact_key(title_dir, "qc"),
                             description="QC report")
    rows = [{"signal": s, "when": w, **{k: r.get(k) for k in ("integrated_lufs", "true_peak_dbtp", "lra_lu")}}
            for w in ("before", "after") for s, r in qc["loudness"][w].items()]
    create_table_artifact(rows, key=artifact_key(title_dir, "loudness"), description="Loudness before/after")
    return {"title_dir": title_dir, "deliverables": {**qc["deliverables"], **paths}, "verdict": qc["verdict"]}
