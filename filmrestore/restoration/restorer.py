"""Decide what to restore (:func:`plan_restoration`), chain the processors (:class:`Restorer`)
and stream a file through them (:func:`restore_file`); also the two-channel transfer faults
(a lost side, a reversed polarity) that are fixed before anything else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from filmrestore.audio import AudioWriter, iter_blocks, read_audio, read_channel_mask, read_info
from filmrestore.errors import ConfigError, EmptyAudioError
from filmrestore.manifest import FileRecord
from filmrestore.restoration.blocks import Progress, Sample, as_segments, check_block, map_segments
from filmrestore.restoration.clicks import CLICK_MIN_COUNT, CLICK_MIN_RATE_PER_MIN, ClickRemover
from filmrestore.restoration.dc import DCRemover, DCReport, detect_dc
from filmrestore.restoration.hiss import Dehisser, HissReport, detect_hiss
from filmrestore.restoration.hum import HumRemover, HumReport, detect_hum



CHANNEL_DEAD_DB = 40.0  # a stereo channel this far under the other, ...
CHANNEL_DEAD_DBFS = -60.0  # ... and under -60 dBFS, is dead (a transfer that lost a side)
CHANNEL_POLARITY_CORRELATION = -0.7  # two sides this anti-correlated, within 3 dB, carry one track
CHANNEL_POLARITY_MAX_DIFF_DB = 3.0  # with one polarity reversed (a wiring fault of the transfer)
DETECT_SPAN_S = 60.0
DETECT_N_SEGMENTS = 6


@dataclass(frozen=True)
class ChannelReport:
    """Faults of a 2-channel transfer of a (mostly mono) legacy track.

    ``fault`` is ``"dead-channel"`` (channel ``dead`` carries nothing; the other is
    copied into it), ``"polarity"`` (the second channel is the first inverted; it is
    turned back) or None. ``levels_dbfs`` are the channels' RMS levels and
    ``correlation`` their correlation coefficient (None unless 2 channels).
    """

    levels_dbfs: list[float]
    correlation: float | None = None
    fault: str | None = None
    dead: int | None = None


def detect_channel_faults(x: Sample) -> ChannelReport:
    """Check a stereo sample [shape=(2, n_frames)] (or segments) for a dead side or reversed polarity.

    Rule: a channel is dead when it is >= 40 dB under the other and under -60 dBFS;
    the polarity is reversed when the channels correlate at <= -0.7 with levels within
    3 dB (real stereo is rarely below -0.3). Other channel counts are left alone: a 5.1
    mix has silent channels by design.
    """
    segments = as_segments(x)
    n_channels = segments[0].shape[0]
    power = sum(np.sum(seg ** 2, axis=1) for seg in segments)
    n = sum(seg.shape[1] for seg in segments)
    levels = 10.0 * np.log10(power / max(n, 1) + 1e-30)
    rounded = [round(float(v), 2) for v in np.maximum(levels, -300.0)]
    if n_channels != 2 or n == 0:
        return ChannelReport(rounded)
    cross = sum(float(np.dot(seg[0], seg[1])) for seg in segments)
    correlation = cross / np.sqrt(power[0] * power[1]) if power.min() > 0 else 0.0
    loud, quiet = int(np.argmax(levels)), int(np.argmin(levels))
    if levels[loud] - levels[quiet] >= CHANNEL_DEAD_DB and levels[quiet] < CHANNEL_DEAD_DBFS:
        return ChannelReport(rounded, round(correlation, 4), "dead-channel", quiet)
    if correlation <= CHANNEL_POLARITY_CORRELATION and abs(levels[0] - levels[1]) <= CHANNEL_POLARITY_MAX_DIFF_DB:
        return ChannelReport(rounded, round(correlation, 4), "polarity")
    return ChannelReport(rounded, round(correlation, 4))


def fix_channels(block: np.ndarray, report: ChannelReport) -> np.ndarray:
    """Apply the fix for ``report.fault`` to a block [shape=(2, n)] (a copy; sample-wise, no latency)."""
    if report.fault == "dead-channel" and report.dead is not None:
        out = block.copy()
        out[report.dead] = block[1 - report.dead]
        return out
    if report.fault == "polarity":
        return block * np.array([[1.0], [-1.0]], dtype=block.dtype)
    return block


@dataclass(frozen=True)
class ClickReport:
    """Clicks found in the analysed sample and whether they qualify for declicking."""

    n_clicks: int
    analysed_s: float
    rate_per_min: float
    detected: bool


@dataclass(frozen=True)
class RestorePlan:
    """What was found in the analysed sample and what a :class:`Restorer` will apply.

    A strength of 0 switches a processor off; the detectors set it to
    ``strength`` only where their rule found damage.
    """

    hum: HumReport
    clicks: ClickReport
    hiss: HissReport
    hum_strength: float = 0.0
    click_strength: float = 0.0
    hiss_strength: float = 0.0
    channels: ChannelReport = field(default_factory=lambda: ChannelReport([]))
    dc: DCReport = field(default_factory=DCReport)

    @property
    def applied(self) -> list[str]:
        """Names of the processors that will run, in processing order."""
        names = ("declick", "dehum", "dehiss")
        strengths = (self.click_strength, self.hum_strength, self.hiss_strength)
        fix = {"dead-channel": ["copy-live-channel"], "polarity": ["fix-polarity"]}.get(self.channels.fault or "", [])
        dc = ["remove-dc"] if self.dc.detected else []
        return fix + dc + [name for name, s in zip(names, strengths) if s > 0.0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the noise profile array is left out)."""
        return {
            "hum": {**asdict(self.hum), "strength": self.hum_strength},
            "clicks": {**asdict(self.clicks), "strength": self.click_strength},
            "hiss": {**self.hiss.to_dict(), "strength": self.hiss_strength},
            "channels": asdict(self.channels),
            "dc": asdict(self.dc),
            "applied": self.applied,
        }


def _click_events(positions: list[tuple[int, int, int]]) -> int:
    """Distinct clicks among ``(channel, start, stop)`` repairs: overlapping spans on several
    channels are one event (dust on an optical track reaches every channel it feeds)."""
    spans = sorted((start, stop) for _, start, stop in positions)
    events, end = 0, -1
    for start, stop in spans:
        if start >= end:
            events += 1
        end = max(end, stop)
    return events


def _count_clicks(segments: list[np.ndarray], sample_rate_hz: int, strength: float
                  ) -> tuple[int, list[np.ndarray]]:
    """Run a fresh :class:`ClickRemover` over each segment: the number of click events
    (see :func:`_click_events`) and the repaired segments."""
    def count(seg: np.ndarray) -> tuple[int, np.ndarray]:
        remover = ClickRemover(sample_rate_hz, seg.shape[0], strength, keep_positions=True)
        repaired = np.concatenate([remover.process(seg), remover.flush()], axis=1)
        return _click_events(remover.positions or []), repaired

    counted = map_segments(count, segments)
    return sum(n for n, _ in counted), [seg for _, seg in counted]


def plan_restoration(x_sample: Sample, sample_rate_hz: int, strength: float = 1.0) -> RestorePlan:
    """Detect a DC offset, hum, clicks and hiss in ``x_sample`` and decide what to apply.

    ``x_sample`` is [shape=(n_channels, n_frames)] or a list of such segments
    (a sparse sample of a long file; segments are never joined, so their seams
    are not mistaken for clicks). Each detector sees the sample as its
    processor in the :class:`Restorer` chain will: hum after declicking, hiss
    after declicking and dehumming.
    """
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"restoration strength must be in (0, 1], got {strength}")
    segments = as_segments(x_sample)
    channels = detect_channel_faults(segments)
    segments = [fix_channels(seg, channels) for seg in segments]
    dc = detect_dc(segments)
    if dc.detected:  # the later detectors see the sample as the chain will give it to them
        segments = [seg - np.asarray(dc.offsets)[:, None] for seg in segments]
    n_clicks, declicked = _count_clicks(segments, sample_rate_hz, strength)
    analysed_s = sum(s.shape[1] for s in segments) / sample_rate_hz
    rate = 60.0 * n_clicks / analysed_s
    clicks = ClickReport(n_clicks, round(analysed_s, 3), round(rate, 2),
                         n_clicks >= CLICK_MIN_COUNT and rate >= CLICK_MIN_RATE_PER_MIN)
    cleaned = declicked if clicks.detected else segments
    hum = detect_hum(cleaned, sample_rate_hz)  # a click train's comb spectrum is no hum
    if hum.fundamental_hz is not None:
        cleaned = [_dehum(seg, sample_rate_hz, hum, strength) for seg in cleaned]
    hiss = detect_hiss(cleaned, sample_rate_hz)
    return RestorePlan(hum, clicks, hiss, strength if hum.fundamental_hz else 0.0,
                       strength if clicks.detected else 0.0, strength if hiss.detected else 0.0, channels, dc)


def _dehum(x: np.ndarray, sample_rate_hz: int, hum: HumReport, strength: float) -> np.ndarray:
    remover = HumRemover(sample_rate_hz, x.shape[0], hum.fundamental_hz or 0.0, 0, strength, hum.harmonics_hz)
    return remover.process(x).astype(np.float64)


class Restorer:
    """The planned processors chained: channel fix -> DC removal -> declick -> dehum -> dehiss
    [blocks of shape=(n_channels, n)].

    Declicking comes first so that impulses are repaired before linear filters
    smear them. ``process`` returns aligned output lagging the input by at most
    ``latency_frames``; ``flush`` returns the rest, so the output has the
    input's length and no time shift.
    """

    def __init__(self, sample_rate_hz: int, n_channels: int, plan: RestorePlan) -> None:
        self.n_channels = n_channels
        self.plan = plan
        self._declicker = (ClickRemover(sample_rate_hz, n_channels, plan.click_strength)
                           if plan.click_strength > 0 else None)
        self._stages: list[Any] = [DCRemover(sample_rate_hz, n_channels)] if plan.dc.detected else []
        if self._declicker is not None:
            self._stages.append(self._declicker)
        if plan.hum_strength > 0 and plan.hum.fundamental_hz is not None:
            self._stages.append(HumRemover(sample_rate_hz, n_channels, plan.hum.fundamental_hz, 0,
                                           plan.hum_strength, plan.hum.harmonics_hz))
        if plan.hiss_strength > 0:
            self._stages.append(Dehisser(sample_rate_hz, n_channels, plan.hiss.noise_psd, plan.hiss_strength))
        self.latency_frames = sum(stage.latency_frames for stage in self._stages)

    @property
    def n_clicks_repaired(self) -> int:
        return 0 if self._declicker is None else self._declicker.n_clicks_repaired

    def process(self, block: np.ndarray) -> np.ndarray:
        """Run one block through the chain; returns the aligned output ready so far (float32)."""
        y = fix_channels(check_block(block, self.n_channels), self.plan.channels)
        for stage in self._stages:
            y = stage.process(y)
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """Flush each stage in turn, feeding its tail to the stages after it."""
        tail = np.zeros((self.n_channels, 0), np.float32)
        for stage in self._stages:
            head = stage.process(tail) if tail.shape[1] else np.zeros((self.n_channels, 0), np.float32)
            tail = np.concatenate([head, stage.flush()], axis=1)
        return tail.astype(np.float32)


def read_detection_sample(path: str | Path, span_s: float = DETECT_SPAN_S,
                          n_segments: int = DETECT_N_SEGMENTS) -> list[np.ndarray]:
    """A sample of a file for detection: all of it up to ``span_s``, else ``n_segments``
    evenly spaced segments totalling ``span_s`` (memory stays bounded for a feature film)."""
    info = read_info(path)
    span_frames = int(span_s * info.sample_rate_hz)
    if info.n_frames <= span_frames:
        return [read_audio(path)]
    seg_frames = span_frames // n_segments
    starts = np.linspace(0, info.n_frames - seg_frames, n_segments).astype(int)
    return [read_audio(path, int(s), seg_frames) for s in starts]


def restore_file(in_path: str | Path, out_path: str | Path, plan: RestorePlan | None = None,
                 on_progress: Progress | None = None, block_s: float = 10.0
                 ) -> tuple[FileRecord, dict[str, Any]]:
    """Restore ``in_path`` into ``out_path`` (float WAV/BW64), streaming in blocks.

    Without a ``plan``, one is made from :func:`read_detection_sample` of the
    file. Returns the output's record and a report: what was found and done.
    Raises :class:`EmptyAudioError` for a file without samples.
    """
    info = read_info(in_path)
    if info.n_frames == 0:
        raise EmptyAudioError(in_path, "no samples to restore")
    if plan is None:
        plan = plan_restoration(read_detection_sample(in_path), info.sample_rate_hz)
    restorer = Restorer(info.sample_rate_hz, info.n_channels, plan)
    done = 0
    # The input's speaker mask goes with its channels (a 5.1(side) soundtrack stays 5.1(side)).
    with AudioWriter(out_path, info.sample_rate_hz, info.n_channels, "FLOAT", read_channel_mask(in_path)) as writer:
        for block in iter_blocks(in_path, max(1, int(block_s * info.sample_rate_hz))):
            writer.write(restorer.process(block))
            done += block.shape[1]
            if on_progress is not None:
                on_progress(done, info.n_frames)
        writer.write(restorer.flush())
        writer.close()
    report = {**plan.to_dict(), "clicks_repaired": restorer.n_clicks_repaired,
              "input": str(in_path), "duration_s": round(info.duration_s, 6)}
    return FileRecord.from_writer(writer), report

