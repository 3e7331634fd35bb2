"""Small manifests that stages hand each other: files on disk, never arrays.

A manifest is JSON-serialisable (Prefect persists it with its JSON serializer)
and names each file with its rate, layout, length and content hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filmrestore.audio import AudioWriter, hash_audio_data, partial_path, read_info


@dataclass(frozen=True)
class FileRecord:
    """One audio file a stage produced."""

    path: str
    sample_rate_hz: int
    n_channels: int
    n_frames: int
    content_hash: str

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate_hz

    @classmethod
    def from_writer(cls, writer: AudioWriter) -> FileRecord:
        return cls(str(writer.path), writer.sample_rate_hz, writer.n_channels, writer.n_frames,
                   writer.content_hash)

    @classmethod
    def from_path(cls, path: str | Path) -> FileRecord:
        """Describe an existing file (hashes its sample data in full, as :class:`AudioWriter` does)."""
        info = read_info(path)
        return cls(str(path), info.sample_rate_hz, info.n_channels, info.n_frames, hash_audio_data(path))

    def exists(self) -> bool:
        return Path(self.path).is_file()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": round(self.duration_s, 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        return cls(d["path"], int(d["sample_rate_hz"]), int(d["n_channels"]), int(d["n_frames"]),
                   d["content_hash"])


@dataclass
class StageManifest:
    """What a stage produced: its files, the parameters it ran with, and its findings."""

    stage: str
    files: dict[str, FileRecord]
    params: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    cache_key: str = ""
    #: ``(temporary, final)`` renames that publish the files as one set once the manifest is
    #: complete (:func:`filmrestore.resume.run_stage`); empty when each file is in place already.
    pending: list[tuple[str, str]] = field(default_factory=list, repr=False, compare=False)

    def file(self, name: str) -> FileRecord:
        return self.files[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "files": {k: v.to_dict() for k, v in self.files.items()},
            "params": self.params,
            "report": self.report,
            "cache_key": self.cache_key,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageManifest:
        files = {k: FileRecord.from_dict(v) for k, v in d["files"].items()}
        return cls(d["stage"], files, dict(d.get("params", {})), dict(d.get("report", {})),
                   d.get("cache_key", ""))

    def save(self, path: str | Path, root: str | Path | None = None) -> Path:
        """Write the manifest; with ``root`` (the title folder) its files' paths are stored relative
        to it, so a moved or copied title folder names its own files, not the original's."""
        d = self.to_dict()
        if root is not None:
            base = Path(root).resolve()
            for rec in d["files"].values():
                target = Path(rec["path"]).resolve()
                if target.is_relative_to(base):
                    rec["path"] = target.relative_to(base).as_posix()
        return write_json(path, d)

    @classmethod
    def load(cls, path: str | Path, root: str | Path | None = None) -> StageManifest:
        """Read a manifest; relative file paths are resolved against ``root`` (the title folder)."""
        d = json.loads(Path(path).read_text())
        if root is not None:
            for rec in d["files"].values():
                if not Path(rec["path"]).is_absolute():
                    rec["path"] = str(Path(root).resolve() / rec["path"])
        return cls.from_dict(d)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = partial_path(path)
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (StageManifest, FileRecord)):  # a stage's input manifests, in its parameters
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
