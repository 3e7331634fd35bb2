"""Streaming scene renderer: stems + plan -> feeds, DirectSpeakers bed, panned objects, 7.1.4 mix.

Per block of stems it computes, in one batched FFT pass (float32):

- the *feeds* that objects play (see :mod:`filmrestore.upmix.plan`): the
  dialogue through the LR4 all-pass of the ambience crossover (so every dry
  path has the same phase as the fronts, which get ``LP + g HP`` of that pair;
  separated stems are coherent pieces of one mix and must not partly cancel
  where they sum), and the front part of each side of music and effects;
- the *bed* (DirectSpeakers, the layout's WAV order): decorrelated ambience of
  music into sides, rears and heights and of effects into sides, rears and
  rear heights, all above the ambience crossover, jointly designed to fold
  down flat (:mod:`filmrestore.upmix.decorrelate`); and LFE1 from the low band
  of music + effects through an LR4 low-pass;
- the *mix*: the bed plus every object panned with the EBU ADM renderer's
  point-source panner (:mod:`filmrestore.upmix.panner`), its gains
  interpolated over time exactly as BS.2127 does (a block without
  jumpPosition ramps from the previous block's gains over its duration; with
  jumpPosition over its interpolationLength; the first block does not ramp).

A multichannel source (3.0 to 7.1.4) is kept in place instead (:class:`SourceRouting`):
each of its channels plays, sample for sample, from the bed speaker at its position; the
positions it lacks get ambience that cancels in the stereo fold-down.

Every filter is an FIR (the LR4 IIRs truncated where they have decayed below
float32 precision) applied by overlap-add with a carried tail, so the renderer
has zero latency and block-wise output equals whole-signal output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.fft

from filmrestore.errors import ConfigError
from filmrestore.upmix.admtime import grid_samples
from filmrestore.upmix.decorrelate import design_side_decorrelators, lr4_impulse_response, random_phase_firs
from filmrestore.layouts import BED_7_1_4, Layout, Speaker, source_layout
from filmrestore.upmix.foldown import downmix_to_stereo, fold_down_matrix
from filmrestore.upmix.extent import extent_gains
from filmrestore.upmix.panner import point_source_gains
from filmrestore.upmix.plan import EVENT_FEEDS, EVENT_SECTORS, FEEDS, STEM_NAMES, BedRules, Block, ObjectPlan, Plan, make_plan

MINUS_3_DB = float(np.sqrt(0.5))
INPUTS: tuple[str, ...] = FEEDS
# Ambience sends per stem and side: (label, level relative to the stem's ambience gain, dB).
_AMBIENCE_SENDS = {
    "music": {"L": (("M+090", 0.0), ("M+135", 0.0), ("U+045", 0.0), ("U+135", 0.0)),
              "R": (("M-090", 0.0), ("M-135", 0.0), ("U-045", 0.0), ("U-135", 0.0))},
    "effects": {"L": (("M+090", 0.0), ("M+135", 0.0), ("U+135", -3.0)),
                "R": (("M-090", 0.0), ("M-135", 0.0), ("U-135", -3.0))},
}
_LR4_TAPS = 2048
_FFT_SIZE = 16384


def db_to_gain(level_db: float) -> float:
    """Amplitude gain of a level in dB."""
    return float(10.0 ** (level_db / 20.0))


class FirMatrix:
    """A fixed MIMO FIR filter over consecutive blocks: ``y_o = sum_i h_oi * x_i``.

    Batched FFT overlap-add in float32: each block is cut into hops of
    ``n_fft - n_taps + 1`` frames, all hops of all inputs go through one rfft,
    the products are summed per output and one irfft gives every output; the
    last ``n_taps - 1`` frames carry over to the next block.
    """

    def __init__(self, taps: list[tuple[int, int, np.ndarray]], n_inputs: int, n_outputs: int,
                 n_fft: int = _FFT_SIZE, workers: int = 1, same_as: dict[int, int] | None = None) -> None:
        """``taps``: (output, input, FIR) triples; paths with one FIR from several inputs share a product.

        ``same_as`` maps an input to another one known to carry the same signal (a mono stem's
        two sides), so that its spectrum is computed once.
        """
        n_taps = max(len(h) for _, _, h in taps)
        if 2 * n_taps - 2 > n_fft:
            raise ConfigError(f"FIR of {n_taps} taps is too long for an FFT of {n_fft}")
        self.n_inputs, self.n_outputs, self.n_fft, self.workers = n_inputs, n_outputs, n_fft, workers
        self.hop = n_fft - n_taps + 1
        same_as = same_as or {}
        self._used_inputs = sorted({same_as.get(i, i) for _, i, _ in taps})
        self._used_outputs = sorted({o for o, _, _ in taps})
        grouped: dict[tuple[int, bytes], tuple[np.ndarray, list[int]]] = {}
        for o, i, h in taps:  # inputs that reach one output through the same FIR are summed first
            key = (o, np.asarray(h, np.float64).tobytes())
            grouped.setdefault(key, (h, []))[1].append(self._used_inputs.index(same_as.get(i, i)))
        self._paths = [(self._used_outputs.index(o), ins, scipy.fft.rfft(h, n_fft).astype(np.complex64))
                       for (o, _), (h, ins) in grouped.items()]
        self._tail = np.zeros((len(self._used_outputs), n_taps - 1), np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        """x [shape=(n_inputs, n_frames)] -> [shape=(n_outputs, n_frames)] float32."""
        n_frames = x.shape[1]
        n_hops = max(1, math.ceil(n_frames / self.hop))
        hops = np.zeros((len(self._used_inputs), n_hops * self.hop), np.float32)
        hops[:, :n_frames] = x[self._used_inputs]
        spectra = scipy.fft.rfft(hops.reshape(len(self._used_inputs), n_hops, self.hop), self.n_fft,
                                 axis=-1, workers=self.workers)
        out_spectra = np.empty((len(self._used_outputs), n_hops, spectra.shape[-1]), np.complex64)
        assigned = np.zeros(len(self._used_outputs), bool)  # an output's first product is stored, not added to 0
        product = np.empty_like(spectra[0])
        for o, ins, h in self._paths:
            source = spectra[ins[0]] if len(ins) == 1 else spectra[ins].sum(axis=0)
            if assigned[o]:
                np.multiply(source, h, out=product)
                out_spectra[o] += product
            else:
                np.multiply(source, h, out=out_spectra[o])
                assigned[o] = True
        y = scipy.fft.irfft(out_spectra, self.n_fft, axis=-1, workers=self.workers)
        out = np.empty((self.n_outputs, n_frames), np.float32)
        out[sorted(set(range(self.n_outputs)) - set(self._used_outputs))] = 0.0
        out[self._used_outputs] = self._overlap_add(y, n_frames)
        return out

    def _overlap_add(self, y: np.ndarray, n_frames: int) -> np.ndarray:
        """Each output frame is one hop's head plus at most one earlier tail (so any order of the two
        additions gives the same float32 result)."""
        n_out, n_hops, hop, n_tail = y.shape[0], y.shape[1], self.hop, self._tail.shape[1]
        out = np.empty((n_out, (n_hops + 1) * hop), np.float32)
        out[:, :n_hops * hop].reshape(n_out, n_hops, hop)[...] = y[:, :, :hop]  # one copy, no temporary
        out[:, n_hops * hop:] = 0.0
        body = out[:, hop:].reshape(n_out, n_hops, hop)  # a view: hop k's tail lands at the start of hop k+1
        body[:, :, :n_tail] += y[:, :, hop:hop + n_tail]
        out[:, :n_tail] += self._tail
        self._tail = out[:, n_frames:n_frames + n_tail].copy()
        return out[:, :n_frames]


@dataclass(frozen=True)
class _Segment:
    """Frames [first, last) of an object with fixed gains, or a ramp from ``start`` (sample time) to ``target``."""

    first: int
    last: int
    gains_to: np.ndarray
    gains_from: np.ndarray | None = None
    start: float = 0.0
    target: float = 0.0

    def ramp(self, lo: int, hi: int) -> np.ndarray:
        """Where frames ``[lo, hi)`` are along the ramp, 0 at ``start`` to 1 at ``target`` (float64)."""
        return (np.arange(lo, hi) - self.start) / (self.target - self.start)


def object_gains(layout: Layout, block: Block) -> np.ndarray:
    """Speaker gains of one block's position and width (before its gain): the point-source
    panner, or the polar extent panner for a width (:mod:`filmrestore.upmix.extent`)."""
    if block.width_deg > 0:
        return extent_gains(layout, block.azimuth_deg, block.elevation_deg, block.width_deg)
    return point_source_gains(layout, block.azimuth_deg, block.elevation_deg)


def object_segments(obj: ObjectPlan, layout: Layout, sample_rate_hz: int,
                    gains_of: Callable[[Block], np.ndarray] | None = None) -> list[_Segment]:
    """The gain segments of an object over time (BS.2127 s7.3.3 interpretation of block timing).

    ``gains_of``: a block's gain vector (default: its point-source gains on ``layout``)."""
    segments: list[_Segment] = []
    previous: tuple[Fraction, np.ndarray] | None = None
    for block in obj.blocks:
        start = grid_samples(block.start_s, sample_rate_hz)
        end = grid_samples(block.start_s + block.duration_s, sample_rate_hz)
        gains = gains_of(block) if gains_of is not None else block.gain * object_gains(layout, block)
        ramp_s = block.interpolation_s if block.jump else block.duration_s
        target = grid_samples(block.start_s + ramp_s, sample_rate_hz) if ramp_s else start
        if previous is not None and previous[0] == start and target != start:
            segments.append(_Segment(math.ceil(start), math.ceil(target), gains, previous[1],
                                     float(start), float(target)))
        else:
            target = start
        if target != end:
            segments.append(_Segment(math.ceil(target), math.ceil(end), gains))
        previous = (end, gains)
    return [s for s in segments if s.last > s.first]


class _SegmentCursor:
    """An object's gain segments, read in time order by consecutive blocks."""

    def __init__(self, segments: list[_Segment]) -> None:
        self._segments = segments
        self._next = 0  # segments before this one end before the current block

    def overlapping(self, first_frame: int, end_frame: int) -> Iterator[tuple[_Segment, int, int]]:
        """The segments that touch ``[first_frame, end_frame)``, each with that overlap ``(lo, hi)``."""
        while self._next < len(self._segments) and self._segments[self._next].last <= first_frame:
            self._next += 1
        for seg in self._segments[self._next:]:
            if seg.first >= end_frame:
                break
            yield seg, max(seg.first, first_frame), min(seg.last, end_frame)


class _ObjectPanner:
    """Adds one object's feed, panned with its gains over time, into a mix."""

    def __init__(self, obj: ObjectPlan, layout: Layout, sample_rate_hz: int) -> None:
        self.feed = obj.feed
        self._segments = _SegmentCursor(object_segments(obj, layout, sample_rate_hz))

    def add(self, feed: np.ndarray, first_frame: int, mix: np.ndarray) -> None:
        """Add ``feed`` [shape=(n,)] (frames from ``first_frame``) panned into ``mix`` [shape=(C, n)]."""
        for seg, lo, hi in self._segments.overlapping(first_frame, first_frame + feed.shape[0]):
            x = feed[lo - first_frame:hi - first_frame]
            out = mix[:, lo - first_frame:hi - first_frame]
            if seg.gains_from is None:
                for ch in np.flatnonzero(seg.gains_to):
                    out[ch] += np.float32(seg.gains_to[ch]) * x
                continue
            ramp = seg.ramp(lo, hi).astype(np.float32)
            for ch in np.flatnonzero((seg.gains_to != 0) | (seg.gains_from != 0)):
                g0, dg = np.float32(seg.gains_from[ch]), np.float32(seg.gains_to[ch] - seg.gains_from[ch])
                out[ch] += (g0 + dg * ramp) * x


def _same_split(plan: Plan, feed_a: str, feed_b: str) -> bool:
    """Whether two event objects of ``plan`` take their shares at the same times with the same
    gains (their positions aside), so that on a mono title their feeds are one signal."""
    def envelope(feed: str) -> list[tuple[float, ...]] | None:
        obj = next((o for o in plan.objects if o.feed == feed), None)
        return None if obj is None else [(b.start_s, b.duration_s, b.gain, b.jump, b.interpolation_s)
                                         for b in obj.blocks]

    a = envelope(feed_a)
    return a is not None and a == envelope(feed_b)


class _EventSplit:
    """Where an event object plays: its share ``r`` of the effects over time (its gain, at most 1,
    ramping as its gains do), and the window ``r > 0`` its feed is cut with.

    The renderer takes ``r`` of the effects out of the ambience (the effects pair and the bed)
    and gives it to the object, so that ambience plus events is the effects stem again."""

    def __init__(self, obj: ObjectPlan, layout: Layout, sample_rate_hz: int) -> None:
        self.feed = obj.feed
        self._segments = _SegmentCursor(object_segments(
            obj, layout, sample_rate_hz, gains_of=lambda b: np.array([min(1.0, b.gain)])))

    def share(self, first_frame: int, n_frames: int) -> np.ndarray:
        """``r`` [shape=(n_frames,)] float32 for the frames from ``first_frame`` (called in order)."""
        r = np.zeros(n_frames, np.float32)
        for seg, lo, hi in self._segments.overlapping(first_frame, first_frame + n_frames):
            if seg.gains_from is None:
                r[lo - first_frame:hi - first_frame] = seg.gains_to[0]
            else:
                r[lo - first_frame:hi - first_frame] = \
                    seg.gains_from[0] + (seg.gains_to[0] - seg.gains_from[0]) * seg.ramp(lo, hi)
        return r


@dataclass
class RenderedBlock:
    """One block of a rendered scene; arrays float32 [shape=(channels, n_frames)].

    ``mix``: the full bed in the layout's WAV order (DirectSpeakers bed + panned
    objects). ``bed``: the DirectSpeakers part alone (same order). ``feeds``:
    one row per name of :data:`INPUTS`, the signals objects play.
    """

    mix: np.ndarray
    bed: np.ndarray
    feeds: np.ndarray

    def track_rows(self, rows: list[int] | tuple[int, ...]) -> list[np.ndarray]:
        """Views of rows of ``vstack([bed, feeds])`` (an ADM scene's ``track_rows``), without that copy."""
        n_bed = self.bed.shape[0]
        return [self.bed[r] if r < n_bed else self.feeds[r - n_bed] for r in rows]

    def object_tracks(self, plan: Plan) -> np.ndarray:
        """The ADM track of every object of ``plan`` (its feed). [shape=(n_objects, n_frames)]"""
        return self.feeds[[INPUTS.index(o.feed) for o in plan.objects]]


def _decorrelator_parameters(rules: BedRules, sample_rate_hz: int, layout: Layout, send_gains: list[float],
                             row: int, stem: str) -> tuple[tuple[float, ...], int, int, float, int]:
    """The arguments of :func:`design_side_decorrelators` for one side (row 0 left, 1 right) of a stem."""
    fold = fold_down_matrix("stereo", layout)
    labels = [label for label, _ in _AMBIENCE_SENDS[stem]["LR"[row]]]
    fold_gains = tuple(float(fold[row, layout.index(lab)]) * g for lab, g in zip(labels, send_gains))
    n_taps = max(2, int(round(rules.decorrelator_length_s * sample_rate_hz)))
    seed = rules.seed * 16 + (0 if stem == "music" else 2) + row
    return fold_gains, sample_rate_hz, n_taps, rules.ambience_crossover_hz, seed


def decorrelator_parameters(rules: BedRules, sample_rate_hz: int, layout: Layout = BED_7_1_4
                            ) -> list[tuple[tuple[float, ...], int, int, float, int]]:
    """Every decorrelator design a renderer with ``rules`` needs (what ships in ``data/decorrelators.npz``
    for the default rules at 48 kHz)."""
    params = []
    for stem, sides in _AMBIENCE_SENDS.items():
        send_db = rules.music_ambience_gain_db if stem == "music" else rules.effects_ambience_gain_db
        for row, sends in enumerate(sides.values()):
            gains = [db_to_gain(send_db + offset_db) for _, offset_db in sends]
            params.append(_decorrelator_parameters(rules, sample_rate_hz, layout, gains, row, stem))
    return params


#: Bed positions on each side that a multichannel source may lack (each folds into its side's
#: stereo channel at -3 dB, :mod:`filmrestore.upmix.foldown`).
_SIDE_POSITIONS = {"L": ("M+090", "M+135", "U+045", "U+135"), "R": ("M-090", "M-135", "U-045", "U-135")}


def fold_neutral_weights(n_positions: int) -> np.ndarray:
    """Weights [shape=(n_positions - 1, n_positions)] of ``n - 1`` decorrelated signals into ``n``
    positions that fold down with equal gains: each row sums to zero (Helmert contrasts), so the
    sends cancel exactly in the fold-down; rows are orthonormal, so every position gets the same
    power, ``(n - 1) / n`` of one signal's."""
    k = np.arange(1, n_positions)
    weights = np.zeros((n_positions - 1, n_positions))
    for row, m in enumerate(k):
        weights[row, :m] = 1.0
        weights[row, m] = -float(m)
        weights[row] /= np.sqrt(m * (m + 1))
    return weights


def _nearest_speaker(speaker: Speaker, layout: Layout) -> int:
    """The channel of ``layout`` that plays a source speaker it lacks: the nearest in azimuth at the
    same height (a 5.1 surround at +-110 deg plays from the side surround at +-90 deg, as a 5.1
    master upmixed to 7.1 does; a pan between side and rear would fold down 3 dB too loud)."""
    same_height = [i for i, s in enumerate(layout.speakers) if not s.is_lfe and
                   (s.elevation_deg > 0) == (speaker.elevation_deg > 0)]

    def distance(i: int) -> float:
        d = abs(layout.speakers[i].azimuth_deg - speaker.azimuth_deg) % 360.0
        return min(d, 360.0 - d)

    return min(same_height, key=distance)


@dataclass(frozen=True)
class SourceRouting:
    """Where each channel of a multichannel source (3.0 to 7.1.4) goes in the bed.

    Its front pair feeds the scene as a stereo source does (music and effects fronts as
    objects, their ambience into the bed positions the source lacks); its dialogue in the
    centre (or, without one, in the front pair) is the dialogue object; everything else
    (the other stems of the centre, dialogue in the fronts, surrounds, rears, heights, LFE)
    is *kept*: played as it is by the bed speaker at its position (:func:`_nearest_speaker`
    where the bed has no speaker there). The positions it lacks get fold-neutral ambience
    (:meth:`SceneRenderer._in_place_taps`).
    """

    source: Layout
    front: tuple[int, int]  # source channels of M+030 / M-030
    centre: int | None  # source channel of M+000
    kept: tuple[tuple[int, int], ...]  # (source channel, bed channel)

    @classmethod
    def of(cls, source: Layout, bed: Layout = BED_7_1_4) -> SourceRouting:
        labels = source.labels
        if "M+030" not in labels or "M-030" not in labels:
            raise ConfigError(f"a {source.common_name} source without a front pair (M+030, M-030) cannot be upmixed")
        front = (labels.index("M+030"), labels.index("M-030"))
        centre = labels.index("M+000") if "M+000" in labels else None
        kept = tuple((c, bed.index("LFE1") if spk.is_lfe else bed.index(spk.label) if spk.label in bed.labels
                      else _nearest_speaker(spk, bed)) for c, spk in enumerate(source.speakers))
        return cls(source, front, centre, kept)

    @property
    def covered(self) -> frozenset[str]:
        """Bed labels that play a source channel other than the front pair (no ambience is sent there)."""
        return frozenset(BED_7_1_4.labels[b] for c, b in self.kept if c not in self.front)

    def missing(self, positions: tuple[str, ...]) -> list[str]:
        """The ``positions`` no source channel plays: filled with ambience when two or more (a single
        one cannot be filled without changing the fold-down)."""
        left = [label for label in positions if label not in self.covered]
        return left if len(left) >= 2 else []

    @property
    def has_lfe(self) -> bool:
        return any(s.is_lfe for s in self.source.speakers)

    def kept_signals(self, stems: dict[str, np.ndarray]) -> np.ndarray:
        """Per source channel, the part of the stems it keeps in place. [shape=(n_source_channels, n)]

        The front pair keeps its dialogue when the source has a centre (else that dialogue is the
        object); the centre keeps its music and effects; every other channel keeps all of it."""
        n_frames = next(iter(stems.values())).shape[1]
        out = np.zeros((self.source.n_channels, n_frames), np.float32)
        for name, x in stems.items():
            for c in range(self.source.n_channels):
                if c in self.front and (name != "dialogue" or self.centre is None):
                    continue  # a feed
                if c == self.centre and name == "dialogue":
                    continue  # the dialogue object
                out[c] += x[c]
        return out

    def in_bed(self) -> list[tuple[int, int]]:
        """The (source channel, bed channel) pairs the bed plays: every kept channel but the front
        pair of a source without a centre (whose fronts are wholly objects)."""
        return [(c, b) for c, b in self.kept if c not in self.front or self.centre is not None]

    def dialogue_feed(self, dialogue: np.ndarray) -> np.ndarray:
        if self.centre is not None:
            return np.asarray(dialogue[self.centre], np.float32)
        return MINUS_3_DB * (dialogue[self.front[0]] + dialogue[self.front[1]])

    def channel_map(self) -> list[dict[str, str]]:
        """What each bed channel plays, for the report: the source channels kept there and what is
        synthesised (ambience, LFE) or panned there (objects)."""
        kept: dict[int, list[str]] = {}
        for c, b in self.kept:
            if c not in self.front:
                kept.setdefault(b, []).append(self.source.speakers[c].wave_name or self.source.speakers[c].label)
        sends = {label for side in _SIDE_POSITIONS.values() for label in self.missing(side)}
        rows = []
        for b, spk in enumerate(BED_7_1_4.speakers):
            if spk.label in ("M+030", "M-030"):
                what = f"kept: source {spk.wave_name} (music and effects fronts as objects there)"
            elif b in kept:
                what = "kept: source " + " + ".join(kept[b])
            elif spk.label in sends:
                what = "synthesised: decorrelated ambience of music and effects"
            elif spk.is_lfe:
                what = "synthesised: low band of music and effects"
            else:
                what = "objects only"
            rows.append({"channel": spk.wave_name or spk.label, "label": spk.label, "plays": what})
        return rows


class SceneRenderer:
    """Render dialogue/music/effects stems to feeds, bed and mix with a :class:`Plan`, block by block.

    ``process`` takes ``{"dialogue", "music", "effects"}`` arrays, each
    [shape=(n_input_channels, n_frames)] with n_input_channels 1 or 2 (a missing
    stem is silence) and returns a :class:`RenderedBlock`. Zero latency.
    """

    latency_frames = 0

    def __init__(self, sample_rate_hz: int, n_input_channels: int, plan: Plan | None = None,
                 layout: Layout = BED_7_1_4, workers: int = 1, source: Layout | None = None) -> None:
        """``source``: the layout of stems of more than two channels (default: the usual layout of
        their channel count, :func:`~filmrestore.layouts.source_layout`); they are kept in place
        (:class:`SourceRouting`)."""
        if layout.name != "4+7+0":
            raise ConfigError(f"the bed rules are written for 4+7+0, not {layout.name}")
        if n_input_channels > 2:
            source = source or source_layout(n_input_channels)
            if source.n_channels != n_input_channels:
                raise ConfigError(f"stems of {n_input_channels} channels are not {source.common_name} "
                                  f"({source.n_channels} channels)")
            self.routing: SourceRouting | None = SourceRouting.of(source, layout)
        elif n_input_channels in (1, 2):
            self.routing = None
        else:
            raise ConfigError(f"the renderer takes stems of 1 to 12 channels, got {n_input_channels}")
        self.sample_rate_hz = sample_rate_hz
        self.n_input_channels = n_input_channels
        self.plan = plan if plan is not None else make_plan(sample_rate_hz, 86_400 * sample_rate_hz)  # static, 24 h
        self.layout = layout
        self.rules = self.plan.bed
        same = {INPUTS.index("music.R"): INPUTS.index("music.L"),
                INPUTS.index("effects.R"): INPUTS.index("effects.L")} if n_input_channels == 1 else {}
        if same and _same_split(self.plan, "effects.events.L", "effects.events.R"):
            same[INPUTS.index("effects.events.R")] = INPUTS.index("effects.events.L")  # a mono title's pair
        n_kept = n_input_channels if self.routing else 0
        if self.routing is not None and any(o.feed in EVENT_FEEDS for o in self.plan.objects):
            raise ConfigError("event objects (feeds effects.events.*) need a mono or stereo source; a "
                              f"{source.common_name} source keeps its effects in place")
        self._filters = FirMatrix(self._taps(), len(INPUTS) + n_kept, len(INPUTS) + layout.n_channels,
                                  workers=workers, same_as=same)
        self._objects = [_ObjectPanner(o, layout, sample_rate_hz) for o in self.plan.objects]
        self._events = [_EventSplit(o, layout, sample_rate_hz) for o in self.plan.objects if o.feed in EVENT_FEEDS]
        self._frame = 0

    def _taps(self) -> list[tuple[int, int, np.ndarray]]:
        """(output, input, FIR) of every path; outputs are the feeds, then the bed channels."""
        fs, rules = self.sample_rate_hz, self.rules
        low = lr4_impulse_response(rules.ambience_crossover_hz, fs, "lowpass", _LR4_TAPS)
        high = lr4_impulse_response(rules.ambience_crossover_hz, fs, "highpass", _LR4_TAPS)
        n_feeds = len(INPUTS)
        taps = self._in_place_taps(high) if self.routing is not None else self._stereo_taps(low, high)
        events = sorted({INPUTS.index(o.feed) for o in self.plan.objects if o.feed in EVENT_FEEDS})
        taps += [(e, e, low + high) for e in events]  # dry, with the dialogue's phase
        if self.routing is None or not self.routing.has_lfe:  # a source's own LFE is kept, not re-synthesised
            lfe = db_to_gain(rules.lfe_gain_db) * MINUS_3_DB * lr4_impulse_response(
                rules.lfe_crossover_hz, fs, "lowpass", _LR4_TAPS)
            taps += [(n_feeds + self.layout.index("LFE1"), INPUTS.index(f), lfe)
                     for f in ("music.L", "music.R", "effects.L", "effects.R")]
            # An event feed is x . d of the sides (|d| = 1): the pair's LFE share is lfe (dL + dR) per unit.
            taps += [(n_feeds + self.layout.index("LFE1"), e, lfe * sum(EVENT_SECTORS[INPUTS[e]][1])) for e in events]
        return taps

    def _stereo_taps(self, low: np.ndarray, high: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Paths of a mono or stereo source: the dialogue through the crossover's all-pass, each
        side's front as ``LP + g HP`` and its decorrelated ambience sends, jointly flat in the fold-down."""
        n_feeds, rules = len(INPUTS), self.rules
        taps = [(0, 0, low + high)]
        for stem, sides in _AMBIENCE_SENDS.items():
            send_db = rules.music_ambience_gain_db if stem == "music" else rules.effects_ambience_gain_db
            for row, (side, sends) in enumerate(sides.items()):
                feed = INPUTS.index(f"{stem}.{side}")
                gains = [db_to_gain(send_db + offset_db) for _, offset_db in sends]
                firs, front_gain = self._decorrelators(gains, row, stem)
                taps.append((feed, feed, low + front_gain * high))
                for (label, _), fir, gain in zip(sends, firs, gains):
                    taps.append((n_feeds + self.layout.index(label), feed, np.convolve(gain * fir, high)))
        return taps

    def _in_place_taps(self, high: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Paths of a multichannel source: every source channel and feed as it is (no crossover, so
        each bed channel is its source channel sample for sample), and ambience for the positions
        the source lacks: decorrelated copies of the high band of the front pair's music and
        effects, weighted per side by :func:`fold_neutral_weights` so that they cancel in the
        stereo fold-down (which therefore equals the source's exactly)."""
        routing, rules, fs = self.routing, self.rules, self.sample_rate_hz
        assert routing is not None
        n_feeds, unit = len(INPUTS), np.ones(1)
        taps = [(i, i, unit) for i in range(n_feeds)]
        taps += [(n_feeds + b, n_feeds + c, unit) for c, b in routing.in_bed()]
        n_taps = max(2, int(round(rules.decorrelator_length_s * fs)))
        for s_index, stem in enumerate(("music", "effects")):
            send_db = rules.music_ambience_gain_db if stem == "music" else rules.effects_ambience_gain_db
            for row, (side, positions) in enumerate(_SIDE_POSITIONS.items()):
                labels = routing.missing(positions)
                if not labels:
                    continue
                weights = fold_neutral_weights(len(labels))
                rng = np.random.default_rng(rules.seed * 16 + 8 + 2 * s_index + row)
                firs = random_phase_firs(rng, len(labels) - 1, n_taps)
                gain = db_to_gain(send_db) * math.sqrt(len(labels) / (len(labels) - 1))  # each position at send_db
                feed = INPUTS.index(f"{stem}.{side}")
                for k, label in enumerate(labels):
                    # Weighted sum term by term, not a BLAS product: its rounding may depend on
                    # how many threads BLAS has (see upmix.foldown.fold_down).
                    fir = gain * sum(w * f for w, f in zip(weights[:, k], firs))
                    taps.append((n_feeds + self.layout.index(label), feed, np.convolve(fir, high)))
        return taps

    def _decorrelators(self, send_gains: list[float], row: int, stem: str) -> tuple[np.ndarray, float]:
        return design_side_decorrelators(*_decorrelator_parameters(
            self.rules, self.sample_rate_hz, self.layout, send_gains, row, stem))

    def process(self, stems: dict[str, np.ndarray]) -> RenderedBlock:
        """Render one block of stems."""
        n_frames = self._check_stems(stems)
        if self.routing is not None:
            return self._process_multichannel(stems, n_frames)
        inputs = np.zeros((len(INPUTS), n_frames), np.float32)
        for name, x in stems.items():
            x = np.asarray(x, dtype=np.float32)
            if name == "dialogue":
                inputs[0] = x[0] if x.shape[0] == 1 else MINUS_3_DB * (x[0] + x[1])
            else:
                first = INPUTS.index(f"{name}.L")
                inputs[first:first + 2] = MINUS_3_DB * x[0] if x.shape[0] == 1 else x
        if self._events:
            self._split_events(inputs)
        return self._finish(inputs)

    def _split_events(self, inputs: np.ndarray) -> None:
        """Give each event object its share of the effects, in place: with ``d`` its direction
        in the (L, R) plane and ``r`` its share over time (:class:`_EventSplit`), the object's
        feed is ``p = x . d`` (cut to where ``r > 0``) and ``r p d`` leaves the effects pair, so
        the ambience plus the events is the effects stem again, sample for sample."""
        first = INPUTS.index("effects.L")
        effects = inputs[first:first + 2]
        for split in self._events:
            d = np.asarray(EVENT_SECTORS[split.feed][1], np.float32)
            p = d[0] * effects[0] + d[1] * effects[1]
            r = split.share(self._frame, inputs.shape[1])
            inputs[INPUTS.index(split.feed)] = np.where(r > 0, p, np.float32(0.0))
            effects -= (r * p)[None] * d[:, None]

    def _process_multichannel(self, stems: dict[str, np.ndarray], n_frames: int) -> RenderedBlock:
        routing = self.routing
        assert routing is not None
        stems = {name: np.asarray(x, dtype=np.float32) for name, x in stems.items()}
        inputs = np.zeros((len(INPUTS) + routing.source.n_channels, n_frames), np.float32)
        if "dialogue" in stems:
            inputs[0] = routing.dialogue_feed(stems["dialogue"])
        for name in ("music", "effects"):
            if name in stems:
                first = INPUTS.index(f"{name}.L")
                inputs[first], inputs[first + 1] = stems[name][routing.front[0]], stems[name][routing.front[1]]
        inputs[len(INPUTS):] = routing.kept_signals(stems)
        return self._finish(inputs)

    def _finish(self, inputs: np.ndarray) -> RenderedBlock:
        """Filter the inputs, pan the objects into the mix, advance the clock."""
        filtered = self._filters.process(inputs)
        feeds, bed = filtered[:len(INPUTS)], filtered[len(INPUTS):]
        mix = bed.copy()
        for panner in self._objects:
            panner.add(feeds[INPUTS.index(panner.feed)], self._frame, mix)
        self._frame += inputs.shape[1]
        return RenderedBlock(mix, bed, feeds)

    def _check_stems(self, stems: dict[str, np.ndarray]) -> int:
        unknown = set(stems) - set(STEM_NAMES)
        if unknown or not stems:
            raise ValueError(f"expected some of the stems {STEM_NAMES}, got {sorted(stems)}")
        shapes = {name: np.shape(a) for name, a in stems.items()}
        good = all(len(s) == 2 and s[0] == self.n_input_channels for s in shapes.values())
        if not good or len({s[1] for s in shapes.values()}) != 1:
            raise ValueError(
                f"stems must all be ({self.n_input_channels}, n_frames) arrays of one length, got {shapes}")
        return int(next(iter(shapes.values()))[1])


def kept_bed_labels(source: Layout | None, layout: Layout = BED_7_1_4) -> frozenset[str]:
    """The bed channels a multichannel source's own channels play from (none for mono or stereo,
    or for ``source`` None): the ADM bed must carry them."""
    if source is None or source.n_channels <= 2:
        return frozenset()
    return frozenset(layout.labels[b] for _, b in SourceRouting.of(source, layout).in_bed())


def render_bed(stems: dict[str, np.ndarray], sample_rate_hz: int, plan: Plan | None = None,
               bed: BedRules | None = None, source: Layout | None = None) -> np.ndarray:
    """Convenience: the 7.1.4 mix [shape=(12, n_frames)] of whole stems with ``plan`` (default: static plan)."""
    n_channels, n_frames = next(iter(stems.values())).shape
    if plan is None:
        plan = make_plan(sample_rate_hz, n_frames, tuple(stems), bed=bed)
    return SceneRenderer(sample_rate_hz, n_channels, plan, source=source).process(stems).mix


__all__ = ["FEEDS", "INPUTS", "FirMatrix", "RenderedBlock", "SceneRenderer", "SourceRouting", "db_to_gain",
           "decorrelator_parameters", "fold_neutral_weights", "kept_bed_labels", "object_segments", "render_bed",
           "stereo_image"]


def stereo_image(blocks: dict[str, np.ndarray], source: Layout | None = None) -> dict[str, np.ndarray]:
    """Stems folded to at most two channels (what the plan stage reads a stereo image from): a
    multichannel source's stereo fold-down."""
    return {name: x if x.shape[0] <= 2 else downmix_to_stereo(x, source) for name, x in blocks.items()}
