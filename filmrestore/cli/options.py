"""Option types and choices shared by the commands (a fixed set of values is an Enum, so
``--help`` and the Prefect UI list the choices)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from filmrestore import DEFAULT_SEPARATOR


class Preset(str, Enum):
    ebu_r128 = "ebu-r128"
    atsc_a85 = "atsc-a85"
    netflix = "netflix"
    custom = "custom"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class RemuxFormat(str, Enum):
    mkv = "mkv"
    mov = "mov"


class Gate(str, Enum):
    programme = "programme"
    dialogue = "dialogue"


# --separator and --adm-profile stay strings with their choices as the metavar: a value outside
# them gets the library's one-line error (exit 2), not click's usage box.
SeparatorOpt = Annotated[str, typer.Option("--separator", metavar="neural|dsp", help=f"Separator: neural (the shipped band-split model) or dsp (no weights); default {DEFAULT_SEPARATOR}.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where separation runs.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Neural separator checkpoint (.safetensors).")]
ShiftsOpt = Annotated[Optional[int], typer.Option("--shifts", help="Neural: average this many passes, each on the "
                                                 "STFT grid moved by a fraction of a hop (better stems, that many "
                                                 "times the separation time; default: the checkpoint's, 1).")]
StreamOpt = Annotated[Optional[int], typer.Option("--stream", help="Audio stream to use, 0-based among audio streams.")]


def _stream_or_all(value: Optional[str]) -> int | str | None:
    """``--stream`` of ``run``: an index (0-based among audio streams) or ``all``."""
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a stream index (0, 1, ...) nor 'all'") from None


RunStreamOpt = Annotated[Optional[str], typer.Option(
    "--stream", metavar="N|all", callback=_stream_or_all,
    help="Audio stream to restore, 0-based among audio streams; 'all': every stream (the others under "
         "streams/<index>_<language>/, all of them in the remux).")]
