"""The ``restore_title`` flow: one film, from its video file to the 7.1.4 bed and ADM file.

Flows decide order, retries and caching only; every stage's work is in
``filmrestore.tasks``. Stages hand each other small manifests (paths, rate,
channels, length, content hash), never arrays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple

from prefect import Task, flow
from prefect.context import FlowRunContext

from filmrestore import DEFAULT_SEPARATOR
from filmrestore.audio import ensure_writable_dir, refuse_overwriting, require_free_space
from filmrestore.errors import ConfigError, MediaError, is_transient
from filmrestore.flows.api import prefect_api_url
from filmrestore.manifest import StageManifest
from filmrestore.resume import title_lock
from filmrestore.stagelog import STAGE_LOGGER
from filmrestore.tasks.extract import extract_task
from filmrestore.tasks.normalize import normalize_task
from filmrestore.tasks.plan import plan_task
from filmrestore.tasks.remux import remux_task
from filmrestore.tasks.render import render_task
from filmrestore.tasks.report import report_task
from filmrestore.tasks.restore import restore_task
from filmrestore.tasks.separate import separate_task
from filmrestore.titles import drop_run_record, run_request, title_folder, title_names, write_run_record


ALL_STREAMS = "all"  # ``stream="all"``: every audio stream of the source, each its own set of deliverables


def stream_folder(chosen: Any) -> str:
    """The folder of an extra audio stream of a title: ``streams/<index>_<language>``."""
    return f"streams/{chosen.audio_index}_{title_folder(chosen.language or 'und')}"


Preset = Literal["ebu-r128", "atsc-a85", "netflix", "custom"]
Separator = Literal["neural", "dsp"]
Device = Literal["auto", "cpu", "cuda"]
Gate = Literal["programme", "dialogue"]
AdmProfile = Literal["ebu", "dolby"]
Container = Literal["mkv", "mov"]


@flow(name="restore-title", flow_run_name="restore {title}", log_prints=False, result_serializer="json")
def restore_title(
    source: str,
    out: str,
    title: str,
    preset: Preset = "ebu-r128",
    separator: Separator = DEFAULT_SEPARATOR,
    device: Device = "auto",
    stream: int | Literal["all"] | None = None,
    checkpoint: str | None = None,
    target_lufs: float | None = None,
    ceiling_dbtp: float | None = None,
    gate: Gate | None = None,
    adm_profile: AdmProfile = "ebu",
    display_title: str | None = None,
    remux: Container | None = None,
    separation_deployment: str | None = None,
    shifts: int | None = None,
) -> dict[str, Any]:
    """Restore one title: extract, restore, separate, plan, normalise, render 7.1.4 + ADM, report.

    With ``stream="all"`` the first audio stream goes into the title folder and each other one
    into ``streams/<index>_<language>/`` with its own deliverables and QC; the remux holds them
    all; the result lists the others under ``"streams"``.

    Args:
        source: The video or audio file (any container ffmpeg reads), as the worker sees it.
        out: Output folder; the title's deliverables go to ``out/<title>/``.
        title: The title's folder name under ``out`` (letters, digits, ``._-``).
        preset: Loudness delivery spec: ebu-r128 (-23 LUFS, -1 dBTP), atsc-a85 (-24, -2), netflix (-27 dialogue-gated, -2), or custom (give target_lufs).
        separator: Dialogue/music/effects separator: neural (the shipped band-split model) or dsp (no weights).
        device: Where separation runs: auto (a GPU when there is one), cpu or cuda.
        stream: Audio stream to restore, 0-based among the file's audio streams, or "all"; empty: the first.
        checkpoint: Another neural separator checkpoint (.safetensors); empty: the shipped one.
        target_lufs: Target integrated loudness, LUFS (makes the spec custom unless it is the preset's).
        ceiling_dbtp: True-peak ceiling, dBTP (makes the spec custom unless it is the preset's).
        gate: Loudness gating: programme or dialogue (makes the spec custom unless it is the preset's).
        adm_profile: ADM BWF profile of adm.wav: ebu (EBU Tech 3392 / BS.2076) or dolby (Dolby Atmos master, bed up to 7.1.2).
        display_title: The title as written, for qc.json and the ADM programme name; empty: ``title``.
        remux: Also write remux.mkv or remux.mov: the source's pictures with the restored soundtrack; empty: no remux.
        separation_deployment: Run the separation as a run of this deployment of separate-title (e.g. separate-title/separate-title-k8s-gpu), whose workers hold the GPU and mount the same output folder; empty: in this flow run.
        shifts: Neural separator: average this many passes, each on the STFT grid moved by a fraction of a hop (better stems, that many times the separation time); empty: the checkpoint's (1).
    """
    request = dict(locals())  # the run's arguments, as run_request records them
    title_dir = str(Path(out) / title)
    name = display_title or title
    spec = (preset, separator, device, checkpoint, target_lufs, ceiling_dbtp, gate, adm_profile, separation_deployment,
            shifts)
    with title_lock(title_dir):  # a second run of this title is refused, never interleaved with this one
        drop_run_record(title_dir)  # any file may change from here on; the record comes back at the end
        first, extra = stream, []
        if stream == ALL_STREAMS:
            from filmrestore.media import probe_audio_streams

            streams = probe_audio_streams(source)[0]
            first, extra = streams[0].audio_index, streams[1:]
        others = []
        for chosen in extra:
            folder = str(Path(title_dir) / stream_folder(chosen))
            done = _restore_stream(source, folder, chosen.audio_index, name, *spec)
            others.append((done, stage(report_task, source, folder, list(done),
                                       f"{name} ({chosen.language or f'stream {chosen.audio_index}'})")))
        done = _restore_stream(source, title_dir, first, name, *spec)
        manifests = list(done)
        if remux:  # every stream's extract and render manifests, the title folder's first
            every = [done, *(d for d, _ in others)]
            manifests.append(stage(remux_task, source, [d.extract for d in every], [d.render for d in every],
                                   title_dir, remux))
        result = stage(report_task, source, title_dir, manifests, name)
        if stream == ALL_STREAMS:
            result = {**result, "streams": [r for _, r in others]}
        write_run_record(title_dir, run_request({**request, "display_title": name}), result)
        return result


class StreamStages(NamedTuple):
    """The manifests of one audio stream's six stages, in the order they run."""

    extract: StageManifest
    restore: StageManifest
    separate: StageManifest
    plan: StageManifest
    normalize: StageManifest
    render: StageManifest


def _restore_stream(source: str, title_dir: str, stream: int | None, name: str, preset: str, separator: str,
                    device: str, checkpoint: str | None, target_lufs: float | None, ceiling_dbtp: float | None,
                    gate: str | None, adm_profile: str, separation_deployment: str | None = None,
                    shifts: int | None = None) -> StreamStages:
    """The six stages of one audio stream into ``title_dir``: their manifests, extract to render."""
    extracted = stage(extract_task, source, title_dir, stream)
    restored = stage(restore_task, extracted, title_dir)
    if separation_deployment:  # a run of its own where the GPUs are (flows/separate_title.py)
        from filmrestore.flows.separate_title import separate_elsewhere_task

        stems = stage(separate_elsewhere_task, separation_deployment, restored, title_dir, separator, device,
                      checkpoint, shifts)
    else:
        stems = stage(separate_task, restored, title_dir, separator, device, checkpoint, shifts)
    plan = stage(plan_task, stems, title_dir, adm_profile)
    loudness = stage(normalize_task, restored, stems, plan, title_dir, preset, target_lufs, ceiling_dbtp, gate)
    rendered = stage(render_task, stems, plan, loudness, title_dir, adm_profile, name)
    return StreamStages(extracted, restored, stems, plan, loudness, rendered)


def stage(task: Task, *args: Any) -> Any:
    """Run one stage: as its Prefect task inside a flow run (the UI shows it; Prefect retries it),
    else in this process as the task's plain function, retried by the same rule
    (:func:`~filmrestore.errors.is_transient`, the task's retry count and delay)."""
    if FlowRunContext.get() is not None:
        return task(*args)
    for attempt in range(task.retries + 1):
        try:
            return task.fn(*args)
        except Exception as exc:
            if attempt == task.retries or not is_transient(exc):
                raise
            logging.getLogger(STAGE_LOGGER).warning("%s failed (%s: %s); retrying", task.name,
                                                    type(exc).__name__, exc)
            time.sleep(float(task.retry_delay_seconds or 0))
    raise AssertionError("unreachable")


def check_deployment(name: str, api: str | None) -> None:
    """Refuse a deployment a title flow would start (``separation_deployment``) when there is no
    Prefect server or the server has no deployment of that name."""
    if api is None:
        raise ConfigError(f"separation_deployment {name!r} needs a Prefect server (PREFECT_API_URL) whose "
                          "workers run it")
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(f"separation_deployment {name!r}: the Prefect server at {api} has no deployment "
                              "of that name (prefect deploy --prefect-file deploy/prefect.yaml)") from None


def validate_options(preset: str = "ebu-r128", separator: str = DEFAULT_SEPARATOR, device: str = "auto",
                     stream: int | str | None = None, checkpoint: str | None = None, target_lufs: float | None = None,
                     ceiling_dbtp: float | None = None, gate: str | None = None, adm_profile: str = "ebu",
                     remux: str | None = None, separation_deployment: str | None = None,
                     shifts: int | None = None) -> None:
    """Refuse a bad option before any stage runs (one ConfigError naming it): the delivery spec,
    the separator and its checkpoint (read and checked, not run) and shifts, the device, the stream index,
    the ADM profile and the separation deployment's name."""
    from filmrestore.loudness.specs import get_preset
    from filmrestore.upmix.adm import get_profile

    from filmrestore.remux import CONTAINERS

    get_preset(preset, target_lufs, ceiling_dbtp, gate)
    get_profile(adm_profile)
    if separation_deployment is not None and separation_deployment.count("/") != 1:
        raise ConfigError(f"separation_deployment {separation_deployment!r} is not a deployment name "
                          "(<flow>/<deployment>, e.g. separate-title/separate-title-k8s-gpu)")
    if remux is not None and remux not in CONTAINERS:
        raise ConfigError(f"unknown remux container {remux!r}: use {' or '.join(CONTAINERS)}")
    if stream is not None and stream != ALL_STREAMS and (not isinstance(stream, int) or isinstance(stream, bool)
                                                         or stream < 0):
        raise ConfigError(f"stream must be a non-negative integer (0-based among audio streams) or 'all', "
                          f"got {stream!r}")
    from filmrestore.separation import SEPARATOR_NAMES, get_separator, resolve_device

    if separator not in SEPARATOR_NAMES:
        raise ConfigError(f"unknown separator {separator!r}: available are {', '.join(SEPARATOR_NAMES)}")
    if separation_deployment is None:  # else the device is the separation run's, on its own machine
        resolve_device(device)
    if checkpoint is not None or separator == "neural" or shifts is not None:
        get_separator(separator, checkpoint, shifts)  # a missing, truncated or mismatched checkpoint fails here


def title_bytes(duration_s: float, n_channels: int, remux: bool = False) -> int:
    """About what one audio stream of a title writes, with some margin: the 24-bit deliverables
    (bed 12 ch, the ADM file's bed and objects up to 20 ch, fold-downs 8 ch, four stems), the float
    intermediates of ``work/`` (soundtrack, restored, three stems) and, with ``remux``, its audio
    in the remux (21 ch; the copied pictures are the caller's to add, once per title). A 10 s mono
    title measured 6.5 MB/s against 7.3 estimated."""
    per_second = 48_000 * (3 * (12 + 20 + 8 + 4 * n_channels + (21 if remux else 0)) + 4 * 5 * n_channels)
    return int(per_second * duration_s)


def _bytes_in(folder: Path) -> int:
    """Bytes already in a title folder (a re-run reuses or replaces them)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def run_restore_title(source: str | Path, out: str | Path, title: str | None = None, **options: Any) -> dict[str, Any]:
    """Validate the paths and options, then run the flow (the CLI and tests call this): as a
    Prefect flow run when :func:`prefect_api_url` finds an API, else in this process."""
    source = Path(source)
    if not source.is_file():
        raise MediaError(source, "source file does not exist" if not source.exists() else "is not a regular file")
    if source.stat().st_size == 0:
        raise MediaError(source, "is empty (0 bytes)")
    from filmrestore.media import probe_audio_streams, select_stream

    streams = probe_audio_streams(source)[0]
    every = options.get("stream") == ALL_STREAMS
    chosen_streams = streams if every and streams else [select_stream(source, streams, options.get("stream"))]
    from filmrestore.upmix.foldown import SOURCE_CHANNELS

    for chosen in chosen_streams:  # refused now, not after separation
        if chosen.n_channels not in SOURCE_CHANNELS:
            raise MediaError(source, f"audio stream {chosen.audio_index} has {chosen.n_channels} channels "
                             f"({chosen.channel_layout or 'no layout'}); filmrestore takes mono, stereo, 3.0, 4.0, 5.0, "
                             f"5.1, 7.1 and 7.1.4 soundtracks ({', '.join(map(str, SOURCE_CHANNELS))} channels): "
                             "choose another stream with --stream")
    validate_options(**options)
    if options.get("separation_deployment"):
        check_deployment(options["separation_deployment"], prefect_api_url())
    folder, display = title_names(source, title)
    refuse_overwriting(source, out_dirs=[Path(out) / folder])
    plan_file = Path(out) / folder / "plan.json"
    if plan_file.is_file():  # an engineer's edited plan: a broken one is refused now, not after separation
        from filmrestore.upmix.adm import get_profile, scene_for
        from filmrestore.upmix.plan import load_plan

        scene_for(load_plan(plan_file), get_profile(options.get("adm_profile", "ebu")))
    ensure_writable_dir(out)
    timed = [c for c in chosen_streams if c.duration_s]
    if timed:  # a full disk is refused now, not after an hour of restoration
        longest = max(c.duration_s for c in timed)
        remuxed = bool(options.get("remux"))
        needed = sum(title_bytes(c.duration_s, c.n_channels, remuxed) for c in timed) \
            + (source.stat().st_size if remuxed else 0) - _bytes_in(Path(out) / folder)  # the pictures once
        what = (f"{len(timed)} audio streams of up to {longest / 60:.1f} min" if len(timed) > 1 else
                f"a {longest / 60:.1f} min {timed[0].n_channels}-channel title")
        require_free_space(out, needed, what)
    args = (str(source.resolve()), str(Path(out).resolve()), folder)
    api = prefect_api_url()
    if api is None:
        return restore_title.fn(*args, display_title=display, **options)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        return restore_title(*args, display_title=display, **options)
