"""CLI commands of the neural separator's life cycle: make-dataset, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from filmrestore.flows.cli import CheckpointOpt, Device, DeviceOpt, SeparatorOpt, app, console, expected_errors


@app.command("make-dataset")
@expected_errors
def make_dataset(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create OUT_DIR/train and OUT_DIR/test in.")],
    items: Annotated[int, typer.Option("--items", help="Number of items (train + test).")] = 50,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each item, seconds.")] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the item generator.")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of items (and source files) held out.")] = 0.2,
) -> None:
    """Build a DnR-style dataset (mix/speech/music/sfx.wav per item) from synthesis and packaged recordings."""
    from filmrestore.separation.dataset import make_dataset as build

    folders = build(out_dir, items, seconds, seed, test_fraction)
    console.print(f"{out_dir}: {len(folders['train'])} train, {len(folders['test'])} held-out test items "
                  f"(sources in {out_dir / 'dataset.json'})")


@app.command()
@expected_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="DnR folder (its train/ subfolder when present).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors; config beside it as .json).")],
    epochs: Annotated[int, typer.Option("--epochs")] = 10,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    segment: Annotated[float, typer.Option("--segment", help="Training segment length, seconds.")] = 3.0,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (AdamW).")] = 1e-3,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop after the epoch that passes this wall time.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of resuming from OUT.")] = False,
    device: DeviceOpt = Device.auto,
) -> None:
    """Train the band-split neural separator (resumes from OUT when it exists)."""
    from filmrestore.separation.train import TrainConfig
    from filmrestore.separation.train import train as run_training

    def log(record: dict) -> None:
        if record["event"] == "epoch":
            console.print(f"epoch {record['epoch']}: step {record['step']}, loss {record['loss']:.4f}, "
                          f"{record['elapsed_s']:.0f} s")

    config = TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                         segment_s=segment, learning_rate=lr, max_minutes=max_minutes)
    path = run_training(data_dir, out, config, device=device.value, resume=not fresh, on_log=log)
    console.print(f"checkpoint: {path}")


@app.command()
@expected_errors
def evaluate(
    data_dir: Annotated[Path, typer.Argument(help="DnR folder (its test/ subfolder when present).")],
    separator: SeparatorOpt = "dsp",
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.cpu,
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Evaluate only the first N items.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """SI-SDR and SI-SDR improvement per stem, beside the mixture and oracle-mask bounds."""
    from filmrestore.separation import get_separator, resolve_device
    from filmrestore.separation.evaluate import evaluate as run_evaluation
    from filmrestore.separation.evaluate import format_table

    model = get_separator(separator, str(checkpoint) if checkpoint else None)
    report = run_evaluation(data_dir, model, device=str(resolve_device(device.value)), max_items=max_items)
    typer.echo(json.dumps(report, indent=1) if as_json else format_table(report))
