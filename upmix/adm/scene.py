"""The scene in an ADM file: a plan laid out for a profile, and the IDs and positions it is written with.

The bed uses only the common definitions of ITU-R BS.2094 (the pack, e.g.
``AP_00010017`` for 4+7+0, and per speaker the track format ``AT_000100xx_01``);
bed channels that carry nothing are referenced as the silent track
``ATU_00000000``. Bed channels the profile's bed cannot carry become static
objects. Object positions convert from polar to Cartesian as BS.2127 s10 does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from filmrestore.errors import PlanError
from filmrestore.layouts import BED_7_1_4, Layout, get_layout
from filmrestore.upmix.adm.profile import AdmProfile
from filmrestore.upmix.plan import Block, ObjectPlan, Plan, plan_problems
from filmrestore.upmix.render import INPUTS

# ITU-R BS.2094 common definitions: BS.2051 speaker label -> audioChannelFormat number.
COMMON_CHANNEL_FORMATS: dict[str, int] = {
    "M+030": 0x01, "M-030": 0x02, "M+000": 0x03, "LFE1": 0x04, "M+110": 0x05, "M-110": 0x06,
    "M+090": 0x0A, "M-090": 0x0B, "M+135": 0x1C, "M-135": 0x1D,
    "U+045": 0x22, "U-045": 0x23, "U+135": 0x1E, "U-135": 0x1F,
    "U+030": 0x0D, "U-030": 0x0F, "U+110": 0x10, "U-110": 0x12,
}
# BS.2094 DirectSpeakers packs (typeLabel 0001) for the layouts we write.
COMMON_PACK_FORMATS: dict[str, str] = {
    "0+2+0": "AP_00010002", "0+5+0": "AP_00010003", "0+7+0": "AP_0001000f", "4+7+0": "AP_00010017",
    "2+5+0": "AP_00010004", "4+5+0": "AP_00010005",
}
# Allocentric (Cartesian) positions of the 4+7+0 speakers, as the ADM renderer's allocentric panner places them.
ALLOCENTRIC_4_7_0: dict[str, tuple[float, float, float]] = {
    "M+030": (-1.0, 1.0, 0.0), "M-030": (1.0, 1.0, 0.0), "M+000": (0.0, 1.0, 0.0),
    "M+090": (-1.0, 0.0, 0.0), "M-090": (1.0, 0.0, 0.0), "M+135": (-1.0, -1.0, 0.0),
    "M-135": (1.0, -1.0, 0.0), "U+045": (-1.0, 1.0, 1.0), "U-045": (1.0, 1.0, 1.0),
    "U+135": (-1.0, -1.0, 1.0), "U-135": (1.0, -1.0, 1.0),
}
SILENT_UID = "ATU_00000000"


def track_format_id(label: str) -> str:
    """Common-definition audioTrackFormatID of a speaker, e.g. "M+135" -> "AT_0001001c_01"."""
    if label not in COMMON_CHANNEL_FORMATS:
        raise PlanError(f"speaker {label!r} has no BS.2094 common definition here")
    return f"AT_0001{COMMON_CHANNEL_FORMATS[label]:04x}_01"


def pack_format_id(layout: Layout) -> str:
    """Common-definition audioPackFormatID of a DirectSpeakers layout (4+7+0 -> AP_00010017)."""
    if layout.name not in COMMON_PACK_FORMATS:
        raise PlanError(f"layout {layout.name} has no BS.2094 common pack format here")
    return COMMON_PACK_FORMATS[layout.name]


def track_uid(track_index: int) -> str:
    """audioTrackUID of 1-based WAV track ``track_index``: ATU_00000001, ..."""
    return f"ATU_{track_index:08X}"


def polar_to_cartesian(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """ITU-R BS.2127 s10 point conversion from polar to Cartesian (distance 1)."""
    el_top, el_top_tilde = 30.0, 45.0
    if abs(elevation_deg) > el_top:
        el_tilde = el_top_tilde + (90.0 - el_top_tilde) * (abs(elevation_deg) - el_top) / (90.0 - el_top)
        z, r_xy = math.copysign(1.0, elevation_deg), math.tan(math.radians(90.0 - el_tilde))
    else:
        z, r_xy = math.tan(math.radians(el_top_tilde * elevation_deg / el_top)), 1.0
    sectors = [(0.0, (0.0, 1.0)), (-30.0, (1.0, 1.0)), (-110.0, (1.0, -1.0)), (110.0, (-1.0, -1.0)),
               (30.0, (-1.0, 1.0))]
    for i in range(len(sectors)):
        (left_az, left_pos), (right_az, right_pos) = sectors[i], sectors[(i + 1) % len(sectors)]
        if _inside(azimuth_deg, right_az, left_az):
            rel_az, rel_left = _rel(right_az, azimuth_deg), _rel(right_az, left_az)
            mid = (rel_left + right_az) / 2.0
            gain_r = 0.5 + 0.5 * math.tan(math.radians(rel_az - mid)) / math.tan(math.radians(right_az - mid))
            p = math.atan2(gain_r, 1.0 - gain_r) * 2.0 / math.pi
            x = r_xy * (left_pos[0] + (right_pos[0] - left_pos[0]) * p)
            y = r_xy * (left_pos[1] + (right_pos[1] - left_pos[1]) * p)
            return round(x, 6), round(y, 6), round(z, 6)
    raise PlanError(f"azimuth {azimuth_deg} deg is in no sector")  # unreachable for finite azimuths


def _rel(x: float, y: float) -> float:
    """``y`` shifted by whole turns so that it is not less than ``x`` (ear's relative_angle)."""
    while y - 360.0 >= x:
        y -= 360.0
    while y < x:
        y += 360.0
    return y


def _inside(x: float, start: float, end: float) -> bool:
    """Whether angle ``x`` is within [start, end] going anticlockwise (ear's inside_angle_range, tol 0)."""
    end = _rel(start, end) if end < start else end
    while end - 360.0 > start:
        end -= 360.0
    return _rel(start, x) <= end


@dataclass(frozen=True)
class AdmObject:
    """An Objects audioObject: its plan, its content, and which rendered row feeds its track."""

    plan: ObjectPlan
    content: str
    source_row: int  # row of vstack([bed, feeds]) of a RenderedBlock


@dataclass(frozen=True)
class AdmScene:
    """What goes into one ADM file: bed tracks, objects, their track order."""

    profile: AdmProfile
    bed_layout: Layout
    bed_labels: tuple[str, ...]  # bed channels with a track, in the bed layout's order
    objects: tuple[AdmObject, ...]
    n_frames: int
    sample_rate_hz: int
    track_rows: tuple[int, ...] = field(default=())

    @property
    def n_tracks(self) -> int:
        return len(self.track_rows)


def _bed_channels_with_audio(plan: Plan, kept: Iterable[str] = ()) -> set[str]:
    """Bed channels that the renderer fills: ambience sends, LFE1 and the ``kept`` channels of a
    multichannel source (:func:`~filmrestore.upmix.render.kept_bed_labels`)."""
    from filmrestore.upmix.render import _AMBIENCE_SENDS

    labels = {"LFE1", *kept}
    for stem, sides in _AMBIENCE_SENDS.items():
        if stem in plan.stems:
            labels |= {label for sends in sides.values() for label, _ in sends}
    return labels


def scene_for(plan: Plan, profile: AdmProfile, source_layout: Layout = BED_7_1_4,
              kept: Iterable[str] = ()) -> AdmScene:
    """Lay a plan out for a profile; raises PlanError (before anything is written) if it does not fit.

    ``source_layout``: the rendered bed's layout; ``kept``: its channels that play a multichannel
    source's own channels (the renderer fills them whatever the plan says)."""
    problems = plan_problems(plan)
    if problems:
        raise PlanError(f"plan does not fit: {problems[0]}")
    bed_layout = get_layout(profile.bed_layout)
    filled = _bed_channels_with_audio(plan, kept)
    bed_labels = tuple(lab for lab in bed_layout.labels if lab in filled)
    objects = [AdmObject(o, o.stem, source_layout.n_channels + INPUTS.index(o.feed)) for o in plan.objects]
    for label in source_layout.labels:  # bed channels the profile's bed cannot carry become static objects
        if label in filled and label not in bed_layout.labels:
            spk = source_layout.speakers[source_layout.index(label)]
            block = Block(0.0, plan.duration_s, spk.azimuth_deg, spk.elevation_deg)
            objects.append(AdmObject(ObjectPlan(f"Ambience {label}", "dialogue", (block,)), "bed",
                                     source_layout.index(label)))
    rows = tuple(source_layout.index(lab) for lab in bed_labels) + tuple(o.source_row for o in objects)
    scene = AdmScene(profile, bed_layout, bed_labels, tuple(objects), plan.n_frames, plan.sample_rate_hz, rows)
    _check_fits(scene)
    return scene


def _check_fits(scene: AdmScene) -> None:
    profile = scene.profile
    if profile.cartesian:
        wide = next((o.plan.name for o in scene.objects if any(b.width_deg > 0 for b in o.plan.blocks)), None)
        if wide is not None:
            raise PlanError(f"object {wide!r} has a width; the {profile.name} profile's Cartesian positions "
                            "are written without one here: set width_deg to 0 or use the ebu profile")
    if profile.max_objects is not None and len(scene.objects) > profile.max_objects:
        raise PlanError(f"{len(scene.objects)} objects (with the bed's height ambience) exceed the "
                        f"{profile.name} profile's limit of {profile.max_objects}")
    if profile.max_tracks is not None and scene.n_tracks > profile.max_tracks:
        raise PlanError(f"{scene.n_tracks} tracks exceed the {profile.name} profile's limit of {profile.max_tracks}")
    if profile.sample_rates_hz is not None and scene.sample_rate_hz not in profile.sample_rates_hz:
        raise PlanError(f"{scene.sample_rate_hz} Hz is not allowed by the {profile.name} profile "
                        f"({profile.sample_rates_hz})")
