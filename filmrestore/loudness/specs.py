"""Delivery specs (EBU R128, ATSC A/85, Netflix), the programme gain that meets one and the
pass/fail verdict of a measured delivery."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from filmrestore.errors import ConfigError, SilentProgrammeError
from filmrestore.loudness import spec_label  # noqa: F401  (part of this module's API; defined light)
from filmrestore.loudness.meter import LoudnessReport, finite_or_none

# ----------------------------------------------------------------------------- presets and gain

Gate = Literal["programme", "dialogue"]


@dataclass(frozen=True)
class DeliverySpec:
    """A delivery target: integrated loudness, true-peak ceiling and what the loudness gates on.

    ``based_on`` names the preset a ``custom`` spec was made from by changing its numbers (a
    named spec whose numbers changed is no longer that spec). A dialogue-gated spec may carry
    its own fallback rule: below ``dialogue_share_min`` of speech (share of the programme's
    gating blocks) the programme loudness is measured against ``fallback_target_lufs``.
    """

    name: str
    target_lufs: float
    ceiling_dbtp: float
    gate: Gate
    tolerance_lu: float = 1.0
    based_on: str | None = None
    dialogue_share_min: float | None = None
    fallback_target_lufs: float | None = None


PRESETS: dict[str, DeliverySpec] = {
    "ebu-r128": DeliverySpec("ebu-r128", -23.0, -1.0, "programme"),  # EBU R 128 (2020): +-1 LU for live-free
    "atsc-a85": DeliverySpec("atsc-a85", -24.0, -2.0, "programme"),  # ATSC A/85:2013
    # Netflix Sound Mix Specifications v1.4: -27 LKFS +-2 LU dialogue-gated, -2 dBTP; a programme
    # with 15 % dialogue or less is measured full-programme at -24 LKFS instead.
    "netflix": DeliverySpec("netflix", -27.0, -2.0, "dialogue", tolerance_lu=2.0, dialogue_share_min=0.15,
                            fallback_target_lufs=-24.0),
}


def get_preset(name: str, target: float | None = None, ceiling: float | None = None,
               gate: str | None = None) -> DeliverySpec:
    """A preset by name with optional overrides; ``name="custom"`` needs ``target``.

    Overriding a named preset's target, ceiling or gate with a different value gives a
    ``custom`` spec that records the preset it was ``based_on`` (and drops the preset's own
    fallback rule); values equal to the preset's keep the preset.
    """
    if name == "custom":
        if target is None:
            raise ConfigError("preset 'custom' needs a target loudness (LUFS)")
        base = DeliverySpec("custom", target, -1.0, "programme")
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ConfigError(f"unknown loudness preset {name!r}; expected one of "
                          f"{sorted(PRESETS) + ['custom']}")
    values = (base.target_lufs if target is None else float(target),
              base.ceiling_dbtp if ceiling is None else float(ceiling),
              base.gate if gate is None else gate)
    if values == (base.target_lufs, base.ceiling_dbtp, base.gate):
        spec = base
    else:
        spec = DeliverySpec("custom", *values, base.tolerance_lu,  # type: ignore[arg-type]
                            based_on=base.name if base.name != "custom" else None)
    _validate_spec(spec)
    return spec


def _validate_spec(spec: DeliverySpec) -> None:
    if spec.gate not in ("programme", "dialogue"):
        raise ConfigError(f"preset {spec.name!r}: gate must be 'programme' or 'dialogue', "
                          f"got {spec.gate!r}")
    if not (-70.0 < spec.target_lufs < 0.0):
        raise ConfigError(f"preset {spec.name!r}: target {spec.target_lufs} LUFS out of (-70, 0)")
    if not (-20.0 <= spec.ceiling_dbtp <= 0.0):
        raise ConfigError(f"preset {spec.name!r}: ceiling {spec.ceiling_dbtp} dBTP out of [-20, 0]")


@dataclass(frozen=True)
class GainDecision:
    """The one programme gain, and what loudness it was derived from."""

    gain_db: float
    measured_lufs: float
    basis: Gate
    dialogue_fallback: bool  # True when a dialogue-gated spec measured the programme instead
    target_lufs: float = 0.0  # the target the gain aims at (a fallback rule may change it)
    fallback: str | None = None  # why it fell back


@dataclass(frozen=True)
class _Basis:
    measured_lufs: float
    target_lufs: float
    gate: Gate
    fallback: str | None  # why a dialogue-gated spec measured the programme instead, or None


def _basis(report: LoudnessReport, spec: DeliverySpec) -> _Basis:
    """What a spec measures on a report, and against which target (its fallback rule applied)."""
    if spec.gate != "dialogue":
        return _Basis(report.integrated_lufs, spec.target_lufs, "programme", None)
    share = report.dialogue_share
    if report.dialogue_lufs is None or not math.isfinite(report.dialogue_lufs):
        reason = "no speech found"
    elif spec.dialogue_share_min is not None and share is not None and share < spec.dialogue_share_min:
        reason = f"dialogue in {100 * share:.0f} % of the programme, under {100 * spec.dialogue_share_min:.0f} %"
    else:
        return _Basis(report.dialogue_lufs, spec.target_lufs, "dialogue", None)
    target = spec.fallback_target_lufs if spec.fallback_target_lufs is not None else spec.target_lufs
    return _Basis(report.integrated_lufs, target, "programme", reason)


def unmeasurable_reason(report: LoudnessReport) -> str:
    """Why a programme has no integrated loudness (-inf LUFS), in the terms of BS.1770: too short
    for one 400 ms gating block, digital silence, or every block under the -70 LUFS absolute
    gate (a quiet but not silent programme: its true peak is said)."""
    if report.duration_s < 0.4:
        return (f"is too short to measure ({report.duration_s:.3f} s: BS.1770 loudness needs at least "
                "one 400 ms block); refusing to normalise it")
    if math.isnan(report.true_peak_dbtp):  # a meter that skipped the true peak cannot tell silence from quiet
        return ("is silent or too quiet to measure: every 400 ms block is under BS.1770's -70 LUFS absolute "
                "gate; refusing to amplify it toward the target")
    if not math.isfinite(report.true_peak_dbtp):
        return "is silent (every sample is 0); refusing to amplify silence toward the target"
    return (f"is too quiet to measure: every 400 ms block is under BS.1770's -70 LUFS absolute gate "
            f"(true peak {report.true_peak_dbtp:.1f} dBTP); refusing to amplify it toward the target")


def programme_gain(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> GainDecision:
    """Gain toward the spec's target (its fallback target when its fallback rule applies);
    raises :class:`SilentProgrammeError` on silence."""
    b = _basis(report, spec)
    if not math.isfinite(b.measured_lufs):
        raise SilentProgrammeError(source, unmeasurable_reason(report))
    return GainDecision(b.target_lufs - b.measured_lufs, b.measured_lufs, b.gate, b.fallback is not None,
                        b.target_lufs, b.fallback)


def programme_gain_db(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> float:
    """One gain in dB toward the target (see :func:`programme_gain` for the basis and flag)."""
    return programme_gain(report, spec, source).gain_db


def verdict(report_after: LoudnessReport, spec: DeliverySpec) -> dict[str, Any]:
    """Pass/fail of a normalised programme against its spec (loudness within tolerance, TP <= ceiling).

    ``preset`` is the spec's name (``custom`` for a changed preset, with ``based_on``), ``gate``
    what was measured and ``fallback`` why a dialogue-gated spec measured the programme.
    """
    b = _basis(report_after, spec)
    measured = b.measured_lufs
    loudness_ok = math.isfinite(measured) and abs(measured - b.target_lufs) <= spec.tolerance_lu
    peak_ok = report_after.true_peak_dbtp <= spec.ceiling_dbtp
    return {
        "preset": spec.name, "based_on": spec.based_on, "gate": b.gate,
        "dialogue_fallback": b.fallback is not None, "fallback": b.fallback,
        "dialogue_share": finite_or_none(report_after.dialogue_share),
        "target_lufs": b.target_lufs, "measured_lufs": finite_or_none(measured),
        "tolerance_lu": spec.tolerance_lu, "loudness_pass": bool(loudness_ok),
        "ceiling_dbtp": spec.ceiling_dbtp, "true_peak_dbtp": finite_or_none(report_after.true_peak_dbtp),
        "true_peak_pass": bool(peak_ok), "pass": bool(loudness_ok and peak_ok),
    }


