"""Loudspeaker layouts as small frozen data: the ITU-R BS.2051 systems the upmix renders to and
the other layouts a programme to be measured may come in (mono, 3.0, 4.0, 5.0, 7.0, 7.1.2). The
one table of speaker directions: the upmix pans with it, the BS.1770 meter weighs with it.

Each :class:`Layout` lists its speakers in the order of a WAVE_FORMAT_EXTENSIBLE
file (the order of the ``dwChannelMask`` bits), because that is the order of
every bed file the pipeline writes. BS.2051's own table order differs (for
``4+7+0`` it lists the sides M+090/M-090 before the rears M+135/M-135, while the
WAV mask order puts BACK_LEFT/RIGHT before SIDE_LEFT/RIGHT); the ADM ``chna``
chunk ties each WAV track to its speaker, so the two orders never get confused.
"""

from __future__ import annotations

from dataclasses import dataclass

from filmrestore.errors import ConfigError

# WAVE_FORMAT_EXTENSIBLE speaker-position bits (Microsoft KSAUDIO_SPEAKER_*).
WAVE_SPEAKER_BITS: dict[str, int] = {
    "FL": 0x1, "FR": 0x2, "FC": 0x4, "LFE": 0x8, "BL": 0x10, "BR": 0x20,
    "FLC": 0x40, "FRC": 0x80, "BC": 0x100, "SL": 0x200, "SR": 0x400, "TC": 0x800,
    "TFL": 0x1000, "TFC": 0x2000, "TFR": 0x4000, "TBL": 0x8000, "TBC": 0x10000,
    "TBR": 0x20000,
}


@dataclass(frozen=True)
class Speaker:
    """One loudspeaker: BS.2051 label, nominal direction, WAV channel name."""

    label: str  # BS.2051 name, e.g. "M+030", "U-135", "LFE1"
    wave_name: str | None  # WAVE_FORMAT_EXTENSIBLE position, e.g. "FL", "TBR"; None where there is none
    azimuth_deg: float  # counter-clockwise from the front, left positive (BS.2051)
    elevation_deg: float
    is_lfe: bool = False


@dataclass(frozen=True)
class Layout:
    """A BS.2051 loudspeaker setup, speakers in WAV file order."""

    name: str  # BS.2051 name, e.g. "4+7+0"
    common_name: str  # e.g. "7.1.4"
    speakers: tuple[Speaker, ...]

    @property
    def n_channels(self) -> int:
        return len(self.speakers)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.speakers)

    @property
    def wave_names(self) -> tuple[str | None, ...]:
        return tuple(s.wave_name for s in self.speakers)

    @property
    def channel_mask(self) -> int | None:
        """The WAVE_FORMAT_EXTENSIBLE ``dwChannelMask`` of this layout; None when a speaker has no bit.

        A mask only describes a file whose channels follow the bit order, so a
        layout whose WAV names are not in ascending bit order has no mask either.
        """
        names = self.wave_names
        if any(n is None for n in names):
            return None
        bits = [WAVE_SPEAKER_BITS[n] for n in names]  # type: ignore[index]
        if bits != sorted(bits):
            return None
        mask = 0
        for bit in bits:
            mask |= bit
        return mask

    @property
    def non_lfe(self) -> tuple[Speaker, ...]:
        """The speakers an object panner feeds (LFE excluded), in WAV order."""
        return tuple(s for s in self.speakers if not s.is_lfe)

    @property
    def lfe_indices(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.speakers) if s.is_lfe)

    def index(self, label: str) -> int:
        """Channel index (WAV order) of the speaker with this BS.2051 label."""
        for i, s in enumerate(self.speakers):
            if s.label == label:
                return i
        raise ConfigError(f"layout {self.name} has no speaker {label!r}; it has {self.labels}")


def _spk(label: str, wave_name: str | None, azimuth_deg: float, elevation_deg: float) -> Speaker:
    return Speaker(label, wave_name, azimuth_deg, elevation_deg, is_lfe=label.startswith("LFE"))


# Nominal positions from ITU-R BS.2051-3, Table 1 (LFE1 has no meaningful direction;
# BS.2051 places it at elevation -30 deg, as does the BS.2094 common definition).
_M030 = _spk("M+030", "FL", 30.0, 0.0)
_M_030 = _spk("M-030", "FR", -30.0, 0.0)
_M000 = _spk("M+000", "FC", 0.0, 0.0)
_LFE1 = _spk("LFE1", "LFE", 0.0, -30.0)
_M110 = _spk("M+110", "BL", 110.0, 0.0)
_M_110 = _spk("M-110", "BR", -110.0, 0.0)
_U030 = _spk("U+030", "TFL", 30.0, 30.0)
_U_030 = _spk("U-030", "TFR", -30.0, 30.0)


def _no_mask(label: str, azimuth_deg: float, elevation_deg: float) -> Speaker:
    return _spk(label, None, azimuth_deg, elevation_deg)


# 22.2 (BS.2051 system H): 24 channels, more than WAVE_FORMAT_EXTENSIBLE has bits for;
# listed in BS.2051 table order (that of the BS.2094 pack AP_00010009).
_LAYOUT_9_10_3 = tuple(_no_mask(label, az, el) for label, az, el in (
    ("M+060", 60, 0), ("M-060", -60, 0), ("M+000", 0, 0), ("LFE1", 45, -30), ("M+135", 135, 0),
    ("M-135", -135, 0), ("M+030", 30, 0), ("M-030", -30, 0), ("M+180", 180, 0), ("LFE2", -45, -30),
    ("M+090", 90, 0), ("M-090", -90, 0), ("U+045", 45, 30), ("U-045", -45, 30), ("U+000", 0, 30),
    ("T+000", 0, 90), ("U+135", 135, 30), ("U-135", -135, 30), ("U+090", 90, 30), ("U-090", -90, 30),
    ("U+180", 180, 30), ("B+000", 0, -30), ("B+045", 45, -30), ("B-045", -45, -30),
))

LAYOUTS: dict[str, Layout] = {
    "0+2+0": Layout("0+2+0", "2.0", (_M030, _M_030)),
    # 5.1 surrounds at +/-110 deg use the BACK_LEFT/RIGHT bits (mask 0x3F), as ffmpeg's "5.1(back)".
    "0+5+0": Layout("0+5+0", "5.1", (_M030, _M_030, _M000, _LFE1, _M110, _M_110)),
    "2+5+0": Layout("2+5+0", "5.1.2", (_M030, _M_030, _M000, _LFE1, _M110, _M_110, _U030, _U_030)),
    "4+5+0": Layout("4+5+0", "5.1.4", (
        _M030, _M_030, _M000, _LFE1, _M110, _M_110, _U030, _U_030,
        _spk("U+110", "TBL", 110.0, 30.0), _spk("U-110", "TBR", -110.0, 30.0),
    )),
    "0+7+0": Layout("0+7+0", "7.1", (
        _M030, _M_030, _M000, _LFE1,
        _spk("M+135", "BL", 135.0, 0.0), _spk("M-135", "BR", -135.0, 0.0),
        _spk("M+090", "SL", 90.0, 0.0), _spk("M-090", "SR", -90.0, 0.0),
    )),
    "4+7+0": Layout("4+7+0", "7.1.4", (
        _M030, _M_030, _M000, _LFE1,
        _spk("M+135", "BL", 135.0, 0.0), _spk("M-135", "BR", -135.0, 0.0),
        _spk("M+090", "SL", 90.0, 0.0), _spk("M-090", "SR", -90.0, 0.0),
        _spk("U+045", "TFL", 45.0, 30.0), _spk("U-045", "TFR", -45.0, 30.0),
        _spk("U+135", "TBL", 135.0, 30.0), _spk("U-135", "TBR", -135.0, 30.0),
    )),
    "9+10+3": Layout("9+10+3", "22.2", _LAYOUT_9_10_3),
}
# Layouts a programme may come in that BS.2051 has no system for (named by their common name):
# measured (BS.1770 weights), never rendered to. A surround pair without sides sits at +-110 deg
# (BS.775), as in 5.1.
_M110_PAIR = (_M110, _M_110)
_SIDE_110 = (_spk("M+110", "SL", 110.0, 0.0), _spk("M-110", "SR", -110.0, 0.0))
_SIDES_AND_REARS = (_spk("M+135", "BL", 135.0, 0.0), _spk("M-135", "BR", -135.0, 0.0),
                    _spk("M+090", "SL", 90.0, 0.0), _spk("M-090", "SR", -90.0, 0.0))
PROGRAMME_LAYOUTS: dict[str, Layout] = {
    "mono": Layout("mono", "mono", (_spk("M+000", "FC", 0.0, 0.0),)),
    "3.0": Layout("3.0", "3.0", (_M030, _M_030, _M000)),
    "4.0": Layout("4.0", "4.0", (_M030, _M_030, *_M110_PAIR)),
    "5.0": Layout("5.0", "5.0", (_M030, _M_030, _M000, *_M110_PAIR)),
    "7.0": Layout("7.0", "7.0", (_M030, _M_030, _M000, *_SIDES_AND_REARS)),
    "7.1.2": Layout("7.1.2", "7.1.2", (_M030, _M_030, _M000, _LFE1, *_SIDES_AND_REARS, _U030, _U_030)),
    # ffmpeg's "(side)" variants: the same +-110 deg surrounds on the SIDE_LEFT/RIGHT bits.
    "quad(side)": Layout("quad(side)", "4.0", (_M030, _M_030, *_SIDE_110)),
    "5.0(side)": Layout("5.0(side)", "5.0", (_M030, _M_030, _M000, *_SIDE_110)),
    "5.1(side)": Layout("5.1(side)", "5.1", (_M030, _M_030, _M000, _LFE1, *_SIDE_110)),
}
#: The layout a source of this many channels is read as when its file names no speakers.
DEFAULT_SOURCE_LAYOUTS = {1: "mono", 2: "0+2+0", 3: "3.0", 4: "4.0", 5: "5.0", 6: "0+5+0", 8: "0+7+0",
                          12: "4+7+0"}
_ALIASES = {"2.0": "0+2+0", "stereo": "0+2+0", "5.1": "0+5+0", "5.1.2": "2+5+0", "5.1.4": "4+5+0",
            "7.1": "0+7+0", "7.1.4": "4+7+0", "22.2": "9+10+3"}


def layout_for_wave_names(names: tuple[str, ...]) -> Layout | None:
    """The layout whose speakers are these WAVE_FORMAT_EXTENSIBLE positions in this order, if any."""
    for layout in (*LAYOUTS.values(), *PROGRAMME_LAYOUTS.values()):
        if layout.wave_names == names:
            return layout
    return None

BED_7_1_4 = LAYOUTS["4+7+0"]


def source_layout(n_channels: int, channel_mask: int | None = None) -> Layout:
    """The layout of a source (a soundtrack, a stem): the one its WAVE speaker mask names when a
    known layout has those speakers in that order, else the usual layout of ``n_channels``
    (:data:`DEFAULT_SOURCE_LAYOUTS`: 6 channels are 5.1, 8 are 7.1, 12 are 7.1.4)."""
    if channel_mask:
        names = tuple(name for name, bit in sorted(WAVE_SPEAKER_BITS.items(), key=lambda kv: kv[1])
                      if channel_mask & bit)
        found = layout_for_wave_names(names) if len(names) == n_channels else None
        if found is not None:
            return found
        if len(names) == n_channels:  # named speakers that no layout here places: never guessed
            raise ConfigError(f"its {n_channels} channels are {'+'.join(names)}, a layout filmrestore does not "
                              "place; it takes mono, stereo, 3.0, quad, 5.0, 5.1 (side or back), 7.1 and 7.1.4")
    if n_channels not in DEFAULT_SOURCE_LAYOUTS:
        raise ConfigError(f"no source layout of {n_channels} channels; filmrestore takes "
                          f"{', '.join(map(str, sorted(DEFAULT_SOURCE_LAYOUTS)))}")
    return get_layout(DEFAULT_SOURCE_LAYOUTS[n_channels])


def get_layout(name: str) -> Layout:
    """Look a layout up by BS.2051 name ("4+7+0") or common name ("7.1.4", "stereo"; also the
    programme-only layouts "mono", "3.0", "4.0", "5.0", "7.0", "7.1.2")."""
    key = _ALIASES.get(name, name)
    if key in PROGRAMME_LAYOUTS:
        return PROGRAMME_LAYOUTS[key]
    if key not in LAYOUTS:
        raise ConfigError(f"unknown speaker layout {name!r}; known: "
                          f"{sorted(LAYOUTS) + sorted(_ALIASES) + sorted(PROGRAMME_LAYOUTS)}")
    return LAYOUTS[key]
