"""Loudness: BS.1770-4 / EBU Tech 3341-3342 metering, channel weights, speech-gated
(dialogue) loudness, delivery specs and the true-peak limiter. Pure library code: no
Prefect, no printing."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filmrestore.loudness.specs import DeliverySpec


def spec_label(spec: DeliverySpec | dict[str, Any]) -> str:
    """``ebu-r128``, or ``custom (from ebu-r128)`` for a changed preset (a spec or its dict).

    Here rather than in :mod:`.specs`, so that printing a verdict imports no meter."""
    d = spec if isinstance(spec, dict) else asdict(spec)
    return f"{d['name']} (from {d['based_on']})" if d.get("based_on") else d["name"]
