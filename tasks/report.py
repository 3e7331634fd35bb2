"""Last stage, report: gather every stage's findings into qc.json and qc.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from filmrestore import __version__
from filmrestore.manifest import StageManifest, write_json


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
    lines += ["## Deliverables", ""] + [f"- `{name}`: `{path}`" for name, path in qc["deliverables"].items()]
    return "\n".join(lines) + "\n"


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
    paths = write_qc(title_dir, qc)
    create_markdown_artifact(qc_markdown(qc), key=artifact_key(title_dir, "qc"), description="QC report")
    rows = [{"signal": s, "when": w, **{k: r.get(k) for k in ("integrated_lufs", "true_peak_dbtp", "lra_lu")}}
            for w in ("before", "after") for s, r in qc["loudness"][w].items()]
    create_table_artifact(rows, key=artifact_key(title_dir, "loudness"), description="Loudness before/after")
    return {"title_dir": title_dir, "deliverables": {**qc["deliverables"], **paths}, "verdict": qc["verdict"]}
