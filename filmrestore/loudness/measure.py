"""Measure a whole array or stream a file through the meter, dialogue-gated when asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from filmrestore.audio import iter_blocks, read_channel_mask, read_info
from filmrestore.errors import AudioFormatError
from filmrestore.loudness.channels import channel_weights_for
from filmrestore.loudness.meter import LoudnessMeter, LoudnessReport
from filmrestore.loudness.speech import iter_speech_activity


def measure_array(x: np.ndarray, sample_rate_hz: int, layout: str | None = None,
                  speech: np.ndarray | None = None,
                  channel_weights: np.ndarray | list[float] | None = None,
                  true_peak: bool = True) -> LoudnessReport:
    """Measure a whole [shape=(C, T)] array (``speech``: optional per-100 ms mask).

    Weights come from ``channel_weights`` if given, else from ``layout`` / the channel count.
    """
    x = np.atleast_2d(x)
    if channel_weights is None:
        channel_weights = channel_weights_for(x.shape[0], layout)
    meter = LoudnessMeter(sample_rate_hz, x.shape[0], channel_weights, true_peak=true_peak)
    meter.process(x)
    if speech is not None:
        meter.process_speech(speech)
    return meter.result()


def measure_file(path: str | Path, block_frames: int = 480_000, layout: str | None = None,
                 dialogue_path: str | Path | None = None,
                 on_progress: Callable[[int, int], None] | None = None, *,
                 dialogue_from_programme: bool = False, true_peak: bool = True) -> LoudnessReport:
    """Stream a WAV/BW64 file through the meter and report it.

    Dialogue gating: with ``dialogue_path`` (a dialogue stem of the same length) speech is
    found in the stem (:func:`speech_activity`, ``source="stem"``); else with
    ``dialogue_from_programme`` silero-vad listens to the programme itself
    (``source="programme"``, a second read of the file); else ``dialogue_lufs`` is None.
    ``on_progress(done_frames, total_frames)`` is called after each block.
    """
    info = read_info(path)
    if info.n_frames == 0:
        raise AudioFormatError(path, "has no samples to measure")
    meter = LoudnessMeter(info.sample_rate_hz, info.n_channels,
                          channel_weights_for(info.n_channels, layout, read_channel_mask(path)), true_peak=true_peak)
    for block in iter_blocks(path, block_frames):
        meter.process(block)
        if on_progress is not None:
            on_progress(meter.n_frames, info.n_frames)
    if dialogue_path is not None:
        _check_same_rate(info.sample_rate_hz, dialogue_path)
        for mask in iter_speech_activity(dialogue_path):
            meter.process_speech(mask)
    elif dialogue_from_programme:
        for mask in iter_speech_activity(path, source="programme"):
            meter.process_speech(mask)
    return meter.result()


def _check_same_rate(sample_rate_hz: int, dialogue_path: str | Path) -> None:
    dialogue_rate_hz = read_info(dialogue_path).sample_rate_hz
    if dialogue_rate_hz != sample_rate_hz:
        raise AudioFormatError(dialogue_path, f"dialogue stem at {dialogue_rate_hz} Hz, "
                               f"programme at {sample_rate_hz} Hz")


