"""Last stage, report: gather every stage's findings into qc.json, qc.md and qc.html, with plots
and listening previews (:mod:`filmrestore.qc`, :mod:`filmrestore.plots`,
:mod:`filmrestore.qc_html`), and publish them as Prefect artifacts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import task

from filmrestore.manifest import StageManifest, write_json
from filmrestore.plots import write_plots
from filmrestore.qc import PLOT_TITLES, build_qc, qc_markdown
from filmrestore.qc_html import write_previews


def artifact_markdown(qc: dict[str, Any], title_dir: str | Path) -> str:
    """qc.md for the Prefect UI: the plots embedded as PNG data URIs (the UI cannot read the title
    folder), each also named by its path."""
    import base64

    plots = qc.get("plots") or {}
    text = qc_markdown({**qc, "plots": {}})
    if plots:
        text += "\n## Plots\n"
        for name, rel in plots.items():
            path = Path(title_dir) / rel
            if path.is_file():
                uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
                text += f"\n### {PLOT_TITLES.get(name, name)}\n\n![{name}]({uri})\n\n`{path}`\n"
    return text


def write_qc(title_dir: str | Path, qc: dict[str, Any], previews: dict[str, Any] | None = None) -> dict[str, str]:
    """Write qc.json, qc.md and qc.html (with ``previews``, :func:`filmrestore.qc_html.write_previews`)
    atomically; returns their paths."""
    from filmrestore.qc_html import write_qc_html

    title_dir = Path(title_dir)
    json_path = write_json(title_dir / "qc.json", qc)
    md_path = title_dir / "qc.md"
    text = qc_markdown(qc)
    tmp = md_path.with_name(".qc.md.part")
    tmp.write_text(text)
    tmp.replace(md_path)
    html_path = write_qc_html(title_dir, text, previews or {})
    return {"qc.json": str(json_path), "qc.md": str(md_path), "qc.html": str(html_path)}


@task(name="report", retries=1)
def report_task(source: str, title_dir: str, manifests: list[StageManifest], title: str | None = None
                ) -> dict[str, Any]:
    """Prefect wrapper: write the QC files and publish them as artifacts (inside a Prefect run)."""
    from filmrestore.tasks.common import in_prefect_run

    qc = build_qc(source, title_dir, manifests, title)
    key = "\n".join(sorted(m.cache_key for m in manifests if m.cache_key))
    # The previews are ffmpeg encodes (other processes): they run while this thread draws the plots.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(write_previews, title_dir, key)
        qc["plots"] = write_plots(title_dir, qc, manifests)
        previews = pending.result()
    qc["previews"] = previews
    paths = write_qc(title_dir, qc, previews)
    if in_prefect_run():
        _publish(qc, title_dir)
    return {"title_dir": title_dir, "deliverables": {**qc["deliverables"], **paths}, "verdict": qc["verdict"],
            "warnings": qc["warnings"]}


def _publish(qc: dict[str, Any], title_dir: str) -> None:
    """The QC report and the loudness table as artifacts of the Prefect run (the UI shows them)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from filmrestore.tasks.common import artifact_key

    create_markdown_artifact(artifact_markdown(qc, title_dir), key=artifact_key(title_dir, "qc"),
                             description="QC report")
    rows = [{"signal": s, "when": w, **{k: r.get(k) for k in ("integrated_lufs", "dialogue_lufs", "true_peak_dbtp",
                                                               "lra_lu")}}
            for w in ("before", "after") for s, r in qc["loudness"][w].items()]
    create_table_artifact(rows, key=artifact_key(title_dir, "loudness"), description="Loudness before/after")
