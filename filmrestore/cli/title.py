"""The title commands: ``run``, ``demo``, ``extract``, ``separate`` and ``loudness``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from filmrestore import DEFAULT_SEPARATOR
from filmrestore.cli.app import EXIT_DELIVERY_FAILED, app, console, expected_errors, results
from filmrestore.cli.options import (CheckpointOpt, Device, DeviceOpt, Gate, Preset, RemuxFormat, RunStreamOpt,
                                     SeparatorOpt, ShiftsOpt, StreamOpt)


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
    target_lufs: Annotated[Optional[float], typer.Option("--target", help="Custom target loudness, LUFS.")] = None,
    ceiling_dbtp: Annotated[Optional[float], typer.Option("--ceiling", help="Custom true-peak ceiling, dBTP.")] = None,
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
    separation_deployment: Annotated[Optional[str], typer.Option(
        "--separation-deployment", metavar="FLOW/DEPLOYMENT",
        help="Separate in a run of this deployment of separate-title (its workers hold the GPU and share "
             "OUT); needs a Prefect server.")] = None,
    shifts: ShiftsOpt = None,
) -> None:
    """Restore one title: extract, restore, separate, normalise, upmix to 7.1.4 and export ADM."""
    options = dict(preset=preset.value, separator=separator, device=device.value, stream=stream,
                   checkpoint=str(checkpoint) if checkpoint else None, target_lufs=target_lufs,
                   ceiling_dbtp=ceiling_dbtp, gate=gate.value if gate else None, adm_profile=adm_profile,
                   remux=remux_format.value if remux else None, separation_deployment=separation_deployment,
                   shifts=shifts)
    result = finished_title(source, out, title, options)
    if result is None:
        from filmrestore.flows.restore_title import run_restore_title

        result = run_restore_title(source, out, title, **options)
    for each in (result, *result.get("streams", [])):  # with --json, stdout holds the JSON alone
        print_deliverables(each, console if as_json else results)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    if not all(each.get("verdict", {}).get("pass") for each in (result, *result.get("streams", []))):
        raise typer.Exit(EXIT_DELIVERY_FAILED)


def finished_title(source: Path, out: Path, title: str | None, options: dict[str, Any]) -> dict[str, Any] | None:
    """What the title's last run returned, when it was asked for exactly this and no file of its
    folder changed since (:mod:`filmrestore.titles`): then nothing runs, not even an import of the
    pipeline. Only without a Prefect API: with one, the run goes to the server, whose UI shows it."""
    from filmrestore.cli.progress import StageConsole
    from filmrestore.flows.api import prefect_api_url
    from filmrestore.titles import RUN_RECORD, finished_run, run_request, title_names

    if not source.is_file() or prefect_api_url() is not None:
        return None
    folder, display = title_names(source, title)
    params = {"source": str(source.resolve()), "out": str(out.resolve()), "title": folder, "display_title": display}
    result = finished_run(out / folder, run_request({**params, **options}))
    if result is not None and not StageConsole.quiet:
        console.print(f"{folder}: finished with these options and unchanged since, nothing to run "
                      f"(its record: {out / folder / RUN_RECORD})", markup=False)
    return result


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
    source: Annotated[Path, typer.Argument(help="Audio file to separate (WAV/RF64/BW64, FLAC, ...; any sample rate "
                                                "and channel count: the stems keep the file's), or a video/audio "
                                                "file ffmpeg decodes (its first audio stream, or --stream N, at 48 kHz "
                                                "as extract gives it).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for dialogue.wav, music.wav, effects.wav.")],
    separator: SeparatorOpt = DEFAULT_SEPARATOR,
    device: DeviceOpt = Device.auto,
    checkpoint: CheckpointOpt = None,
    shifts: ShiftsOpt = None,
    stream: StreamOpt = None,
) -> None:
    """Separate an audio file (or a video's soundtrack) into dialogue, music and effects stems."""
    import tempfile

    from filmrestore.audio import read_info, refuse_overwriting
    from filmrestore.errors import AudioFormatError
    from filmrestore.media import extract_audio
    from filmrestore.separation import STEMS, get_separator, resolve_device, separate_file

    paths = {stem: out / f"{stem}.wav" for stem in STEMS}
    refuse_overwriting(source, list(paths.values()))
    from filmrestore.cli.progress import done_line
    from filmrestore.stagelog import terminal_progress

    model = get_separator(separator, str(checkpoint) if checkpoint else None, shifts)
    with tempfile.TemporaryDirectory(prefix="filmrestore-separate-") as tmp:
        try:
            read_info(source)
            audio = source if stream is None else None
        except AudioFormatError:
            audio = None
        if audio is None:  # a video, or a stream of a multi-stream file: decoded as extract does
            audio = extract_audio(source, Path(tmp) / "audio.wav", stream)[0].path
        records = separate_file(model, audio, paths, device=resolve_device(device.value),
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
    from filmrestore.loudness import spec_label

    to.print(f"[bold]deliverables in[/] {result['title_dir']}")
    for name, path in result["deliverables"].items():
        to.print(f"  {name:<16} {path}")
    verdict = result.get("verdict", {})
    status = "[green]PASS[/]" if verdict.get("pass") else "[red]FAIL[/]"
    label = spec_label({"name": verdict.get("preset", "?"), "based_on": verdict.get("based_on")})
    to.print(f"loudness ({label}): {status} {verdict.get('summary', '')}", highlight=False)
    for warning in result.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {warning} (see qc.md)", highlight=False)
