"""Title folders: the name a title's folder gets, and the record a finished run leaves in it.

A run of a title ends by writing ``.manifests/run.json``: what was asked (:func:`run_request`:
the source and its fingerprint, the output folder, every option that changes a deliverable, the
code and stage versions, the separator checkpoint's content hash), what the run returned, and the
size and modification time of every file in the title folder. Every run of the title removes the
record first (inside the title lock), so a run that stops part-way leaves none. Asked for the same
thing again while no file of the folder changed, the CLI answers from the record
(:func:`finished_run`) without starting the flow, where every stage would be reused anyway, after
importing the whole pipeline and hashing every deliverable again. Any difference (an option, the
source, a shipped model, a deleted, edited or touched file, ``plan.json`` included) means: run.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from filmrestore import DEFAULT_SEPARATOR

RUN_RECORD = ".manifests/run.json"
_NOT_STAMPED = {".lock", RUN_RECORD}  # the lock holds the pid of the latest run; the record itself
#: The run options that change what a title folder holds, with the ``restore_title`` flow's
#: defaults (a missing or None option is its default). The device is not one: CPU and GPU runs
#: give the same stems within tolerance, and the separate stage's own key leaves it out too.
REQUEST_OPTIONS: dict[str, Any] = {
    "preset": "ebu-r128", "separator": DEFAULT_SEPARATOR, "stream": None, "checkpoint": None, "target_lufs": None,
    "ceiling_dbtp": None, "gate": None, "adm_profile": "ebu", "remux": None, "separation_deployment": None,
    "shifts": None}


def title_folder(title: str) -> str:
    """A folder name that keeps a title's letters: accents transliterated, anything else that is
    not a letter, digit, ``.``, ``_`` or ``-`` becomes ``_`` (so no title leaves ``--out``):
    ``Ça tourne (version française) 1962`` -> ``Ca_tourne_version_francaise_1962``."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")[:128] or "title"


def title_names(source: str | Path, title: str | None) -> tuple[str, str]:
    """``(folder, display title)`` of a run: the title as given (by default the source's file
    name) and the folder name it gets (:func:`title_folder`)."""
    display = title or Path(source).stem
    return title_folder(display), display


def run_request(params: dict[str, Any]) -> dict[str, Any]:
    """What a run of a title is asked to make, as JSON values: equal requests make equal folders.

    ``params`` are the ``restore_title`` flow's keyword arguments: ``source`` and ``out`` as the
    flow receives them (absolute), ``title`` (the folder), ``display_title`` (None: the folder's
    name) and its options (:data:`REQUEST_OPTIONS` are kept, others ignored, missing ones their
    default). The separator's weights and their JSON settings enter by content: the checkpoint
    given, or for ``neural`` the one that ships.
    """
    from filmrestore import __version__
    from filmrestore.audio import fingerprint_source
    from filmrestore.resume import STAGE_VERSIONS
    from filmrestore.separation import weights_fingerprint

    kept = {name: default if params.get(name) is None else params[name] for name, default in REQUEST_OPTIONS.items()}
    weights = weights_fingerprint(kept["separator"], kept["checkpoint"], kept["shifts"])
    if weights["weights_settings"] is not None:
        # The shifts enter by the settings they resolve to: asking for the checkpoint's own is no change.
        kept["shifts"] = None
    source = params["source"]
    return {"source": str(source), "fingerprint": fingerprint_source(source), "out": str(params["out"]),
            "folder": params["title"], "display_title": params.get("display_title") or params["title"], "options": kept,
            **weights, "version": __version__, "stage_versions": dict(STAGE_VERSIONS)}


def file_stamps(title_dir: str | Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of every file in the title folder (lock and record aside)."""
    root = Path(title_dir)
    stamps = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel not in _NOT_STAMPED and (path.is_file() or path.is_symlink()):
            st = path.lstat()
            stamps[rel] = [st.st_size, st.st_mtime_ns]
    return stamps


def write_run_record(title_dir: str | Path, request: dict[str, Any], result: dict[str, Any]) -> None:
    """Record a finished run of the title (its last act: every file is in place)."""
    path = Path(title_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({"request": request, "result": result, "files": file_stamps(title_dir)}))
    os.replace(part, path)


def drop_run_record(title_dir: str | Path) -> None:
    """Forget the finished run (a run of the title is starting: it may change any file)."""
    (Path(title_dir) / RUN_RECORD).unlink(missing_ok=True)


def finished_run(title_dir: str | Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """What the last run of the title returned, if it was asked for ``request`` and no file of the
    folder changed since it finished; else None (the title must run)."""
    try:
        record = json.loads((Path(title_dir) / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("request") != request:
        return None
    if record.get("files") != file_stamps(title_dir):
        return None
    return record.get("result")
