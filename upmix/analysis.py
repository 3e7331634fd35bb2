"""What the plan stage reads from a title's stem files: the effects' stereo image and events,
and the bed channels a multichannel source keeps (one streaming pass each; nothing is held but
the per-block figures)."""

from __future__ import annotations

from pathlib import Path

from filmrestore.audio import iter_blocks, read_info, read_layout
from filmrestore.upmix.deliver import BLOCK_FRAMES
from filmrestore.upmix.events import Event, EventDetector
from filmrestore.upmix.plan import ImageAnalysis
from filmrestore.upmix.render import kept_bed_labels, stereo_image


def analyse_effects(path: str | Path) -> tuple[list[float], list[Event]]:
    """One pass over the effects stem: its interchannel level difference per analysis block (0 dB
    for mono) and its events (none for a multichannel source, whose effects stay in place)."""
    info = read_info(path)
    image = ImageAnalysis(info.sample_rate_hz)
    events = EventDetector(info.sample_rate_hz) if info.n_channels <= 2 else None
    layout = read_layout(path) if info.n_channels > 2 else None
    for block in iter_blocks(path, BLOCK_FRAMES):
        folded = stereo_image({"effects": block}, layout)["effects"]
        image.process(folded)
        if events is not None:
            events.process(folded)
    return image.ild_db(), events.events() if events is not None else []


def kept_bed_channels(path: str | Path) -> frozenset[str]:
    """The 7.1.4 bed channels that play the channels of the source a stem file comes from (its
    speaker mask; none for mono or stereo)."""
    return kept_bed_labels(read_layout(path) if read_info(path).n_channels > 2 else None)
