"""The ``restore_title`` flow: one film, from its video file to the 7.1.4 bed and ADM file.

Flows decide order, retries and caching only; every stage's work is in
``filmrestore.tasks``. Stages hand each other small manifests (paths, rate,
channels, length, content hash), never arrays.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from prefect import flow

from filmrestore import DEFAULT_SEPARATOR
from filmrestore.audio import ensure_writable_dir, refuse_overwriting
from filmrestore.errors import ConfigError, MediaError
from filmrestore.resume import title_lock
from filmrestore.tasks.extract import extract_task
from filmrestore.tasks.normalize import normalize_task
from filmrestore.tasks.plan import plan_task
from filmrestore.tasks.render import render_task
from filmrestore.tasks.report import report_task
from filmrestore.tasks.restore import restore_task
from filmrestore.tasks.separate import separate_task


def title_folder(title: str) -> str:
    """A folder name that keeps a title's letters: accents transliterated, anything else that is
    not a letter, digit, ``.``, ``_`` or ``-`` becomes ``_`` (so no title leaves ``--out``):
    ``Ça tourne (version française) 1962`` -> ``Ca_tourne_version_francaise_1962``."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")[:128] or "title"


def title_from_source(source: str | Path) -> str:
    """A folder-safe title from the source file name (``Feature (1962).mov`` -> ``Feature_1962``)."""
    return title_folder(Path(source).stem)


@flow(name="restore-title", flow_run_name="restore {title}", log_prints=False, result_serializer="json")
def restore_title(
    source: str,
    out: str,
    title: str,
    preset: str = "ebu-r128",
    separator: str = DEFAULT_SEPARATOR,
    device: str = "auto",
    stream: int | None = None,
    checkpoint: str | None = None,
    target_lufs: float | None = None,
    ceiling_dbtp: float | None = None,
    gate: str | None = None,
    adm_profile: str = "ebu",
    display_title: str | None = None,
) -> dict[str, Any]:
    """Restore one title (``title`` is its folder under ``out``, ``display_title`` the name as
    written, for qc.json and the ADM programme); returns the deliverables' paths and the verdict."""
    title_dir = str(Path(out) / title)
    with title_lock(title_dir):  # a second run of this title is refused, never interleaved with this one
        extracted = extract_task(source, title_dir, stream)
        restored = restore_task(extracted, title_dir)
        stems = separate_task(restored, title_dir, separator, device, checkpoint)
        plan = plan_task(stems, title_dir, adm_profile)
        loudness = normalize_task(restored, stems, plan, title_dir, preset, target_lufs, ceiling_dbtp, gate)
        rendered = render_task(stems, plan, loudness, title_dir, adm_profile, display_title or title)
        return report_task(source, title_dir, [extracted, restored, stems, plan, loudness, rendered],
                           display_title or title)


def validate_options(preset: str = "ebu-r128", separator: str = DEFAULT_SEPARATOR, device: str = "auto",
                     stream: int | None = None, checkpoint: str | None = None, target_lufs: float | None = None,
                     ceiling_dbtp: float | None = None, gate: str | None = None, adm_profile: str = "ebu") -> None:
    """Refuse a bad option before any stage runs (one ConfigError naming it): the delivery spec,
    the separator and its checkpoint (read and checked, not run), the device, the stream index
    and the ADM profile."""
    from filmrestore.loudness.specs import get_preset
    from filmrestore.upmix.adm import get_profile

    get_preset(preset, target_lufs, ceiling_dbtp, gate)
    get_profile(adm_profile)
    if stream is not None and (not isinstance(stream, int) or isinstance(stream, bool) or stream < 0):
        raise ConfigError(f"stream must be a non-negative integer (0-based among audio streams), got {stream!r}")
    from filmrestore.separation import SEPARATOR_NAMES, get_separator, resolve_device

    if separator not in SEPARATOR_NAMES:
        raise ConfigError(f"unknown separator {separator!r}: available are {', '.join(SEPARATOR_NAMES)}")
    resolve_device(device)
    if checkpoint is not None or separator == "neural":
        get_separator(separator, checkpoint)  # a missing, truncated or mismatched checkpoint fails here


def run_restore_title(source: str | Path, out: str | Path, title: str | None = None, **options: Any) -> dict[str, Any]:
    """Validate the paths and options, then run the flow (the CLI and tests call this)."""
    source = Path(source)
    if not source.is_file():
        raise MediaError(source, "source file does not exist" if not source.exists() else "is not a regular file")
    if source.stat().st_size == 0:
        raise MediaError(source, "is empty (0 bytes)")
    from filmrestore.media import probe_audio_streams, select_stream

    select_stream(source, probe_audio_streams(source)[0], options.get("stream"))  # no audio, bad --stream: now
    validate_options(**options)
    display = title or Path(source).stem
    folder = title_folder(display)
    refuse_overwriting(source, out_dirs=[Path(out) / folder])
    ensure_writable_dir(out)
    return restore_title(str(source.resolve()), str(Path(out).resolve()), folder, display_title=display, **options)
