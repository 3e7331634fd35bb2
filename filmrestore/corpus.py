"""Real recordings that Debian packages ship, for tests, training and demos.

Only packages whose recordings are free to use here; the packages reserved for
the held-out evaluation (shared/DATA-RESERVED.md) are never read, nor
asterisk-core-sounds-es-* (the same voice as a reserved package) nor any wesnoth
package. Every package and licence is listed here, in one place, so training and
test data stay disjoint from the evaluation set.

Two sets:

* the **test corpus** (``in_ci=True``): small packages that `.ci/setup` installs and
  tests, benchmarks and the small DnR :func:`~filmrestore.separation.training.dataset.make_dataset`
  read through :func:`find_recordings`;
* the **training bank**: every source, installed by ``.ci/setup-training`` and decoded by
  ``filmrestore make-bank`` (:mod:`filmrestore.separation.training.bank`) through
  :func:`iter_recordings`. Files are listed from ``dpkg -L PACKAGE``, so a file of
  another package at the same path is never read.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from filmrestore.errors import ConfigError

KINDS = ("speech", "music", "effects")


@dataclass(frozen=True)
class Source:
    """One Debian package's recordings of one kind.

    ``pattern`` is a glob on the installed path (or, for ``archive`` sources, on the
    member name inside each zip archive the package ships). ``exclude`` globs drop
    files (spoken lines in a game's effects, notes in a sound folder). ``group`` says
    what the held-out split keeps together: ``"package"`` (one speaker), ``"parent"``
    (the folder: a language or a speaker), ``"folder"`` (the folder by its whole name: one
    actor), ``"voice"`` (a game voice's lines, by its name), ``"lang_suffix"``
    (``*_desc_<lang>.ogg``) or ``"file"`` (a music track, an effect).
    """

    package: str
    kind: str  # "speech", "music" or "effects"
    folder: Path
    pattern: str
    licence: str
    description: str
    group: str = "file"
    exclude: tuple[str, ...] = ()
    archive: bool = False
    in_ci: bool = False


#: MegaGlest voices that are no person's: animals' calls, creatures' growls, spirits' processed voices.
_MEGAGLEST_CREATURES = tuple(
    f"**/{unit}_{answer}[0-9]*.*"
    for unit in ("cow", "pig", "golem", "behemoth", "bull", "chicken", "dragon", "dr", "evil_dragon", "eagle",
                 "genie", "ghost_armor", "mummy")
    for answer in ("ack", "select")) + ("**/commondata/sounds/daemon_*",)

SOURCES: tuple[Source, ...] = (
    # ---- speech
    Source("asterisk-core-sounds-fr-wav", "speech", Path("/usr/share/asterisk/sounds/fr_CA_f_June"), "**/*.wav",
           "CC-BY-SA-3.0", "French prompts read by one female speaker (8 kHz WAV; tests only, the bank "
           "takes the 16 kHz G.722 variant)", group="package", in_ci=True),
    Source("fillets-ng-data-nl", "speech", Path("/usr/share/games/fillets-ng/sound"), "**/nl/*.ogg",
           "GPL-2+", "Dutch voice acting of the game Fish Fillets NG (Ogg Vorbis)", group="package", in_ci=True),
    Source("asterisk-core-sounds-fr-g722", "speech", Path("/usr/share/asterisk/sounds/fr_CA_f_June"), "**/*.g722",
           "CC-BY-SA-3.0", "French (Canada) prompts, one female speaker, 16 kHz G.722", group="package"),
    Source("asterisk-core-sounds-it-g722", "speech", Path("/usr/share/asterisk/sounds/it_IT_m_Carlo"), "**/*.g722",
           "CC-BY-SA-3.0", "Italian prompts, one male speaker, 16 kHz G.722", group="package"),
    Source("asterisk-core-sounds-ru-g722", "speech", Path("/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU"),
           "**/*.g722", "CC-BY-SA-3.0", "Russian prompts, one female speaker, 16 kHz G.722", group="package"),
    Source("asterisk-prompt-it-menardi-wav", "speech", Path("/usr/share/asterisk/sounds/it_IT_f_Menardi"),
           "**/*.wav", "CC-BY-SA-3.0", "Italian prompts, one female speaker (8 kHz WAV)", group="package"),
    Source("tuxpaint-stamps-default", "speech", Path("/usr/share/tuxpaint/stamps"), "**/*_desc*.ogg",
           "GPL-2", "Tux Paint stamp descriptions read by volunteers in ~20 languages", group="lang_suffix"),
    Source("ktuberling-data", "speech", Path("/usr/share/ktuberling/sounds"), "*/*.ogg",
           "GPL-2+", "KTuberling object names spoken in ~30 languages", group="parent"),
    Source("ktuberling-data", "speech", Path("/usr/share/ktuberling/sounds"), "*/*.wav",
           "GPL-2+", "KTuberling object names spoken in ~30 languages (WAV)", group="parent"),
    Source("klettres-data", "speech", Path("/usr/share/klettres"), "*/*/*.ogg",
           "GPL-2+", "KLettres letters and syllables spoken in ~20 languages", group="lang_dir"),
    # Acted lines: the bank's other speech is read words and prompts, and film dialogue is acted
    # (shouts, taunts, efforts): the shipped model gave Hedgewars' lines 80 % to the dialogue, read ones 93-100 %.
    Source("hedgewars-data", "speech", Path("/usr/share/games/hedgewars/Data/Sounds/voices"), "*/*.ogg",
           "GPL-2", "Hedgewars voice packs: one actor each, English, Spanish, Polish, Russian, Ukrainian "
           "(the Robot pack, a vocoder, and the Singer pack, sung, left out)", group="folder",
           exclude=("**/voices/Robot/*", "**/voices/Singer/*")),
    Source("megaglest-data", "speech", Path("/usr/share/games/megaglest/techs/megapack"), "**/*_ack[0-9]*.*",
           "CC-BY-SA-3.0", "MegaGlest units answering orders, acted (animals and creatures left out)",
           group="voice", exclude=_MEGAGLEST_CREATURES),
    Source("megaglest-data", "speech", Path("/usr/share/games/megaglest/techs/megapack"), "**/*_select[0-9]*.*",
           "CC-BY-SA-3.0", "MegaGlest units answering selection, acted (animals and creatures left out)",
           group="voice", exclude=_MEGAGLEST_CREATURES),
    # ---- music
    Source("colobot-common-sounds", "music", Path("/usr/share/games/colobot/music"), "*.ogg",
           "GPL-3+", "Orchestral/electronic game music of Colobot (Ogg Vorbis, stereo)", in_ci=True),
    Source("ufoai-music", "music", Path("/usr/share/games/ufoai/base"), "music/*.ogg",
           "GPL-2+", "UFO: Alien Invasion soundtrack: orchestral, ambient, battle (Ogg in a pk3 archive)",
           archive=True),
    Source("nexuiz-music", "music", Path("/usr/share/games/nexuiz/data"), "sound/cdtracks/*.ogg",
           "GPL-2+", "Nexuiz soundtrack: electronic, rock (Ogg in a pk3 archive)", archive=True),
    Source("hedgewars-data", "music", Path("/usr/share/games/hedgewars/Data/Music"), "*.ogg",
           "GPL-2", "Hedgewars music: orchestral, folk, electronic themes"),
    Source("supertux-data", "music", Path("/usr/share/games/supertux2/music"), "**/*.ogg",
           "GPL-2+", "SuperTux music: chiptune, orchestral, jazz"),
    Source("asterisk-moh-opsound-wav", "music", Path("/usr/share/asterisk/moh"), "*.wav",
           "CC-BY-SA-3.0", "Opsound music on hold: acoustic and electronic pieces"),
    Source("scorched3d-data", "music", Path("/usr/share/games/scorched3d/data"), "**/music/*.ogg",
           "GPL-2+", "Scorched 3D music loops"),
    Source("supertuxkart-data", "music", Path("/usr/share/games/supertuxkart/data/music"), "*.ogg",
           "CC-BY-SA-3.0", "SuperTuxKart music: orchestral, rock, electronic, world"),
    Source("0ad-data", "music", Path("/usr/share/games/0ad/mods/public"), "audio/music/**/*.ogg",
           "CC-BY-SA-3.0", "0 A.D. soundtrack: orchestral and world music of many cultures (Ogg in a zip)",
           archive=True),
    Source("widelands-data", "music", Path("/usr/share/games/widelands/data/music"), "*.ogg",
           "GPL-2+", "Widelands soundtrack: orchestral, folk, ambient"),
    Source("naev-data", "music", Path("/usr/share/naev/dat/snd/music"), "**/*.ogg",
           "CC-BY-SA-3.0", "Naev soundtrack: orchestral, electronic, ambient space music"),
    Source("redeclipse-data", "music", Path("/usr/share/games/redeclipse/data/sounds/music"), "*.ogg",
           "CC-BY-SA-3.0", "Red Eclipse music: rock, electronic"),
    Source("warmux-data", "music", Path("/usr/share/games/warmux/music"), "**/*.ogg",
           "GPL-2+", "Warmux music: orchestral, folk, electronic"),
    Source("extremetuxracer-data", "music", Path("/usr/share/games/etr/music"), "*.*",
           "GPL-2+", "Extreme Tux Racer music"),
    Source("lincity-ng-data", "music", Path("/usr/share/games/lincity-ng/music"), "**/*.ogg",
           "GPL-2+", "LinCity-NG music: blues, ambient"),
    Source("xmoto-data", "music", Path("/usr/share/games/xmoto/Textures/Musics"), "*.ogg",
           "GPL-2+", "X-Moto music: rock, electronic"),
    # ---- effects
    Source("colobot-common-sounds", "effects", Path("/usr/share/games/colobot/sounds"), "*.wav",
           "GPL-3+", "Sound effects of Colobot: engines, impacts, explosions, UI (WAV)", in_ci=True),
    Source("tuxpaint-stamps-default", "effects", Path("/usr/share/tuxpaint/stamps"), "**/*.ogg",
           "GPL-2", "Tux Paint stamp sounds: animals, vehicles, weather, objects",
           exclude=("**/*_desc*.ogg", "/usr/share/tuxpaint/stamps/symbols/**/*",
                    "/usr/share/tuxpaint/stamps/hobbies/music/**/*")),  # instruments' notes are music
    Source("hedgewars-data", "effects", Path("/usr/share/games/hedgewars/Data/Sounds"), "*.ogg",
           "GPL-2", "Hedgewars effects: explosions, weapons, water, impacts", exclude=("**/[0-9][A-G]*.ogg",)),
    Source("supertux-data", "effects", Path("/usr/share/games/supertux2/sounds"), "*.*",
           "GPL-2+", "SuperTux effects: jumps, impacts, fire, ice, machines"),
    Source("megaglest-data", "effects", Path("/usr/share/games/megaglest"), "**/commondata/sounds/*.*",
           "CC-BY-SA-3.0", "MegaGlest battle effects: swords, arrows, magic, explosions (units' answers to "
           "orders left out: spoken lines)", exclude=("**/*_ack[0-9]*.*", "**/*_select[0-9]*.*")),
    Source("megaglest-data", "effects", Path("/usr/share/games/megaglest/tilesets"), "*/sounds/*.*",
           "CC-BY-SA-3.0", "MegaGlest tileset ambiences: forest, wind, rain, birds, night"),
    Source("openarena-data", "effects", Path("/usr/share/games/openarena"), "sound/**/*.wav",
           "GPL-2+", "OpenArena effects: weapons, items, doors and movers, world ambience",
           exclude=("sound/player/**/*", "sound/feedback/**/*"), archive=True),
    Source("nexuiz-data", "effects", Path("/usr/share/games/nexuiz/data"), "sound/**/*.*",
           "GPL-2+", "Nexuiz effects: weapons, machines, ambience (Ogg/WAV in a pk3; voices and announcer left out)",
           exclude=("sound/player/**/*", "sound/tutorial/**/*", "sound/announcer/**/*",
                    "sound/weapons/tuba_note*"), archive=True),  # the tuba weapon plays notes: music
    Source("supertuxkart-data", "effects", Path("/usr/share/games/supertuxkart/data/sfx"), "*.ogg",
           "CC-BY-SA-3.0", "SuperTuxKart effects: engines, crashes, explosions, items, crowd (a spoken "
           "announcement and music jingles left out)",
           exclude=("**/sara_airport_pa.ogg", "**/*fanfare*.ogg", "**/race_finish*.ogg", "**/track_intro.ogg",
                    "**/gnu_flute.ogg")),
    Source("freeorion-data", "effects", Path("/usr/share/games/freeorion/default/data/sound"), "**/*.*",
           "CC-BY-SA-3.0", "FreeOrion effects: combat, weapons, interface"),
    Source("scorched3d-data", "effects", Path("/usr/share/games/scorched3d/data"), "**/wav/**/*.wav",
           "GPL-2+", "Scorched 3D effects: explosions, shots, shields, ambience"),
    Source("0ad-data", "effects", Path("/usr/share/games/0ad/mods/public"), "audio/**/*.*",
           "CC-BY-SA-3.0", "0 A.D. foley: weapons, impacts, footsteps, animals, crafts, fire, weather, "
           "water (Ogg in a zip; unit voices, interface and music left out)",
           exclude=("audio/voice/**/*", "audio/interface/**/*", "audio/music/**/*"), archive=True),
    Source("redeclipse-data", "effects", Path("/usr/share/games/redeclipse/data/sounds"), "**/*.*",
           "CC-BY-SA-3.0", "Red Eclipse effects: weapons, ambiences, machines (voices, announcer, "
           "player sounds and music left out)",
           exclude=("**/sounds/voice/**/*", "**/sounds/announcer/**/*", "**/sounds/player/**/*",
                    "**/sounds/music/**/*")),
    Source("widelands-data", "effects", Path("/usr/share/games/widelands/data/sound"), "**/*.*",
           "GPL-2+", "Widelands effects: animals, birds, crickets, sawing, smithing, farming, taverns"),
    Source("flightgear-data-base", "effects", Path("/usr/share/games/flightgear"), "**/*.wav",
           "GPL-2+", "FlightGear effects: engines, propellers, rotors, jets, rain, thunder, doors, tyres "
           "(spoken callouts left out)",
           exclude=("**/mk-viii/**/*", "**/tcas/**/*", "**/checklist*.wav")),
    Source("warmux-data", "effects", Path("/usr/share/games/warmux/sound/default"), "**/*.*",
           "GPL-2+", "Warmux effects: weapons, explosions, impacts (character voices left out)",
           exclude=("**/voices/**/*",)),
    Source("lincity-ng-data", "effects", Path("/usr/share/games/lincity-ng/sounds"), "*.wav",
           "GPL-2+", "LinCity-NG city effects: industry, traffic, farms, crowds"),
    Source("extremetuxracer-data", "effects", Path("/usr/share/games/etr/sounds"), "*.*",
           "GPL-2+", "Extreme Tux Racer effects: snow, ice, wind, impacts"),
    Source("naev-data", "effects", Path("/usr/share/naev/dat/snd/sounds"), "**/*.*",
           "CC-BY-SA-3.0", "Naev effects: engines, weapons, explosions, machines"),
)
PACKAGES: tuple[str, ...] = tuple(sorted({s.package for s in SOURCES if s.in_ci}))
TRAINING_PACKAGES: tuple[str, ...] = tuple(sorted({s.package for s in SOURCES}))
_AUDIO = (".wav", ".ogg", ".flac", ".g722")


@dataclass(frozen=True)
class Recording:
    """One recording of the training bank: a file, or a member of a zip archive."""

    path: Path
    member: str | None
    package: str
    group: str

    @property
    def source(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


def find_recordings(kind: str) -> list[Path]:
    """Every installed recording of ``kind`` in the test corpus, sorted; [] when none is installed."""
    _check_kind(kind)
    found: list[Path] = []
    for source in SOURCES:
        if source.kind == kind and source.in_ci and source.folder.is_dir():
            found.extend(sorted(source.folder.glob(source.pattern)))
    return found


def iter_recordings(kind: str) -> Iterator[Recording]:
    """Every installed recording of ``kind`` for the training bank (all sources), in a fixed order."""
    _check_kind(kind)
    seen: set[str] = set()
    for source in SOURCES:
        if source.kind != kind or (source.in_ci and _has_bank_variant(source)):
            continue
        for rec in _source_recordings(source):
            if rec.source not in seen:
                seen.add(rec.source)
                yield rec


def _has_bank_variant(source: Source) -> bool:
    # The 8 kHz French WAVs stay in the test corpus; the bank reads the 16 kHz G.722 of the same prompts.
    return source.package == "asterisk-core-sounds-fr-wav"


def _source_recordings(source: Source) -> Iterator[Recording]:
    for path in sorted(_package_files(source.package)):
        if not str(path).startswith(str(source.folder) + "/"):
            continue
        if source.archive:
            if path.suffix.lower() in (".pk3", ".zip"):
                yield from _archive_recordings(source, path)
            continue
        if path.suffix.lower() in _AUDIO and _selects(source, str(path)):
            yield Recording(path, None, source.package, _group(source, path))


def _archive_recordings(source: Source, path: Path) -> Iterator[Recording]:
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in _AUDIO)
    for name in names:
        if _selects(source, name):
            yield Recording(path, name, source.package, f"{source.package}:{name}")


def _selects(source: Source, path: str) -> bool:
    """Whether ``source`` reads ``path``: an installed file's path, or for an ``archive`` source a
    member's name. The pattern is matched under ``source.folder`` (on the whole member name in an
    archive), the ``exclude`` globs on the whole path or name."""
    if source.archive:
        rel = path
    elif path.startswith(str(source.folder) + "/"):
        rel = path[len(str(source.folder)) + 1:]
    else:
        return False
    return _match(rel, source.pattern) and not any(_match(path, e) for e in source.exclude)


def _match(path: str, pattern: str) -> bool:
    """Path glob: ``*`` and ``?`` stay within one folder, ``**/`` spans any number of folders (or none)."""
    return _glob_regex(pattern).fullmatch(path) is not None


@lru_cache(maxsize=None)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*/|\*|\?|\[[^]]*\])", pattern):
        if part == "**/":
            out += "(?:.*/)?"
        elif part == "*":
            out += "[^/]*"
        elif part == "?":
            out += "[^/]"
        elif part.startswith("[") and part.endswith("]") and len(part) > 2:
            out += part
        else:
            out += re.escape(part)
    return re.compile(out)


def _group(source: Source, path: Path) -> str:
    if source.group == "package":
        return source.package
    if source.group == "parent":
        return f"{source.package}:{_language(path.parent.name)}"
    if source.group == "lang_dir":
        return f"{source.package}:{_language(path.relative_to(source.folder).parts[0])}"
    if source.group == "folder":  # a speaker's folder, by its whole name (``Default_es`` is not ``Default``)
        return f"{source.package}:{path.parent.name}"
    if source.group == "voice":  # a voice's lines by its name (``archer_ack3.wav``: ``archer``), in any folder:
        # factions reuse a voice under other units (the Norse spearman speaks as ``swordman``)
        return f"{source.package}:{re.sub(r'_(?:ack|select)[0-9]+$', '', path.stem)}"
    if source.group == "lang_suffix":
        m = re.search(r"_desc(?:_([A-Za-z@_]+))?\.ogg$", path.name)
        return f"{source.package}:{(m.group(1) if m and m.group(1) else 'en')}"
    return f"{source.package}:{path.relative_to(source.folder)}"


def _language(name: str) -> str:
    """``sr@latin`` and ``en_GB`` are read by the speakers of ``sr`` and ``en``: one group."""
    return name.split("@")[0].split("_")[0]


@lru_cache(maxsize=None)
def _package_files(package: str) -> tuple[Path, ...]:
    """The files ``dpkg -L`` lists for an installed package; () when it is not installed."""
    done = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return ()
    return tuple(Path(line) for line in done.stdout.splitlines() if line.startswith("/"))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown recording kind {kind!r}; known: {KINDS}")
