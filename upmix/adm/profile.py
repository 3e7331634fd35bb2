"""ADM profiles (:data:`PROFILES`): what a delivery target allows of an ADM BWF file.

- ``ebu``: 4+7+0 DirectSpeakers bed + polar objects. This is what the EBU ADM
  renderer renders back to our 7.1.4 bed.
- ``dolby``: the constraints of the Dolby Atmos Master ADM profile as we apply
  them: 48 kHz, 24-bit PCM, at most 128 tracks, a DirectSpeakers bed of at most
  7.1.2 (we write 7.1; the bed's height ambience becomes four static objects at
  the height speakers), at most 118 objects, Cartesian object positions
  (BS.2127 s10 conversion; a position at a 7.1.4 speaker goes to that speaker's
  allocentric position), every object's blocks contiguous from 0 to its end,
  interpolationLength within its block.
"""

from __future__ import annotations

from dataclasses import dataclass

from filmrestore.errors import ConfigError


@dataclass(frozen=True)
class AdmProfile:
    """What an ADM profile allows."""

    name: str
    bed_layout: str  # the DirectSpeakers pack we write
    cartesian: bool  # object positions in Cartesian coordinates
    sample_rates_hz: tuple[int, ...] | None = None
    bit_depths: tuple[int, ...] = (24,)
    max_tracks: int | None = None
    max_objects: int | None = None
    max_bed_channels: int | None = None
    allowed_bed_packs: tuple[str, ...] | None = None


PROFILES: dict[str, AdmProfile] = {
    "ebu": AdmProfile("ebu", "4+7+0", cartesian=False, bit_depths=(16, 24, 32)),
    "dolby": AdmProfile(
        "dolby", "0+7+0", cartesian=True, sample_rates_hz=(48_000,), bit_depths=(24,), max_tracks=128,
        max_objects=118, max_bed_channels=10,
        # 2.0, 3.0, 5.0, 5.1, 7.0, 7.1, 5.1.2, 7.1.2 (BS.2094 common packs up to 7.1.2)
        allowed_bed_packs=("AP_00010001", "AP_00010002", "AP_0001000a", "AP_0001000c", "AP_00010003",
                           "AP_0001000f", "AP_00010004", "AP_00010016"),
    ),
}


def get_profile(name: str) -> AdmProfile:
    """An ADM profile by name (``ebu`` or ``dolby``)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown ADM profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]
