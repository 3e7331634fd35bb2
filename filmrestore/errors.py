"""The project's exceptions: one base class, one subclass per kind of failure.

Messages name the file and the value that is wrong, so the CLI can print one
line (no traceback) for every expected error.
"""

from __future__ import annotations

import errno

from pathlib import Path


class FilmrestoreError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class MediaError(FilmrestoreError):
    """A source file cannot be used."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NoAudioStreamError(MediaError):
    """The source holds no audio stream (or not the one asked for)."""


class CorruptMediaError(MediaError):
    """ffprobe/ffmpeg cannot read the file, or it is truncated."""


class EmptyAudioError(MediaError):
    """The audio stream has no samples."""


class SilentProgrammeError(MediaError):
    """The programme is digital silence: there is nothing to restore or normalise."""


class OutputNotWritableError(MediaError):
    """The output folder cannot be created or written."""


class AudioFormatError(MediaError):
    """A WAV/BW64 file has a layout, rate or size that the stage does not accept."""


class CheckpointError(MediaError):
    """A model checkpoint is missing, truncated or does not match its config."""


class TitleBusyError(MediaError):
    """Another run holds the title folder's lock."""


class PlanError(FilmrestoreError):
    """An upmix plan or ADM profile constraint is violated."""


class ConfigError(FilmrestoreError):
    """A parameter (preset, device, separator name, ...) is invalid."""


class CatalogError(ConfigError):
    """A catalogue (batch manifest) or one of its rows cannot be used; the message names the row."""


# OS errors that a retry cannot cure: a full disk or quota, a read-only or missing path, no permission.
PERMANENT_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                       errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}

def is_transient(exc: BaseException) -> bool:
    """Whether a stage that raised ``exc`` is worth running again: never for our own errors (bad
    input, bad options, a FAILED check) or an OS error that stays (a full disk, no permission)."""
    if isinstance(exc, FilmrestoreError):
        return False
    return not (isinstance(exc, OSError) and exc.errno in PERMANENT_OS_ERRORS)
