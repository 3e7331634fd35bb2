"""Resume from disk: cache keys and stage manifests.

A stage's outputs live under the title folder, and beside them a manifest
``.manifests/<stage>.json`` that records the stage's cache key: a hash of its
inputs' content hashes, its parameters and the code version. A stage whose
manifest matches the key it would compute, with all files still present, is
not recomputed. This works with or without a Prefect server, and after a
crash (outputs are renamed into place only when complete).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filmrestore import __version__
from filmrestore.audio import CONTENT_HASH, hash_audio_data
from filmrestore.errors import AudioFormatError, TitleBusyError
from filmrestore.manifest import StageManifest

MANIFEST_DIR = ".manifests"
QC_FILES = ("qc.json", "qc.md", "qc.html")  # the title's report: removed when a stage is redone, written last

# Bump a stage's version when its numerics change, so cached outputs are redone.
STAGE_VERSIONS = {
    "extract": 3,  # 3: reports gaps in the decoded stream
    "restore": 2,
    "separate": 2,  # 2: the last segment ends with the signal (no zero padding)
    "plan": 2,  # 2: effect events are objects of their own
    "normalize": 7,  # 4: measures the bed with the plan stage's plan; 5: changed presets are custom; 6, 7: see render
    "render": 7,  # 6: a multichannel source's channels are kept in place; 7: event objects split from the effects
    "remux": 2,  # 2: source timestamps kept (-copyts, +genpts): program streams remux, in sync
    "report": 2,
}


def _key_material(value: Any) -> Any:
    """Reduce a parameter to what identifies its content (manifests -> file hashes)."""
    if isinstance(value, StageManifest):
        value = value.to_dict()
    if isinstance(value, dict) and "files" in value and "stage" in value:
        return {name: rec["content_hash"] for name, rec in value["files"].items()}
    if isinstance(value, dict):
        return {k: _key_material(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_key_material(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def stage_key(stage: str, params: dict[str, Any]) -> str:
    """Cache key of a stage run: stage, its code version, inputs' content hashes, parameters."""
    material = {
        "stage": stage,
        "stage_version": STAGE_VERSIONS[stage],
        "code_version": __version__,
        "content_hash": CONTENT_HASH,  # another algorithm: another key (the stage is redone, not "damaged")
        "params": _key_material(params),
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return f"{stage}-{hashlib.blake2b(blob, digest_size=16).hexdigest()}"


def manifest_path(title_dir: str | Path, stage: str) -> Path:
    return Path(title_dir) / MANIFEST_DIR / f"{stage}.json"


def load_valid_manifest(title_dir: str | Path, stage: str, key: str) -> StageManifest | None:
    """The stage's manifest on disk if it was made with ``key`` and every file it names is still
    there with the content it was written with (see :func:`damaged_files`)."""
    manifest = _matching_manifest(title_dir, stage, key)
    if manifest is None or damaged_files(manifest):
        return None
    return manifest


def _matching_manifest(title_dir: str | Path, stage: str, key: str) -> StageManifest | None:
    path = manifest_path(title_dir, stage)
    if not path.is_file():
        return None
    try:
        manifest = StageManifest.load(path, root=title_dir)
    except (ValueError, KeyError, OSError):
        return None  # a damaged manifest means: redo the stage
    return manifest if manifest.cache_key == key else None


# Content hashes verified in this process, by (path, size, mtime): a file is hashed once however
# many times its manifest is checked (the Prefect cache key and the stage both check it).
_VERIFIED: dict[tuple[str, int, int], str] = {}


def damaged_files(manifest: StageManifest) -> list[str]:
    """The files of ``manifest`` that are missing or whose content hash changed (streamed BLAKE3
    of the sample data, as written: truncated, overwritten or random bytes all show). Files are
    hashed on two threads (blake3 releases the GIL)."""
    records = list(manifest.files.values())
    with ThreadPoolExecutor(max_workers=2) as pool:
        hashes = list(pool.map(_verified_hash, [rec.path for rec in records]))
    return [rec.path for rec, digest in zip(records, hashes) if digest != rec.content_hash]


CONTAINER_SUFFIXES = (".mkv", ".mov")  # a remux: fingerprinted (size, first and last 8 MiB), not decoded


def _verified_hash(path: str) -> str | None:
    """The sample-data hash of ``path`` ("" when unreadable, None when missing), once per
    (path, size, mtime) in this process; a remux's fingerprint (:func:`.remux.remux_fingerprint`)."""
    from filmrestore.remux import remux_fingerprint

    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = (path, st.st_size, st.st_mtime_ns)
    if stamp not in _VERIFIED:
        try:
            _VERIFIED[stamp] = remux_fingerprint(path) if Path(path).suffix in CONTAINER_SUFFIXES \
                else hash_audio_data(path)
        except (AudioFormatError, OSError):
            _VERIFIED[stamp] = ""  # not a readable WAVE file any more
    return _VERIFIED[stamp]


def run_stage(
    title_dir: str | Path, stage: str, params: dict[str, Any], compute: Callable[[], StageManifest]
) -> tuple[StageManifest, bool]:
    """Return the stage's manifest, computing it only when no valid one is on disk.

    Returns ``(manifest, reused)``. The compute time goes into ``report["elapsed_s"]``; a stage
    redone because a file it had written was damaged lists it in ``report["redone_because_damaged"]``.
    """
    finish_publishing(title_dir)  # a set of outputs a crash left half renamed is completed first
    key = stage_key(stage, params)
    previous = _matching_manifest(title_dir, stage, key)
    damaged = damaged_files(previous) if previous is not None else []
    if previous is not None and not damaged:
        return previous, True
    # Redone: the old manifest and the title's QC report no longer describe what will be there.
    manifest_path(title_dir, stage).unlink(missing_ok=True)
    for stale in QC_FILES:
        (Path(title_dir) / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    manifest = compute()
    manifest.report["elapsed_s"] = round(time.perf_counter() - start, 3)
    if damaged:  # the same inputs, but a file it had written changed on disk: said in qc.json
        manifest.report["redone_because_damaged"] = damaged
    manifest.cache_key = key
    if manifest.pending:
        publish(title_dir, manifest)  # the outputs and the manifest, as one set
        return manifest, False
    path = manifest_path(title_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.save(path, root=title_dir)
    return manifest, False


def _journal(title_dir: str | Path, stage: str) -> Path:
    return Path(title_dir) / MANIFEST_DIR / f"{stage}.publishing.json"


def publish(title_dir: str | Path, manifest: StageManifest) -> None:
    """Put a stage's outputs and its manifest in place as one set. The renames
    (``manifest.pending``) and the manifest go into a journal first
    (``.manifests/<stage>.publishing.json``, fsynced); then the files are renamed, the manifest
    saved and the journal removed. A crash part-way leaves the journal, and
    :func:`finish_publishing` (the next run of any stage of the title) completes the set, so
    the folder never stays a mix of new and old files."""
    journal = _journal(title_dir, manifest.stage)
    journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = journal.with_name(journal.name + ".part")
    with open(tmp, "w") as f:
        json.dump({"renames": manifest.pending, "manifest": manifest.to_dict()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, journal)
    _complete(title_dir, journal)
    manifest.pending = []


def finish_publishing(title_dir: str | Path) -> list[str]:
    """Complete any set of outputs a crashed run left half published; returns the files it moved."""
    folder = Path(title_dir) / MANIFEST_DIR
    moved: list[str] = []
    for journal in sorted(folder.glob("*.publishing.json")) if folder.is_dir() else []:
        moved += _complete(title_dir, journal)
    return moved


def _complete(title_dir: str | Path, journal: Path) -> list[str]:
    try:
        entry = json.loads(journal.read_text())
    except (OSError, ValueError):
        entry = {}  # a journal that was never completely written: nothing had been renamed yet
    moved = []
    for src, dst in entry.get("renames", []):
        if Path(src).exists():  # not yet renamed (one renamed before the crash has no source left)
            os.replace(src, dst)
            moved.append(dst)
    if "manifest" in entry:
        manifest = StageManifest.from_dict(entry["manifest"])
        manifest.save(manifest_path(title_dir, manifest.stage), root=title_dir)
    journal.unlink(missing_ok=True)
    return moved


LOCK_FILE = ".lock"


@contextmanager
def title_lock(title_dir: str | Path) -> Iterator[None]:
    """Hold the title folder's lock (an OS file lock on ``<title>/.lock``) for the ``with`` body.

    A second run of the same title, in this process or another, is refused with one
    :class:`TitleBusyError` naming the folder and the holder's pid; the OS releases the lock
    when its holder ends, however it ends (no stale lock after a crash).
    """
    title_dir = Path(title_dir)
    title_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(title_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise TitleBusyError(title_dir, f"is being written by another run (pid {holder}); wait for it "
                                            "to finish or write to another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
