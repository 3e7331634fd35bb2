"""BS.1770-4 channel weights of a loudspeaker layout (§2.4, Table 3), from a layout name,
a WAVE_FORMAT_EXTENSIBLE speaker mask or the channel count."""

from __future__ import annotations

import numpy as np

from filmrestore.errors import ConfigError
from filmrestore.layouts import Layout, get_layout, layout_for_wave_names

SURROUND_WEIGHT = 1.41  # BS.1770-4 Table 3: +1.5 dB for |azimuth| in 60..120 deg, elevation < 30 deg

#: The layouts a programme may be measured as (their speakers: :mod:`filmrestore.layouts`).
MEASURED_LAYOUTS = ("mono", "stereo", "3.0", "4.0", "5.0", "5.1", "7.0", "7.1", "5.1.4", "7.1.2", "7.1.4")
LAYOUT_CHANNELS: dict[str, tuple[str, ...]] = {
    name: tuple("M" if name == "mono" else w for w in get_layout(name).wave_names) for name in MEASURED_LAYOUTS}
# 5 channels are L R C Ls Rs (the order of the ITU/EBU multichannel test material).
DEFAULT_LAYOUT_BY_COUNT = {1: "mono", 2: "stereo", 3: "3.0", 5: "5.0", 6: "5.1", 7: "7.0", 8: "7.1",
                           12: "7.1.4"}
# WAVE_FORMAT_EXTENSIBLE speaker bits, in the order channels appear in the file.
SPEAKER_BITS = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR",
                "TC", "TFL", "TFC", "TFR", "TBL", "TBC", "TBR")


def _azimuth_deg(name: str, names: tuple[str, ...]) -> float:
    """Azimuth of a loudspeaker named by its WAVE position in a speaker mask that no layout of
    :mod:`filmrestore.layouts` matches (only |azimuth| 60-120 deg matters for the weights).

    BL/BR are the surrounds at +-110 deg (BS.775) when the layout has no side pair, else the
    rears at +-135 deg (BS.2051 4+7+0, where SL/SR are the sides at +-90 deg).
    """
    if name in ("SL", "SR"):
        return 90.0
    if name in ("BL", "BR"):
        return 135.0 if "SL" in names else 110.0
    return 180.0 if name == "BC" else 0.0


# ----------------------------------------------------------------------------- channel weights

def _weight_for(azimuth_deg: float, elevation_deg: float) -> float:
    """BS.1770-4 Table 3 / §2.4: 1.41 for 60 <= |azimuth| <= 120 deg below 30 deg elevation."""
    if elevation_deg < 30.0 and 60.0 <= abs(azimuth_deg) <= 120.0:
        return SURROUND_WEIGHT
    return 1.0


def layout_weights(layout: Layout) -> np.ndarray:
    """BS.1770-4 weights of a layout's speakers from their directions; the LFE 0 (excluded, §2.4)."""
    return np.asarray([0.0 if s.is_lfe else _weight_for(s.azimuth_deg, s.elevation_deg) for s in layout.speakers],
                      dtype=np.float64)


def _weights(names: tuple[str, ...]) -> np.ndarray:
    """Weights of the speakers named by a mask: a known layout's directions when it matches, else
    LFE 0, heights (T...) 1.0 and the rest by :func:`_azimuth_deg`."""
    layout = layout_for_wave_names(names)
    if layout is not None:
        return layout_weights(layout)
    return np.asarray([0.0 if name == "LFE" else 1.0 if name.startswith("T")
                       else _weight_for(_azimuth_deg(name, names), 0.0) for name in names], dtype=np.float64)


def layout_from_mask(mask: int) -> tuple[str, ...]:
    """Channel names, in file order, of a WAVE_FORMAT_EXTENSIBLE speaker mask."""
    return tuple(name for bit, name in enumerate(SPEAKER_BITS) if mask >> bit & 1)


def channel_weights_for(n_channels: int, layout: str | None = None, channel_mask: int | None = None
                        ) -> np.ndarray:
    """BS.1770-4 channel weights G_i for a WAV-ordered layout. [shape=(n_channels,)]

    ``layout`` is one of :data:`LAYOUT_CHANNELS`; without it, the file's speaker mask
    (``channel_mask``, when it names ``n_channels`` speakers) decides, else the channel count
    (1, 2, 3, 5, 6, 7, 8, 12; 5 is L R C Ls Rs). LFE gets weight 0 (excluded, BS.1770-4
    §2.4); heights 1.0; a loudspeaker at 60-120 deg azimuth 1.41.
    """
    if layout is None and channel_mask:
        names = layout_from_mask(channel_mask)
        if len(names) == n_channels:
            return _weights(names)
    if layout is None:
        layout = DEFAULT_LAYOUT_BY_COUNT.get(n_channels)
        if layout is None:
            raise ConfigError(f"no default loudness layout for {n_channels} channels; "
                              f"name one of {sorted(LAYOUT_CHANNELS)} or pass channel_weights")
    if layout not in LAYOUT_CHANNELS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUT_CHANNELS)}")
    names = LAYOUT_CHANNELS[layout]
    if len(names) != n_channels:
        raise ConfigError(f"layout {layout!r} has {len(names)} channels, not {n_channels}")
    return layout_weights(get_layout(layout))


