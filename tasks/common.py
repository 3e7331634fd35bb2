"""What every stage shares: cache keys, resume from disk, and the Prefect task options.

A stage's outputs live under the title folder, and beside them a manifest
``.manifests/<stage>.json`` that records the stage's cache key: a hash of its
inputs' content hashes, its parameters and the code version. A stage whose
manifest matches the key it would compute, with all files still present, is
not recomputed. This works with or without a Prefect server, and after a
crash (outputs are renamed into place only when complete).
"""

from __future__ import annotations

import hashlib
import re
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filmrestore import __version__
from filmrestore.errors import FilmrestoreError
from filmrestore.manifest import StageManifest

MANIFEST_DIR = ".manifests"

# Bump a stage's version when its numerics change, so cached outputs are redone.
STAGE_VERSIONS = {
    "extract": 2,
    "restore": 2,
    "separate": 1,
    "normalize": 3,
    "render": 3,
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
        "params": _key_material(params),
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return f"{stage}-{hashlib.blake2b(blob, digest_size=16).hexdigest()}"


def manifest_path(title_dir: str | Path, stage: str) -> Path:
    return Path(title_dir) / MANIFEST_DIR / f"{stage}.json"


def load_valid_manifest(title_dir: str | Path, stage: str, key: str) -> StageManifest | None:
    """The stage's manifest on disk if it was made with ``key`` and all its files exist."""
    path = manifest_path(title_dir, stage)
    if not path.is_file():
        return None
    try:
        manifest = StageManifest.load(path)
    except (ValueError, KeyError, OSError):
        return None  # a damaged manifest means: redo the stage
    if manifest.cache_key != key or not all(rec.exists() for rec in manifest.files.values()):
        return None
    return manifest


def run_stage(
    title_dir: str | Path, stage: str, params: dict[str, Any], compute: Callable[[], StageManifest]
) -> tuple[StageManifest, bool]:
    """Return the stage's manifest, computing it only when no valid one is on disk.

    Returns ``(manifest, reused)``. The compute time goes into ``report["elapsed_s"]``.
    """
    key = stage_key(stage, params)
    cached = load_valid_manifest(title_dir, stage, key)
    if cached is not None:
        return cached, True
    start = time.perf_counter()
    manifest = compute()
    manifest.report["elapsed_s"] = round(time.perf_counter() - start, 3)
    manifest.cache_key = key
    path = manifest_path(title_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.save(path)
    return manifest, False


def prefect_cache_key(stage: str, key_params: Callable[[dict[str, Any]], dict[str, Any]]):
    """A Prefect ``cache_key_fn`` that hits only while the stage's outputs are intact on disk.

    The key also covers the content hashes of the outputs on disk, so a cached
    Prefect result always describes the files that are really there.
    """

    def cache_key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        params = key_params(parameters)
        key = stage_key(stage, params)
        manifest = load_valid_manifest(parameters["title_dir"], stage, key)
        if manifest is None:
            return None
        outputs = sorted(rec.content_hash for rec in manifest.files.values())
        # The title folder too: results persist across sessions, and a manifest names its own paths.
        where = str(Path(parameters["title_dir"]).resolve())
        return hashlib.blake2b(f"{key}:{outputs}:{where}".encode(), digest_size=16).hexdigest()

    return cache_key_fn


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unexpected faults, never our own specific errors."""
    try:
        state.result()
    except FilmrestoreError:
        return False
    except Exception:  # noqa: BLE001 - any other fault may be transient (I/O, GPU OOM, ...)
        return True
    return False


def artifact_key(title_dir: str | Path, what: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    title = re.sub(r"[^a-z0-9-]+", "-", Path(title_dir).name.lower()).strip("-")
    return f"{title}-{what}"[:100]


def progress_reporter(title_dir: str | Path, stage: str, step: float = 0.02) -> Callable[[int, int], None]:
    """An ``on_progress(done, total)`` callback that updates a Prefect progress artifact.

    Updates are sent only every ``step`` of progress so a long film does not
    flood the API with one request per block.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact_id = create_progress_artifact(
        0.0, key=artifact_key(title_dir, f"{stage}-progress"), description=f"{stage}: {Path(title_dir).name}"
    )
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if fraction - last[0] >= step or fraction >= 1.0:
            last[0] = fraction
            update_progress_artifact(artifact_id, round(100.0 * fraction, 1))

    return on_progress


def task_options(stage: str, key_params: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Prefect ``@task`` options shared by every stage."""
    return {
        "name": stage,
        "retries": 2,
        "retry_delay_seconds": 5,
        "retry_condition_fn": retry_transient,
        "cache_key_fn": prefect_cache_key(stage, key_params),
        "persist_result": True,
        "result_serializer": "json",
    }


def log_stage(stage: str, manifest: StageManifest, reused: bool) -> None:
    """Log one line per stage through Prefect's run logger."""
    from prefect import get_run_logger

    how = "reused from a previous run" if reused else f"done in {manifest.report.get('elapsed_s', 0):.1f} s"
    get_run_logger().info("%s %s: %s", stage, how, ", ".join(sorted(manifest.files)))
