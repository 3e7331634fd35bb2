"""The ``filmrestore`` command line.

Expected failures (bad media, unwritable folders, silent programmes, bad
options) print one line naming the file and the problem and exit with code 2;
no traceback. A delivery that was written but FAILS its loudness spec exits with
code 3 (``EXIT_DELIVERY_FAILED``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

# The CLI is the edge where the environment is read: keep Prefect's temporary
# server quiet and local unless the user configured otherwise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from filmrestore import DEFAULT_SEPARATOR  # noqa: E402
from filmrestore.errors import FilmrestoreError  # noqa: E402

app = typer.Typer(
    name="filmrestore",
    help="Film-soundtrack restoration and 7.1.4 / ADM upmix, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Messages go to stderr, unwrapped and without rich's number highlighting, so piped output stays
# one line per message; machine-readable results (--json) go to stdout.
console = Console(stderr=True, soft_wrap=True, highlight=False)
#: A command's result (the deliverables and the verdict) for a script to read: stdout, never wrapped;
#: rich colours it on a terminal only.
results = Console(soft_wrap=True, highlight=False)

EXIT_EXPECTED_ERROR = 2
EXIT_DELIVERY_FAILED = 3  # everything written, but the delivery fails its loudness spec


def _print_version(value: bool) -> None:
    if value:
        from filmrestore import __version__

        typer.echo(f"filmrestore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print all of Prefect's log lines.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No stage lines or progress: warnings, errors and "
                                                       "the result only.")] = False,
) -> None:
    """Film-soundtrack restoration and 7.1.4 / ADM upmix, orchestrated by Prefect."""
    from filmrestore.flows.cli_progress import StageConsole

    _TerminalLines.verbose = verbose and not quiet
    _TerminalLines.quiet = StageConsole.quiet = quiet


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


class _QuietExpectedErrors(logging.Filter):
    """Drop the traceback from Prefect's log of a run that failed with an expected error: the
    state line names the file and the problem, and the CLI prints its one error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FilmrestoreError):
            record.exc_info, record.exc_text = None, None
        return True


class _TerminalLines(logging.Filter):
    """What Prefect's console handler prints from the CLI: the stages' own lines (one per stage,
    marked by ``log_stage``), warnings and unexpected errors. Prefect's chatter (temporary
    server, flow run begun or finished) and its lines about an expected error, which the CLI
    states once itself, are left out; ``--verbose`` prints everything. The API (the UI) still
    gets every record: this filter sits on the console handler only."""

    verbose = False
    quiet = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or (getattr(record, "filmrestore_stage", False) and not self.quiet):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if message.startswith("Concurrency limits ") and "do not exist" in message:
            return False  # the gpu slot of a run without a configured server: nothing to act on
        expected = record.exc_info and isinstance(record.exc_info[1], FilmrestoreError)
        return not (expected or any(name in message for name in _expected_error_names()))


def _expected_error_names() -> set[str]:
    found, todo = set(), [FilmrestoreError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _quiet_prefect_tracebacks() -> None:
    """Put :class:`_QuietExpectedErrors` on the handlers of Prefect's loggers, and
    :class:`_TerminalLines` on its console handlers (once)."""
    from prefect.logging.configuration import setup_logging

    if not logging.getLogger("prefect").handlers:
        setup_logging()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # "": the root, Prefect's console
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _QuietExpectedErrors) for f in handler.filters):
                handler.addFilter(_QuietExpectedErrors())
            console_handler = "Console" in type(handler).__name__ or type(handler) is logging.StreamHandler
            if console_handler and not any(isinstance(f, _TerminalLines) for f in handler.filters):
                handler.addFilter(_TerminalLines())


def expected_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a FilmrestoreError into one line on stderr and exit code 2 (and keep Prefect from
    printing its traceback first)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from filmrestore.flows.cli_progress import install

        _quiet_prefect_tracebacks()
        stages = install(console)
        try:
            return fn(*args, **kwargs)
        except FilmrestoreError as exc:
            stages.close_display()
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_EXPECTED_ERROR) from None

    return wrapper


# --separator and --adm-profile stay strings with their choices as the metavar: a value outside
# them gets the library's one-line error (exit 2), not click's usage box.
SeparatorOpt = Annotated[str, typer.Option("--separator", metavar="neural|dsp", help=f"Separator: neural (the shipped band-split model) or dsp (no weights); default {DEFAULT_SEPARATOR}.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where separation runs.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Neural separator checkpoint (.safetensors).")]
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


@app.command()
@expected_errors
def run(
    source: Annotated[Path, typer.Argument(help="Video (or audio) file of the title.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder; deliverables go to OUT/<title>/.")] = Path("out"),
    preset: Annotated[Preset, typer.Option("--preset", help="Loudness delivery spec.")] = Preset.ebu_r128,
    separator: SeparatorOpt = DEFAULT_SEPARATOR,
    device: DeviceOpt = Device.auto,
    stream: RunStreamOpt = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Title folder name (default: from the file name).")] = None,
    checkpoint: CheckpointOpt = None,
    target: Annotated[Optional[float], typer.Option("--target", help="Custom target loudness, LUFS.")] = None,
    ceiling: Annotated[Optional[float], typer.Option("--ceiling", help="Custom true-peak ceiling, dBTP.")] = None,
    gate: Annotated[Optional[Gate], typer.Option("--gate", help="Custom gating: programme or dialogue.")] = None,
    adm_profile: Annotated[str, typer.Option("--adm-profile", metavar="ebu|dolby",
                                             help="ADM profile of adm.wav: ebu or dolby.")] = "ebu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the title folder, deliverables and verdict as "
                                                         "JSON on stdout.")] = False,
    remux: Annotated[bool, typer.Option("--remux", help="Also write OUT/<title>/remux.mkv: the source's video, "
                                        "subtitles and chapters with the 7.1.4 bed, 5.1 and stereo fold-downs "
                                        "and M&E, in sync.")] = False,
    remux_format: Annotated[RemuxFormat, typer.Option("--remux-format", help="Container of the remux (mov keeps "
                                                      "the bed's channel layout; mkv holds FLAC and every "
                                                      "subtitle).")] = RemuxFormat.mkv,
) -> None:
    """Restore one title: extract, restore, separate, normalise, upmix to 7.1.4 and export ADM."""
    from filmrestore.flows.restore_title import run_restore_title

    result = run_restore_title(
        source, out, title, preset=preset.value, separator=separator, device=device.value, stream=stream,
        checkpoint=str(checkpoint) if checkpoint else None, target_lufs=target, ceiling_dbtp=ceiling,
        gate=gate.value if gate else None, adm_profile=adm_profile, remux=remux_format.value if remux else None,
    )
    for each in (result, *result.get("streams", [])):  # with --json, stdout holds the JSON alone
        print_deliverables(each, console if as_json else results)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    if not all(each.get("verdict", {}).get("pass") for each in (result, *result.get("streams", []))):
        raise typer.Exit(EXIT_DELIVERY_FAILED)


@app.command()
@expected_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo clip and its deliverables.")] = Path("demo"),
    duration: Annotated[float, typer.Option("--duration", help="Length of the generated clip, seconds.")] = 30.0,
    preset: Annotated[Preset, typer.Option("--preset")] = Preset.ebu_r128,
    device: DeviceOpt = Device.auto,
) -> None:
    """Generate a short 'legacy' film clip and restore it end to end."""
    from filmrestore.demo import make_demo_clip
    from filmrestore.flows.restore_title import run_restore_title

    clip = make_demo_clip(out / "demo_clip.mov", duration_s=duration)
    console.print(f"demo clip: {clip}")
    result = run_restore_title(clip, out, "demo_clip", preset=preset.value, device=device.value)
    print_deliverables(result, results)
    if not result.get("verdict", {}).get("pass"):
        raise typer.Exit(EXIT_DELIVERY_FAILED)


@app.command()
@expected_errors
def extract(
    source: Annotated[Path, typer.Argument(help="Video or audio file.")],
    output: Annotated[Path, typer.Argument(help="WAV file to write (48 kHz float32).")],
    stream: StreamOpt = None,
) -> None:
    """Decode one audio stream to a 48 kHz float32 WAV, aligned to the container's zero."""
    from filmrestore.audio import refuse_overwriting
    from filmrestore.errors import OutputNotWritableError
    from filmrestore.media import extract_audio

    refuse_overwriting(source, [output])  # the worse mistake is said first
    if output.suffix.lower() not in (".wav", ".bwf"):  # the name would lie about the format
        raise OutputNotWritableError(output, "extract writes a 48 kHz float WAV (RF64 past 4 GiB): name the "
                                     "output .wav")
    record, report = extract_audio(source, output, stream)
    console.print(f"{record.path}: {record.n_channels} ch, {record.duration_s:.3f} s ({report.get('codec', '?')})")


@app.command()
@expected_errors
def separate(
    source: Annotated[Path, typer.Argument(help="WAV file to separate.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for dialogue.wav, music.wav, effects.wav.")],
    separator: SeparatorOpt = DEFAULT_SEPARATOR,
    device: DeviceOpt = Device.auto,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Separate a WAV file into dialogue, music and effects stems."""
    from filmrestore.audio import read_info, refuse_overwriting
    from filmrestore.separation import STEMS, get_separator, resolve_device, separate_file

    paths = {stem: out / f"{stem}.wav" for stem in STEMS}
    refuse_overwriting(source, list(paths.values()))
    read_info(source)  # a clear error for a file that is not audio
    from filmrestore.flows.cli_progress import done_line
    from filmrestore.stagelog import terminal_progress

    model = get_separator(separator, str(checkpoint) if checkpoint else None)
    records = separate_file(model, source, paths, device=resolve_device(device.value),
                            on_progress=terminal_progress("separate"))
    done_line("separate", ", ".join(records))
    for stem, record in records.items():
        console.print(f"{stem}: {record.path}")


@app.command()
@expected_errors
def loudness(
    file: Annotated[Path, typer.Argument(help="WAV/RF64/BW64 file to measure, or a video/audio file "
                                              "(its first audio stream, or --stream N, decoded by ffmpeg).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    layout: Annotated[Optional[str], typer.Option("--layout", help="Channel layout (default: the file's WAVE speaker mask, else by channel count; 5 = L R C Ls Rs): "
                                      "mono, stereo, 3.0, 4.0, 5.0, 5.1, 7.0, 7.1, 5.1.4, 7.1.2, 7.1.4.")] = None,
    no_dialogue: Annotated[bool, typer.Option("--no-dialogue", help="Skip dialogue gating (silero-vad on the programme).")] = False,
    stream: StreamOpt = None,
) -> None:
    """Measure BS.1770-4 loudness, loudness range, true peak and dialogue-gated loudness."""
    import tempfile

    from filmrestore.audio import read_info
    from filmrestore.errors import AudioFormatError
    from filmrestore.loudness.measure import measure_file
    from filmrestore.media import extract_audio

    def readable_as_is() -> bool:
        try:
            read_info(file)
            return stream is None
        except AudioFormatError:
            return False

    with tempfile.TemporaryDirectory(prefix="filmrestore-loudness-") as tmp:
        # A video (or a stream of a multi-stream file) is decoded as extract does, into a temporary WAV.
        measured = file if readable_as_is() else extract_audio(file, Path(tmp) / "audio.wav", stream)[0].path
        report = measure_file(measured, layout=layout, dialogue_from_programme=not no_dialogue).to_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        typer.echo(f"{key:>28}: {value}")


def print_deliverables(result: dict[str, Any], to: Console) -> None:
    """Show where the deliverables are and the loudness verdict on ``to``; warnings go to stderr."""
    from filmrestore.loudness.specs import spec_label

    to.print(f"[bold]deliverables in[/] {result['title_dir']}")
    for name, path in result["deliverables"].items():
        to.print(f"  {name:<16} {path}")
    verdict = result.get("verdict", {})
    status = "[green]PASS[/]" if verdict.get("pass") else "[red]FAIL[/]"
    label = spec_label({"name": verdict.get("preset", "?"), "based_on": verdict.get("based_on")})
    to.print(f"loudness ({label}): {status} {verdict.get('summary', '')}", highlight=False)
    for warning in result.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {warning} (see qc.md)", highlight=False)


from filmrestore.flows import cli_upmix  # noqa: E402,F401  (registers commands)


def main() -> None:
    app()


from filmrestore.flows import cli_separation  # noqa: E402,F401  (registers make-dataset, train, evaluate)
from filmrestore.flows import cli_orchestration  # noqa: E402,F401  (registers catalog, server, worker)

if __name__ == "__main__":
    sys.exit(main())
