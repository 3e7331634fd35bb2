"""The QC document of a title: every stage's findings gathered into ``qc.json``'s dict and
rendered as ``qc.md`` (markdown tables: stages, restoration, loudness, verdict, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filmrestore import __version__
from filmrestore.loudness.specs import spec_label
from filmrestore.manifest import StageManifest

SHORT_WARNING_S = 0.01  # a stream ending this much before its declared end is said (codec padding is less)


def build_qc(source: str | Path, title_dir: str | Path, manifests: list[StageManifest],
             title: str | None = None) -> dict[str, Any]:
    """The QC document: per stage its timing, parameters and findings; loudness; the verdict.
    ``title`` is the title as written (default: the folder's name)."""
    stages = {m.stage: m for m in manifests}
    rendered = stages["render"]
    return {
        "title": title or Path(title_dir).name,
        "folder": Path(title_dir).name,
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
        "warnings": qc_warnings(stages),
        "foldown_check": rendered.report.get("foldown_check", {}),
        "bed_channels": rendered.report.get("bed_channels", []),
        "deliverables": {name: rec.path for name, rec in rendered.files.items()}
        | ({"remux": stages["remux"].files["remux"].path} if "remux" in stages else {}),
    }


def qc_warnings(stages: dict[str, StageManifest]) -> list[str]:
    """What a delivery engineer must hear about although the deliverables were written: audio
    the decoder lost (filled with silence at its timestamps, so sync holds) and a stream that
    ends short of its declared length."""
    extract = stages["extract"].report if "extract" in stages else {}
    warnings = []
    gaps = extract.get("gaps") or []
    if gaps:
        shown = ", ".join(f"{g['at_s']:.3f} s ({1000 * g['duration_s']:.0f} ms)" for g in gaps[:5])
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        warnings.append(f"{len(gaps)} gap(s) in the decoded audio stream (damaged or missing packets), "
                        f"{1000 * extract.get('gaps_total_s', 0.0):.0f} ms in all, filled with silence at "
                        f"their timestamps so the rest stays in sync: at {shown}{more}")
    if (extract.get("short_by_s") or 0.0) >= SHORT_WARNING_S:
        warnings.append(f"the audio stream ends {1000 * extract['short_by_s']:.0f} ms before the end its "
                        "container declares")
    return warnings


def _finding(value: Any) -> str:
    """A stage's finding as a person reads it: floats to 3 decimals at most (not 16 digits)."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


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
        f"Preset: **{spec_label({'name': verdict.get('preset', '?'), 'based_on': verdict.get('based_on')})}** — "
        f"**{'PASS' if verdict.get('pass') else 'FAIL'}** "
        f"({verdict.get('summary', '')})",
        "",
    ]
    if qc.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in qc["warnings"]] + [""]
    # One bullet per stage (a list wraps where a table cell would be cut off in the Prefect UI).
    lines += ["## Stages", ""]
    for name, stage in qc["stages"].items():
        findings = {k: v for k, v in stage["report"].items() if k != "elapsed_s" and not isinstance(v, (dict, list))}
        listed = ", ".join(f"{k}={_finding(v)}" for k, v in findings.items())
        lines.append(f"- **{name}** ({_fmt(stage['elapsed_s'], ' s')}){': ' + listed if listed else ''}")
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
    if qc.get("bed_channels"):
        lines += ["## 7.1.4 bed channels", "", "| channel | BS.2051 | plays |", "| --- | --- | --- |"]
        lines += [f"| {r['channel']} | {r['label']} | {r['plays']} |" for r in qc["bed_channels"]] + [""]
    lines += _plot_lines(qc.get("plots") or {})
    lines += ["## Deliverables", ""] + [f"- `{name}`: `{path}`" for name, path in qc["deliverables"].items()]
    return "\n".join(lines) + "\n"


def _restoration_lines(report: dict[str, Any]) -> list[str]:
    """What the restore stage found (DC offset, hum, clicks, hiss) and whether it applied each repair."""
    if "applied" not in report:
        return []
    applied = set(report["applied"])
    hum, clicks, hiss = report.get("hum") or {}, report.get("clicks") or {}, report.get("hiss") or {}
    hum_found = hum.get("fundamental_hz") is not None
    dc = report.get("dc") or {}
    rows = [
        ("dc offset", "remove-dc", bool(dc.get("detected")),
         f"per channel {dc.get('offsets_dbfs')} dBFS" if dc else "not measured"),
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


PLOT_TITLES = {"loudness": "Loudness over time", "spectrograms": "Stem spectrograms",
               "restoration": "Source versus restored (the excerpt of the previews)",
                "layout": "7.1.4 layout: true peak per channel"}


def _plot_lines(plots: dict[str, str]) -> list[str]:
    """Markdown image links, relative to the title folder (where qc.md lies)."""
    lines: list[str] = []
    for name, rel in plots.items():
        lines += [f"## {PLOT_TITLES.get(name, name)}", "", f"![{name}]({rel})", ""]
    return lines


# ----------------------------------------------------------------------------- plot data

def loudness_series(stages: dict[str, StageManifest]) -> dict[str, dict[str, list]]:
    """Loudness series (1 s steps) to plot: the restored mix before the programme gain (what the
    source sounds like) and the delivered 7.1.4 bed; a normalize manifest without the mix's
    series gives the bed before the gain instead.

    Read from the normalize/render manifests (``report["before_series"|"after_series"]``, as
    :meth:`LoudnessReport.series_to_dict` writes): those stages' meters already saw every
    sample, so nothing is measured again here.
    """
    series: dict[str, dict[str, list]] = {}
    before = (stages["normalize"].report.get("before_series") or {}) if "normalize" in stages else {}
    if (before.get("mix") or {}).get("time_s"):
        series["restored mix, before the gain"] = before["mix"]
    elif (before.get("bed_7.1.4") or {}).get("time_s"):
        series["bed_7.1.4 before"] = before["bed_7.1.4"]
    after = ((stages["render"].report.get("after_series") or {}) if "render" in stages else {}).get("bed_7.1.4")
    if after and after.get("time_s"):
        series["bed_7.1.4 after"] = after
    return series
