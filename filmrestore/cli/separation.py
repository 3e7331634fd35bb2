"""CLI commands of the neural separator's life cycle: make-bank, make-dataset, train, evaluate."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from filmrestore import DEFAULT_SEPARATOR

from filmrestore.cli.app import app, console, expected_errors
from filmrestore.cli.options import CheckpointOpt, Device, DeviceOpt, SeparatorOpt, ShiftsOpt


@app.command("make-bank")
@expected_errors
def make_bank(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the source bank to (speech/music/effects.i16 + bank.json).")],
) -> None:
    """Decode the training recordings (installed by .ci/setup-training) into a memory-mapped source bank."""
    from filmrestore.separation.training.bank import build_bank

    bank = build_bank(out_dir)
    for name, row in bank.summary().items():
        console.print(f"{name:<16} {row['hours']:8.2f} h {row['clips']:7d} clips {row['groups']:6d} groups",
                      markup=False, highlight=False)


class SpeechWeighting(str, Enum):
    """How the training mixer draws dialogue speakers (``MixerConfig.speech_weighting``)."""

    hours = "hours"
    group = "group"


@app.command("make-dataset")
@expected_errors
def make_dataset(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create OUT_DIR/train and OUT_DIR/test in.")],
    items: Annotated[int, typer.Option("--items", help="Number of items (train + test; with --bank, of the split).")] = 50,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each item, seconds.")] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the item generator.")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of items (and source files) held out.")] = 0.2,
    bank: Annotated[Optional[Path], typer.Option("--bank", help="Mix legacy-film items from this source bank's split instead.")] = None,
    split: Annotated[str, typer.Option("--split", help="With --bank: the bank split to mix from (test, valid, train).")] = "test",
    speech_weighting: Annotated[SpeechWeighting, typer.Option("--speech-weighting", help="With --bank: draw "
                                                  "dialogue speakers alike (group, as the recorded figures) or "
                                                  "by their recorded hours (hours).")] = SpeechWeighting.group,
    p_codec: Annotated[float, typer.Option("--p-codec", help="With --bank: share of items whose mix went through an MP2 "
                                           "or AAC round trip, as a broadcast or streaming master did (0: none, the "
                                           "recorded figures' items).")] = 0.0,
) -> None:
    """Build a DnR-style dataset (mix/speech/music/sfx.wav per item) from packaged recordings."""
    if bank is not None:
        from filmrestore.separation.training.dataset import make_bank_dataset

        from filmrestore.separation.training.mixer import MixerConfig

        mixer = MixerConfig(segment_s=seconds, speech_weighting=speech_weighting.value, p_codec=p_codec)
        folders = make_bank_dataset(bank, out_dir, split, items, seconds, seed, mixer)
        console.print(f"{out_dir / split}: {len(folders)} items of {seconds:g} s mixed from {bank} ({split} split)")
        return
    from filmrestore.separation.training.dataset import make_dataset as build

    built = build(out_dir, items, seconds, seed, test_fraction)
    console.print(f"{out_dir}: {len(built['train'])} train, {len(built['test'])} held-out test items "
                  f"(sources in {out_dir / 'dataset.json'})")


@app.command()
@expected_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="Source bank (make-bank), or DnR folder (its train/ subfolder when present).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors; config beside it as .json).")],
    epochs: Annotated[int, typer.Option("--epochs")] = 10,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    segment: Annotated[float, typer.Option("--segment", help="Training segment length, seconds.")] = 6.0,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", help="Linear warmup steps before the cosine decay.")] = 200,
    total_steps: Annotated[Optional[int], typer.Option("--total-steps", help="Step at which the cosine reaches its floor (default: epochs x steps).")] = None,
    ema: Annotated[float, typer.Option("--ema", help="EMA decay of the weights that are validated and saved (0: off).")] = 0.999,
    valid_examples: Annotated[int, typer.Option("--valid-examples", help="Fixed validation mixtures; the best checkpoint is kept.")] = 32,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start a fresh run from this checkpoint's weights.")] = None,
    deepen: Annotated[Optional[str], typer.Option("--deepen", metavar="D1,D2,...", help="With --init: append one "
                                                  "identity block pair per dilation (more capacity, same start).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Torch threads (default: torch's).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader processes mixing examples.")] = 1,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop after the epoch that passes this wall time.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of resuming from OUT's state.")] = False,
    dialogue_weight: Annotated[float, typer.Option("--dialogue-weight", help="Weight of the dialogue stem in the loss "
                                                   "(music and effects weigh 1).")] = 1.0,
    p_codec: Annotated[float, typer.Option("--p-codec", help="Bank data: share of mixtures sent through an MP2 or AAC "
                                           "round trip (ffmpeg).")] = 0.3,
    p_restore: Annotated[float, typer.Option("--p-restore", help="Bank data: share of mixtures restored as the "
                                             "restore stage would (hum, clicks, hiss found and repaired).")] = 0.2,
    p_solo: Annotated[float, typer.Option("--p-solo", help="Bank data: share of mixtures with one stem alone "
                                          "(dialogue over silence, music or effects alone).")] = 0.0,
    speech_weighting: Annotated[SpeechWeighting, typer.Option("--speech-weighting", help="Bank data: draw dialogue speakers "
                                                  "in proportion to their recorded hours (hours) or every "
                                                  "speaker/language alike (group).")] = SpeechWeighting.hours,
    loss_norm: Annotated[int, typer.Option("--loss-norm", help="2: RMS-SNR loss terms, whose optimum in each bin is "
                                           "the mean answer (what SI-SDR rewards); 1: L1-SNR (the median).")] = 2,
    spec_weight: Annotated[float, typer.Option("--spec-weight", help="Weight of the STFT-magnitude loss terms "
                                               "beside the waveform term; 0: the waveform alone (magnitudes are "
                                               "blind to phase, which SI-SDR is not).")] = 1.0,
    device: DeviceOpt = Device.auto,
) -> None:
    """Train the band-split neural separator (resumes from OUT's state files when they exist)."""
    from filmrestore.separation.training.train import TrainConfig
    from filmrestore.separation.training.train import train as run_training

    def log(record: dict) -> None:
        if record["event"] == "skipped":
            console.print(f"step {record['step']}: batch skipped (non-finite loss or gradient)", markup=False,
                          highlight=False)
        if record["event"] == "epoch":
            valid = record.get("valid") or {}
            figures = " ".join(f"{k.split('_')[0]} {v:+.2f}" for k, v in valid.items())
            console.print(f"epoch {record['epoch']}: step {record['step']}, loss {record['loss']:.3f}, "
                          f"{record['hours_seen']:.2f} h seen, {record['elapsed_s']:.0f} s"
                          + (f", valid SI-SDRi dB: {figures}" if figures else ""), markup=False, highlight=False)

    config = TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                         segment_s=segment, learning_rate=lr, warmup_steps=warmup, total_steps=total_steps,
                         ema_decay=ema, valid_examples=valid_examples, max_minutes=max_minutes,
                         num_workers=workers, threads=threads, dialogue_weight=dialogue_weight, p_codec=p_codec,
                         p_restore=p_restore, p_solo=p_solo, speech_weighting=speech_weighting.value,
                         loss_norm=loss_norm, spec_weight=spec_weight)
    layers = tuple(int(d) for d in deepen.split(",")) if deepen else ()
    path = run_training(data_dir, out, config, device=device.value, resume=not fresh, on_log=log, init=init,
                        deepen=layers)
    console.print(f"checkpoint: {path}")


@app.command()
@expected_errors
def evaluate(
    data_dir: Annotated[Path, typer.Argument(help="DnR folder (its test/ subfolder when present).")],
    separator: SeparatorOpt = DEFAULT_SEPARATOR,
    checkpoint: CheckpointOpt = None,
    shifts: ShiftsOpt = None,
    device: DeviceOpt = Device.cpu,
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Evaluate only the first N items.")] = None,
    against: Annotated[Optional[str], typer.Option("--against", help="Also evaluate this neural checkpoint, or "
                                                   "'dsp', on the same items and print the paired difference "
                                                   "(mean +- standard error per stem).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """SI-SDR and SI-SDR improvement per stem, beside the mixture and oracle-mask bounds."""
    from filmrestore.separation import get_separator, resolve_device
    from filmrestore.separation.training.evaluate import evaluate as run_evaluation
    from filmrestore.separation.training.evaluate import format_paired, format_table, paired_difference

    from filmrestore.cli.progress import done_line
    from filmrestore.stagelog import terminal_progress

    def run(model, label: str) -> dict:
        report = run_evaluation(data_dir, model, device=str(resolve_device(device.value)), max_items=max_items,
                                on_progress=terminal_progress("evaluate"))
        done_line("evaluate", f"{report['n_items']} items, {label}")
        return report

    model = get_separator(separator, str(checkpoint) if checkpoint else None, shifts)
    baseline = (get_separator("dsp") if against == "dsp" else get_separator("neural", against)) if against else None
    name = str(checkpoint or separator)
    report = run(model, name)
    if baseline is None:
        typer.echo(json.dumps(report, indent=1) if as_json else format_table(report))
        return
    other_name = str(against)
    other = run(baseline, other_name)
    paired = paired_difference(report, other)
    if as_json:
        typer.echo(json.dumps({**report, "against": {"name": other_name, "report": other,
                                                     "paired_difference": paired}}, indent=1))
    else:
        typer.echo("\n".join([format_table(report), format_table(other), format_paired(paired, name, other_name)]))

