"""Resume from disk: cache keys and stage manifests.

A stage's outputs live under the title folder, and beside them a manifest
``.manifests/<stage>.json`` that records the stage's cache key: a hash of its
inputs' content hashes, its parameters and the code version. A stage whose
manifest matches the key it would compute, with all files still present, is
not recomputed. This works with or without a Prefect server, and after a
crash (outputs are renamed into place only when complete).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filmrestore import __version__
from filmrestore.manifest import StageManifest

MANIFEST_DIR = ".manifests"

# Bump a stage's version when its numerics change, so cached outputs are redone.
STAGE_VERSIONS = {
    "extract": 2,
    "restore": 2,
    "separate": 1,
    "plan": 1,
    "normalize": 5,  # 4: measures the bed with the plan stage's plan; 5: changed presets are custom
    "render": 5,
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
