"""Real recordings that Debian packages ship, for tests, training and demos.

Only packages whose recordings are free to use here; the packages reserved for
the held-out evaluation (shared/DATA-RESERVED.md) are never read. `.ci/setup`
installs :data:`PACKAGES`. Every package and licence is listed here, in one
place, so training and test data stay disjoint from the evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filmrestore.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """One Debian package of recordings."""

    package: str
    kind: str  # "speech", "music" or "effects"
    folder: Path
    pattern: str
    licence: str
    description: str


SOURCES: tuple[Source, ...] = (
    Source("asterisk-core-sounds-fr-wav", "speech", Path("/usr/share/asterisk/sounds/fr_CA_f_June"), "**/*.wav",
           "CC-BY-SA-3.0", "French prompts read by one female speaker (8 kHz WAV)"),
    Source("fillets-ng-data-nl", "speech", Path("/usr/share/games/fillets-ng/sound"), "**/nl/*.ogg",
           "GPL-2+", "Dutch voice acting of the game Fish Fillets NG (Ogg Vorbis)"),
    Source("colobot-common-sounds", "music", Path("/usr/share/games/colobot/music"), "*.ogg",
           "GPL-3+", "Orchestral/electronic game music of Colobot (Ogg Vorbis, stereo)"),
    Source("colobot-common-sounds", "effects", Path("/usr/share/games/colobot/sounds"), "*.wav",
           "GPL-3+", "Sound effects of Colobot: engines, impacts, explosions, UI (WAV)"),
)
PACKAGES: tuple[str, ...] = tuple(sorted({s.package for s in SOURCES}))
KINDS = ("speech", "music", "effects")


def find_recordings(kind: str) -> list[Path]:
    """Every installed recording of ``kind`` ("speech", "music", "effects"), sorted; [] when none is installed."""
    if kind not in KINDS:
        raise ConfigError(f"unknown recording kind {kind!r}; known: {KINDS}")
    found: list[Path] = []
    for source in SOURCES:
        if source.kind == kind and source.folder.is_dir():
            found.extend(sorted(source.folder.glob(source.pattern)))
    return found
