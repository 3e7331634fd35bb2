"""The placement plan of a title: which signal goes where, over time, as editable data.

A plan holds the bed rules (:class:`BedRules`: ambience sends, crossovers, LFE)
and a list of objects. Each object plays one *feed* of the renderer and has
audioBlockFormat-like blocks over time (start, duration, azimuth, elevation,
gain, width, jump), exactly what the ADM export writes. Feeds:

- ``dialogue``: the dialogue stem (stereo summed at -3 dB per side);
- ``music.L``, ``music.R``, ``effects.L``, ``effects.R``: the dry front part of
  each side of a stem (its low band plus the share of its high band that the
  decorrelated ambience leaves; see :mod:`filmrestore.upmix.render`).

:func:`make_plan` builds the default plan from an :class:`ImageAnalysis` of the
effects stem: dialogue at the centre, music as a static pair at +-30 deg, and
the effects pair moving with the effects' interchannel level difference (ILD)
block by block. The plan is JSON (``plan.json``) that an engineer may edit;
:func:`load_plan` validates it and raises one :class:`PlanError` that names
the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from filmrestore.errors import ConfigError, PlanError
from filmrestore.upmix.admtime import on_grid_s
from filmrestore.upmix.events import Event

PLAN_FORMAT = "filmrestore-plan/1"
STEM_NAMES: tuple[str, ...] = ("dialogue", "music", "effects")
# Effect events are a pair of objects at the front speakers, left and right, each playing its
# side of the effects stem during the events (see the renderer): the event keeps its stereo image
# (a mono title's events stay a phantom centre, off the dialogue's speaker) and a stereo
# fold-down of the 7.1.4 mix still equals the source's.
EVENT_SECTORS: dict[str, tuple[float, tuple[float, float]]] = {
    # feed: (azimuth of its object, its direction in the (L, R) plane of the effects stem)
    "effects.events.L": (30.0, (1.0, 0.0)),
    "effects.events.R": (-30.0, (0.0, 1.0)),
}
EVENT_FEEDS: tuple[str, ...] = tuple(EVENT_SECTORS)
FEEDS: tuple[str, ...] = ("dialogue", "music.L", "music.R", "effects.L", "effects.R", *EVENT_FEEDS)
EVENT_FADE_S = 0.01  # an event object fades in and out over this (its blocks' interpolation)
ANALYSIS_BLOCK_S = 0.5  # ILD analysis and default block grid; a multiple of 10 ms (exact in ADM time)


def feed_stem(feed: str) -> str:
    """The stem a feed is made from: ``"music.L"`` -> ``"music"``."""
    return feed.split(".", 1)[0]


@dataclass(frozen=True)
class BedRules:
    """Bed part of the plan: ambience sends and crossovers. Levels in dB relative to the stem side."""

    music_ambience_gain_db: float = -9.0  # per side/rear/height channel
    effects_ambience_gain_db: float = -6.0  # per side/rear channel, -9 dB into the rear heights
    ambience_crossover_hz: float = 200.0  # ambience is sent only above this
    lfe_crossover_hz: float = 120.0  # LR4 low-pass of music + effects feeding LFE1
    # LFE1 is reproduced with +10 dB in-band gain (ITU-R BS.775, SMPTE RP 200), so a
    # -10 dB send reaches the room at the level of the stems' own bass.
    lfe_gain_db: float = -10.0
    decorrelator_length_s: float = 0.02
    seed: int = 2051

    def __post_init__(self) -> None:
        for name in ("ambience_crossover_hz", "lfe_crossover_hz", "decorrelator_length_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"bed rule {name} must be positive, got {value!r}")
        for name in ("music_ambience_gain_db", "effects_ambience_gain_db"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value > -3.0:
                raise ConfigError(
                    f"bed rule {name} = {value!r} dB leaves no room for the front "
                    "in a power-preserving fold-down; use -3 dB or less")
        if not (isinstance(self.lfe_gain_db, (int, float)) and math.isfinite(self.lfe_gain_db)):
            raise ConfigError(f"bed rule lfe_gain_db must be finite, got {self.lfe_gain_db!r}")


@dataclass(frozen=True)
class Block:
    """One audioBlockFormat of an object: from ``start_s`` for ``duration_s`` seconds."""

    start_s: float
    duration_s: float
    azimuth_deg: float = 0.0  # ADM: anticlockwise from the front, left positive
    elevation_deg: float = 0.0
    gain: float = 1.0  # linear
    width_deg: float = 0.0  # ADM width (BS.2127 polar extent, height 0): 0 is a point source
    # jumpPosition: move over ``interpolation_s`` from the block start, then hold (0: jump at once).
    # Without it (ADM's default) the position is reached at the block's end, ramping over the block.
    jump: bool = False
    interpolation_s: float = 0.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class ObjectPlan:
    """One object: a feed, a name, and its blocks (contiguous, from 0 to the programme's end)."""

    name: str
    feed: str
    blocks: tuple[Block, ...]
    content: str = ""  # the stem (audioContent) it belongs to; defaults to the feed's stem

    @property
    def stem(self) -> str:
        return self.content or feed_stem(self.feed)

    @property
    def is_static(self) -> bool:
        first = self.blocks[0]
        return all((b.azimuth_deg, b.elevation_deg, b.gain, b.width_deg)
                   == (first.azimuth_deg, first.elevation_deg, first.gain, first.width_deg) for b in self.blocks)


@dataclass(frozen=True)
class Plan:
    """Everything the renderer and the ADM export need to place a title's stems."""

    sample_rate_hz: int
    n_frames: int
    stems: tuple[str, ...]
    bed: BedRules
    objects: tuple[ObjectPlan, ...]
    layout: str = "4+7+0"
    generated: dict[str, Any] = field(default_factory=dict)  # provenance: stems' hashes, auto digest

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT, "layout": self.layout, "sample_rate_hz": self.sample_rate_hz,
            "n_frames": self.n_frames, "stems": list(self.stems), "bed": asdict(self.bed),
            "objects": [{"name": o.name, "feed": o.feed, **({"content": o.content} if o.content else {}),
                         "blocks": [_block_dict(b) for b in o.blocks]} for o in self.objects],
            "generated": self.generated,
        }

    def content_digest(self) -> str:
        """Hash of what the plan decides (provenance left out): the render stage's cache key uses it."""
        body = {k: v for k, v in self.to_dict().items() if k != "generated"}
        return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def _block_dict(b: Block) -> dict[str, Any]:
    d = {"start_s": round(b.start_s, 5), "duration_s": round(b.duration_s, 5),
         "azimuth_deg": round(b.azimuth_deg, 3), "elevation_deg": round(b.elevation_deg, 3),
         "gain": round(b.gain, 6)}
    if b.width_deg:
        d["width_deg"] = b.width_deg
    if b.jump:
        d["jump"] = True
        d["interpolation_s"] = round(b.interpolation_s, 5)
    return d


# ----------------------------------------------------------------------------- analysis

@dataclass
class ImageAnalysis:
    """Interchannel level difference of a stereo stem per analysis block, streamed.

    Feed consecutive blocks [shape=(n_channels, n_frames)] to :meth:`process`;
    :meth:`ild_db` gives one value per complete (and the final partial) block.
    Mono stems give 0 dB everywhere.
    """

    sample_rate_hz: int
    block_s: float = ANALYSIS_BLOCK_S
    _power: list[tuple[float, float]] = field(default_factory=list)
    _partial: np.ndarray = field(default_factory=lambda: np.zeros(2))
    _partial_frames: int = 0

    @property
    def block_frames(self) -> int:
        return int(round(self.block_s * self.sample_rate_hz))

    def process(self, x: np.ndarray) -> None:
        sq = np.square(x[:2] if x.shape[0] >= 2 else np.vstack([x[0], x[0]]), dtype=np.float64)
        pos = 0
        while pos < sq.shape[1]:
            take = min(self.block_frames - self._partial_frames, sq.shape[1] - pos)
            self._partial += sq[:, pos:pos + take].sum(axis=1)
            self._partial_frames += take
            pos += take
            if self._partial_frames == self.block_frames:
                self._power.append((float(self._partial[0]), float(self._partial[1])))
                self._partial, self._partial_frames = np.zeros(2), 0

    def ild_db(self, floor: float = 1e-10) -> list[float]:
        """ILD per block in dB (left over right), 0 where the block is near silent."""
        powers = list(self._power)
        if self._partial_frames:
            powers.append((float(self._partial[0]), float(self._partial[1])))
        out = []
        for left, right in powers:
            n = self.block_frames
            out.append(0.0 if (left + right) / n < floor else 10.0 * math.log10((left + 1e-20) / (right + 1e-20)))
        return out


ILD_STEP_DB = 0.5  # the plan stage reports a title's ILD series rounded to this, run-length encoded


def run_length(values: list[float], step: float = ILD_STEP_DB) -> list[list[float]]:
    """``[[value, count], ...]`` of values rounded to ``step``: a title's ILD series in a few entries."""
    runs: list[list[float]] = []
    for v in values:
        q = round(round(v / step) * step, 3)
        if runs and runs[-1][0] == q:
            runs[-1][1] += 1
        else:
            runs.append([q, 1])
    return runs


def ild_to_shift_deg(ild_db: float, half_angle_deg: float = 30.0) -> float:
    """Image azimuth of a pair at +-``half_angle_deg`` with this ILD (stereophonic tangent law)."""
    ratio = 10.0 ** (ild_db / 20.0)
    balance = (ratio - 1.0) / (ratio + 1.0)
    return math.degrees(math.atan(balance * math.tan(math.radians(half_angle_deg))))


def moving_pair_blocks(ild_db: Sequence[float], duration_s: float, side: str, spread: float = 0.5,
                       smooth: float = 0.5, jump_deg: float = 40.0,
                       block_s: float = ANALYSIS_BLOCK_S) -> tuple[Block, ...]:
    """Blocks of one object of a stereo pair whose azimuth follows the pair's ILD.

    The pair's image azimuth (tangent law, within +-30 deg) is smoothed over
    blocks (one-pole, ``smooth``) and moves the object by ``spread`` times it:
    content panned hard left pushes the left object out towards the side.
    Azimuths are rounded to whole degrees and equal neighbours merged; a new
    position is reached over one analysis block (jumpPosition with that
    interpolation length), a step larger than ``jump_deg`` at once.
    """
    base = 30.0 if side == "L" else -30.0
    azimuths: list[float] = []
    state = ild_to_shift_deg(ild_db[0]) if len(ild_db) else 0.0
    for value in ild_db:
        state = smooth * state + (1.0 - smooth) * ild_to_shift_deg(value)
        azimuths.append(float(round(base + spread * 2.0 * state)))
    if not azimuths:
        azimuths = [base]
    blocks: list[Block] = []
    for i, az in enumerate(azimuths):
        start = on_grid_s(i * block_s)
        if start >= duration_s:
            break
        if blocks and blocks[-1].azimuth_deg == az:
            blocks[-1] = replace(blocks[-1], duration_s=on_grid_s(start + block_s - blocks[-1].start_s))
            continue
        big = bool(blocks) and abs(az - blocks[-1].azimuth_deg) > jump_deg
        blocks.append(Block(start, on_grid_s(block_s), az, 0.0, 1.0, 0.0, bool(blocks), 0.0 if big else block_s))
    last = blocks[-1]
    final_s = on_grid_s(duration_s - last.start_s)
    blocks[-1] = replace(last, duration_s=final_s, interpolation_s=min(last.interpolation_s, final_s))
    return tuple(blocks)


def _static(name: str, feed: str, azimuth_deg: float, duration_s: float, gain: float = 1.0) -> ObjectPlan:
    return ObjectPlan(name, feed, (Block(0.0, on_grid_s(duration_s), azimuth_deg, 0.0, gain),))


def event_objects(events: Sequence[Event], duration_s: float) -> list[ObjectPlan]:
    """The effect events as a pair of objects (:data:`EVENT_SECTORS`) that play every event
    (gain: the event's share of the effects, :class:`~filmrestore.upmix.events.Event`) with
    silent blocks between; they fade in over :data:`EVENT_FADE_S` from an event's
    start and out over the next block's first :data:`EVENT_FADE_S`. An event too close to the
    previous one, or to the programme's end, stays in the ambience."""
    kept: list[Event] = []
    for event in events:
        if (not kept or kept[-1].end_s + EVENT_FADE_S <= event.start_s) and event.end_s + EVENT_FADE_S <= duration_s:
            kept.append(event)
    if not kept:
        return []
    objects = []
    for feed, (azimuth, _) in EVENT_SECTORS.items():
        blocks: list[Block] = []
        t = 0.0
        for event in kept:
            start, end = on_grid_s(event.start_s), on_grid_s(event.end_s)
            if start > t:
                blocks.append(Block(t, on_grid_s(start - t), azimuth, 0.0, 0.0, 0.0, bool(blocks),
                                    EVENT_FADE_S if blocks else 0.0))
            blocks.append(Block(start, on_grid_s(end - start), azimuth, 0.0, event.share, 0.0, True, EVENT_FADE_S))
            t = end
        blocks.append(Block(t, on_grid_s(duration_s - t), azimuth, 0.0, 0.0, 0.0, True, EVENT_FADE_S))
        objects.append(ObjectPlan(f"Effects events {feed[-1]}", feed, tuple(blocks)))
    return objects


def make_plan(sample_rate_hz: int, n_frames: int, stems: Iterable[str] = STEM_NAMES,
              effects_ild_db: Sequence[float] = (), bed: BedRules | None = None,
              generated: dict[str, Any] | None = None, events: Sequence[Event] = ()) -> Plan:
    """The default plan: dialogue at the centre, music a static front pair, effects a pair moving
    with its ILD, and the effect ``events`` as objects of their own (:func:`event_objects`)."""
    stems = tuple(stems)
    duration_s = n_frames / sample_rate_hz
    objects = []
    if "dialogue" in stems:
        objects.append(_static("Dialogue", "dialogue", 0.0, duration_s))
    if "music" in stems:
        objects += [_static("Music L", "music.L", 30.0, duration_s), _static("Music R", "music.R", -30.0, duration_s)]
    if "effects" in stems:
        objects += [ObjectPlan(f"Effects {side}", f"effects.{side}",
                               moving_pair_blocks(effects_ild_db, duration_s, side)) for side in ("L", "R")]
        objects += event_objects(events, duration_s)
    plan = Plan(sample_rate_hz, n_frames, stems, bed or BedRules(), tuple(objects))
    return replace(plan, generated={**(generated or {}), "auto_digest": plan.content_digest()})


# ----------------------------------------------------------------------------- validation and JSON

def validate_plan(plan: Plan, where: str = "plan", max_objects: int | None = None) -> None:
    """Raise one :class:`PlanError` naming ``where`` and the first problem found."""
    problems = plan_problems(plan, max_objects)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PlanError(f"{where}: {problems[0]}{more}")


def plan_problems(plan: Plan, max_objects: int | None = None) -> list[str]:
    """Everything wrong with a plan, as sentences."""
    problems = []
    if max_objects is not None and len(plan.objects) > max_objects:
        problems.append(f"{len(plan.objects)} objects, more than the {max_objects} allowed")
    names = [o.name for o in plan.objects]
    if len(set(names)) != len(names):
        problems.append(f"object names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    for obj in plan.objects:
        problems += [f"object {obj.name!r}: {p}" for p in _object_problems(obj, plan)]
    return problems


def _object_problems(obj: ObjectPlan, plan: Plan) -> list[str]:
    if obj.feed not in FEEDS:
        return [f"feed {obj.feed!r} is not one of {list(FEEDS)}"]
    if feed_stem(obj.feed) not in plan.stems:
        return [f"feed {obj.feed!r} needs the {feed_stem(obj.feed)} stem, which this title does not have "
                f"(stems: {list(plan.stems)})"]
    if obj.stem not in STEM_NAMES:
        return [f"content {obj.content!r} is not one of {list(STEM_NAMES)}"]
    if not obj.blocks:
        return ["has no blocks"]
    problems = []
    for i, b in enumerate(obj.blocks):
        problems += [f"block {i}: {p}" for p in _block_problems(b)]
    if problems:
        return problems
    if abs(obj.blocks[0].start_s) > 1e-9:
        problems.append(f"first block starts at {obj.blocks[0].start_s} s, not 0")
    for i, (a, b) in enumerate(zip(obj.blocks[:-1], obj.blocks[1:]), start=1):
        if abs(b.start_s - a.end_s) > 1e-6:
            problems.append(f"block {i} starts at {b.start_s} s but block {i - 1} ends at {a.end_s:.5f} s "
                            "(blocks must be contiguous)")
    if obj.blocks[-1].end_s < plan.duration_s - 1e-5:
        problems.append(f"blocks end at {obj.blocks[-1].end_s:.5f} s, before the programme's end "
                        f"({plan.duration_s:.5f} s)")
    return problems


def _block_problems(b: Block) -> list[str]:
    checks = [
        ("start_s", b.start_s, 0.0, math.inf), ("duration_s", b.duration_s, 1e-5, math.inf),
        ("azimuth_deg", b.azimuth_deg, -180.0, 180.0), ("elevation_deg", b.elevation_deg, -90.0, 90.0),
        ("gain", b.gain, 0.0, 10.0), ("width_deg", b.width_deg, 0.0, 360.0),
        ("interpolation_s", b.interpolation_s, 0.0, b.duration_s if math.isfinite(b.duration_s) else 0.0),
    ]
    problems = []
    for name, value, lo, hi in checks:
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            problems.append(f"{name} = {value!r} is not a finite number")
        elif not lo <= value <= hi:
            problems.append(f"{name} = {value} is outside [{lo}, {hi}]")
    return problems


def plan_from_dict(d: dict[str, Any], where: str = "plan") -> Plan:
    """Parse (without validating positions) a plan dictionary; malformed structure -> PlanError."""
    try:
        if d.get("format") != PLAN_FORMAT:
            raise PlanError(f"{where}: format is {d.get('format')!r}, expected {PLAN_FORMAT!r}")
        bed_keys = {f.name for f in fields(BedRules)}
        unknown = set(d.get("bed", {})) - bed_keys
        if unknown:
            raise PlanError(f"{where}: unknown bed rules {sorted(unknown)}; known: {sorted(bed_keys)}")
        objects = tuple(
            ObjectPlan(str(o["name"]), str(o["feed"]), tuple(_block_from(b) for b in o["blocks"]),
                       str(o.get("content", "")))
            for o in d["objects"])
        return Plan(int(d["sample_rate_hz"]), int(d["n_frames"]), tuple(d["stems"]), BedRules(**d.get("bed", {})),
                    objects, str(d.get("layout", "4+7+0")), dict(d.get("generated", {})))
    except PlanError:
        raise
    except ConfigError as exc:
        raise PlanError(f"{where}: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"{where}: malformed plan ({type(exc).__name__}: {exc})") from exc


def _block_from(b: dict[str, Any]) -> Block:
    unknown = set(b) - {f.name for f in fields(Block)}
    if unknown:
        raise ValueError(f"unknown block fields {sorted(unknown)}")
    return Block(float(b["start_s"]), float(b["duration_s"]), float(b.get("azimuth_deg", 0.0)),
                 float(b.get("elevation_deg", 0.0)), float(b.get("gain", 1.0)), float(b.get("width_deg", 0.0)),
                 bool(b.get("jump", False)), float(b.get("interpolation_s", 0.0)))


def load_plan(path: str | Path, max_objects: int | None = None) -> Plan:
    """Read and validate ``plan.json``; every problem becomes one PlanError naming the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc})") from exc
    plan = plan_from_dict(d, str(path))
    validate_plan(plan, str(path), max_objects)
    return plan


def is_edited(plan: Plan) -> bool:
    """Whether the plan differs from what :func:`make_plan` wrote (an engineer changed it)."""
    return plan.generated.get("auto_digest") != plan.content_digest()
