"""Catalogues: the batch manifests that ``restore_catalog`` reads (CSV or JSON), validated.

A catalogue lists titles, one per row::

    title,source,preset,options
    feature_1962,features/Feature (1962).mov,ebu-r128,"{""stream"": 1}"
    short_1931,shorts/short.mkv,netflix,

or the same as JSON (a list of objects, or ``{"titles": [...]}``)::

    [{"title": "feature_1962", "source": "features/Feature (1962).mov", "preset": "ebu-r128",
      "options": {"stream": 1}}]

``source`` is relative to the media root (or absolute, inside it). Every source
must stay under the media root after ``..`` and symlinks are resolved; a row that
points elsewhere refuses the whole catalogue with a :class:`CatalogError` naming
the row. Media problems (a missing file, no audio) are not checked here: they
fail that title alone when it runs.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filmrestore.errors import CatalogError, ConfigError, MediaError

TITLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# restore_title's parameters that a row may set in ``options``.
OPTION_KEYS = ("separator", "device", "stream", "checkpoint", "target_lufs", "ceiling_dbtp", "gate", "adm_profile",
               "remux", "separation_deployment", "shifts")
DEFAULT_PRESET = "ebu-r128"


@dataclass(frozen=True)
class CatalogEntry:
    """One validated row: a folder-safe title, a source inside the media root, its parameters."""

    row: int  # 1-based data row (CSV: the header is row 0)
    title: str
    source: str  # absolute, symlinks resolved
    preset: str = DEFAULT_PRESET
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flow_parameters(self, out: str | Path) -> dict[str, Any]:
        """Keyword arguments of ``restore_title`` for this title."""
        return {"source": self.source, "out": str(out), "title": self.title, "preset": self.preset,
                **self.options}


def _where(catalog: Path, row: int, title: str | None = None) -> str:
    named = f" (title {title!r})" if title else ""
    return f"{catalog}: row {row}{named}"


def resolve_under_root(source: str, media_root: Path, where: str) -> Path:
    """``source`` as an absolute path inside ``media_root`` (symlinks resolved), or CatalogError.

    Refuses ``..`` components outright (even when they would land back inside),
    absolute paths elsewhere, and symlinks whose target leaves the media root.
    """
    raw = Path(source)
    if not source.strip():
        raise CatalogError(f"{where}: empty source path")
    if ".." in raw.parts:
        raise CatalogError(f"{where}: source {source!r} contains '..'; paths must stay under {media_root}")
    candidate = raw if raw.is_absolute() else media_root / raw
    resolved = candidate.resolve()
    if not resolved.is_relative_to(media_root):
        how = "is a symlink that leads" if candidate.absolute() != resolved and \
            candidate.absolute().is_relative_to(media_root) else "is"
        raise CatalogError(f"{where}: source {source!r} {how} outside the media root {media_root} ({resolved})")
    return resolved


def _parse_options(value: Any, where: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{where}: options are not a JSON object ({exc.msg})") from None
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: options must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(OPTION_KEYS))
    if unknown:
        raise CatalogError(f"{where}: unknown option(s) {unknown}; allowed: {list(OPTION_KEYS)}")
    return dict(value)


def parse_row(raw: dict[str, Any], row: int, catalog: Path, media_root: Path) -> CatalogEntry:
    """Validate one row (title, source, preset, options) into a :class:`CatalogEntry`."""
    title = str(raw.get("title") or raw.get("title_id") or "").strip()
    where = _where(catalog, row, title or None)
    if not TITLE_PATTERN.match(title):
        raise CatalogError(f"{where}: title must be 1-128 of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    source = resolve_under_root(str(raw.get("source") or ""), media_root, where)
    preset = str(raw.get("preset") or DEFAULT_PRESET).strip()
    options = _parse_options(raw.get("options"), where)
    from filmrestore.flows.restore_title import validate_options

    try:  # every option value (and a checkpoint) is checked now, before any title of the catalogue starts
        validate_options(preset, **options)
    except (ConfigError, MediaError) as exc:
        raise CatalogError(f"{where}: {exc}") from None
    return CatalogEntry(row, title, str(source), preset, options)


def _raw_rows(catalog: Path) -> list[dict[str, Any]]:
    """The catalogue's rows as dictionaries, from CSV or JSON (chosen by the file extension)."""
    try:
        text = catalog.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CatalogError(f"{catalog}: cannot read the catalogue ({exc.strerror})") from None
    if catalog.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{catalog}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        rows = data.get("titles") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CatalogError(f"{catalog}: expected a list of objects (or {{\"titles\": [...]}})")
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"source"} <= set(reader.fieldnames):
        raise CatalogError(f"{catalog}: CSV header must name at least title and source, got {reader.fieldnames}")
    return [dict(r) for r in reader]


def read_catalog(catalog: str | Path, media_root: str | Path) -> list[CatalogEntry]:
    """Read and validate a whole catalogue; any bad row refuses it (CatalogError names the row)."""
    catalog = Path(catalog)
    root = Path(media_root).resolve()
    if not root.is_dir():
        raise CatalogError(f"media root {media_root} is not a folder")
    entries = [parse_row(raw, i, catalog, root) for i, raw in enumerate(_raw_rows(catalog), start=1)]
    if not entries:
        raise CatalogError(f"{catalog}: no titles")
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.title in seen:
            raise CatalogError(f"{_where(catalog, entry.row, entry.title)}: duplicate title "
                               f"(also row {seen[entry.title]})")
        seen[entry.title] = entry.row
    return entries
