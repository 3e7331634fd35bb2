"""Delivery specs (EBU R128, ATSC A/85, Netflix), the programme gain that meets one and the
pass/fail verdict of a measured delivery."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from filmrestore.errors import ConfigError, SilentProgrammeError
from filmrestore.loudness.meter import LoudnessReport, finite_or_none

# ----------------------------------------------------------------------------- presets and gain

Gate = Literal["programme", "dialogue"]


@dataclass(frozen=True)
class DeliverySpec:
    """A delivery target: integrated loudness, true-peak ceiling and what the loudness gates on."""

    name: str
    target_lufs: float
    ceiling_dbtp: float
    gate: Gate
    tolerance_lu: float = 1.0


PRESETS: dict[str, DeliverySpec] = {
    "ebu-r128": DeliverySpec("ebu-r128", -23.0, -1.0, "programme"),  # EBU R 128 (2020)
    "atsc-a85": DeliverySpec("atsc-a85", -24.0, -2.0, "programme"),  # ATSC A/85:2013
    "netflix": DeliverySpec("netflix", -27.0, -2.0, "dialogue"),  # Netflix sound mix spec
}


def get_preset(name: str, target: float | None = None, ceiling: float | None = None,
               gate: str | None = None) -> DeliverySpec:
    """A preset by name with optional overrides; ``name="custom"`` needs ``target``."""
    if name == "custom":
        if target is None:
            raise ConfigError("preset 'custom' needs a target loudness (LUFS)")
        base = DeliverySpec("custom", target, -1.0, "programme")
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ConfigError(f"unknown loudness preset {name!r}; expected one of "
                          f"{sorted(PRESETS) + ['custom']}")
    spec = DeliverySpec(base.name, base.target_lufs if target is None else float(target),
                        base.ceiling_dbtp if ceiling is None else float(ceiling),
                        base.gate if gate is None else gate, base.tolerance_lu)  # type: ignore[arg-type]
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
    dialogue_fallback: bool  # True when the spec gates on dialogue but no speech was found


def _measured_for(report: LoudnessReport, spec: DeliverySpec) -> tuple[float, Gate, bool]:
    if spec.gate == "dialogue":
        if report.dialogue_lufs is not None and math.isfinite(report.dialogue_lufs):
            return report.dialogue_lufs, "dialogue", False
        return report.integrated_lufs, "programme", True
    return report.integrated_lufs, "programme", False


def programme_gain(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> GainDecision:
    """Gain toward ``spec.target_lufs``; raises :class:`SilentProgrammeError` on silence."""
    measured, basis, fallback = _measured_for(report, spec)
    if not math.isfinite(measured):
        raise SilentProgrammeError(source, "is silent (integrated loudness -inf LUFS); "
                                   "refusing to amplify silence toward the target")
    return GainDecision(spec.target_lufs - measured, measured, basis, fallback)


def programme_gain_db(report: LoudnessReport, spec: DeliverySpec, source: str = "programme") -> float:
    """One gain in dB toward the target (see :func:`programme_gain` for the basis and flag)."""
    return programme_gain(report, spec, source).gain_db


def verdict(report_after: LoudnessReport, spec: DeliverySpec) -> dict[str, Any]:
    """Pass/fail of a normalised programme against its spec (loudness within tolerance, TP <= ceiling)."""
    measured, basis, fallback = _measured_for(report_after, spec)
    loudness_ok = math.isfinite(measured) and abs(measured - spec.target_lufs) <= spec.tolerance_lu
    peak_ok = report_after.true_peak_dbtp <= spec.ceiling_dbtp
    return {
        "preset": spec.name, "gate": basis, "dialogue_fallback": fallback,
        "target_lufs": spec.target_lufs, "measured_lufs": finite_or_none(measured),
        "tolerance_lu": spec.tolerance_lu, "loudness_pass": bool(loudness_ok),
        "ceiling_dbtp": spec.ceiling_dbtp, "true_peak_dbtp": finite_or_none(report_after.true_peak_dbtp),
        "true_peak_pass": bool(peak_ok), "pass": bool(loudness_ok and peak_ok),
    }


