"""The source bank: every training recording decoded once to 48 kHz mono int16, memory-mapped.

The on-the-fly mixer (:mod:`.mixer`) draws thousands of excerpts a minute; decoding Ogg,
G.722 and zip members each time would cost more than the model. :func:`build_bank`
decodes the recordings that :mod:`filmrestore.corpus` lists into one raw file per kind::

    BANK/speech.i16   BANK/music.i16   BANK/effects.i16   (int16, 48 kHz mono, clips end to end)
    BANK/bank.json    (one entry per clip: source, package, group, split, offset, n_frames)

Each clip is peak-normalised to -1 dBFS before quantisation (the mixer sets every level
anyway); speech clips are cleaned as production dialogue is (:func:`clean_speech`: high-passed
at 70 Hz, mains hum notched) and trimmed of leading and trailing silence.

:func:`export_compact` writes a *compact* bank that travels to a lent GPU machine (at most
64 MiB with the code): a seeded subset of the ``train`` and ``valid`` clips, one Ogg Opus
file per kind (``<kind>.ogg``, ~32 kbit/s) and the same ``bank.json`` index with
``"codec": "opus"``; :class:`SourceBank` decodes it into memory when it opens it.

**Splits are by group, never by clip**: a group is a speaker or language of a speech
package, a music track, an effect file (see :attr:`filmrestore.corpus.Source.group`),
and it falls into ``test``, ``valid`` or ``train`` by a BLAKE2b hash of its name alone,
so every machine that builds a bank puts the same speakers, tracks and files in the
held-out splits, whatever else is installed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soundfile as sf

from filmrestore import corpus
from filmrestore.errors import AudioFormatError, ConfigError

SAMPLE_RATE_HZ = 48000
BANK_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Share of groups in each held-out split (the rest is ``train``).
HELD_OUT_SHARE = {"test": 0.15, "valid": 0.07}
_PEAK = 0.891  # -1 dBFS
#: Production dialogue is high-passed (80-100 Hz is usual); under this a speech recording holds its
#: own rumble, handling noise and DC, which would otherwise be labelled dialogue.
SPEECH_HIGHPASS_HZ = 70.0
_MIN_FRAMES = {"speech": SAMPLE_RATE_HZ // 4, "music": 8 * SAMPLE_RATE_HZ, "effects": SAMPLE_RATE_HZ // 20}
_MAX_S = {"speech": 30.0, "music": 600.0, "effects": 60.0}
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Clip:
    """One decoded recording in a bank file."""

    source: str  # file path, or ``archive.pk3:member``
    package: str
    group: str
    split: str
    offset: int  # first frame in the kind's .i16 file
    n_frames: int


def split_of(group: str) -> str:
    """``"test"``, ``"valid"`` or ``"train"`` for a group name (a hash of the name only)."""
    h = int.from_bytes(hashlib.blake2b(group.encode(), digest_size=8).digest(), "big") / 2.0 ** 64
    if h < HELD_OUT_SHARE["test"]:
        return "test"
    return "valid" if h < HELD_OUT_SHARE["test"] + HELD_OUT_SHARE["valid"] else "train"


class SourceBank:
    """A built bank, memory-mapped: ``bank.clips(kind, split)`` and ``bank.audio(clip)``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index = self.root / "bank.json"
        try:
            doc = json.loads(index.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{self.root}: no source bank here (build one with `filmrestore make-bank`)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{index}: unreadable bank index ({exc})") from exc
        if doc.get("version") != BANK_VERSION:
            raise ConfigError(f"{index}: bank version {doc.get('version')!r}; this version reads {BANK_VERSION}")
        self.doc = doc
        self._clips = {kind: [Clip(**c) for c in doc["clips"].get(kind, [])] for kind in corpus.KINDS}
        load = self._decode if doc.get("codec") == "opus" else self._map
        self._data = {kind: load(kind) for kind in corpus.KINDS if self._clips[kind]}

    def _map(self, kind: str) -> np.ndarray:
        path = self.root / f"{kind}.i16"
        n = sum(c.n_frames for c in self._clips[kind])
        if not path.is_file() or path.stat().st_size != 2 * n:
            raise ConfigError(f"{path}: missing or not {2 * n} bytes as bank.json says; rebuild the bank")
        return np.memmap(path, dtype=np.int16, mode="r")

    def _decode(self, kind: str) -> np.ndarray:
        path = self.root / f"{kind}.ogg"
        n = sum(c.n_frames for c in self._clips[kind])
        try:
            x, _ = sf.read(str(path), dtype="int16")
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise ConfigError(f"{path}: cannot decode the compact bank ({exc})") from exc
        if x.shape[0] != n:
            raise ConfigError(f"{path}: {x.shape[0]} frames, bank.json says {n}; export the compact bank again")
        return x

    def clips(self, kind: str, split: str) -> list[Clip]:
        """Clips of ``kind`` ("speech", "music", "effects") in ``split``."""
        return [c for c in self._clips[kind] if c.split == split]

    def audio(self, kind: str, clip: Clip, start: int = 0, n_frames: int | None = None) -> np.ndarray:
        """Frames ``[start, start + n_frames)`` of a clip (clamped to it). [shape=(n,)] float32."""
        end = clip.n_frames if n_frames is None else min(clip.n_frames, start + n_frames)
        raw = self._data[kind][clip.offset + start: clip.offset + max(start, end)]
        return raw.astype(np.float32) * np.float32(1.0 / 32768.0)

    def hours(self, kind: str, split: str | None = None) -> float:
        clips = self._clips[kind] if split is None else self.clips(kind, split)
        return sum(c.n_frames for c in clips) / SAMPLE_RATE_HZ / 3600.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Hours per kind and split, and group counts: what `separation/DATA.md` reports."""
        out: dict[str, dict[str, float]] = {}
        for kind in corpus.KINDS:
            for split in SPLITS:
                clips = self.clips(kind, split)
                out[f"{kind}/{split}"] = {"hours": round(self.hours(kind, split), 3), "clips": len(clips),
                                          "groups": len({c.group for c in clips})}
        return out


def build_bank(out_dir: str | Path, kinds: tuple[str, ...] = corpus.KINDS, workers: int = 2,
               on_progress: ProgressCallback | None = None,
               recordings: dict[str, list[corpus.Recording]] | None = None) -> SourceBank:
    """Decode every installed recording of ``kinds`` (or the given ``recordings`` per kind)
    into ``out_dir`` (see the module docstring).

    Raises :class:`ConfigError` when no recording of a kind is installed (run
    ``.ci/setup-training`` first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips: dict[str, list[dict]] = {}
    for kind in kinds:
        recordings_of_kind = list(recordings[kind] if recordings is not None else corpus.iter_recordings(kind))
        if not recordings_of_kind:
            raise ConfigError(f"no {kind} recordings installed; run .ci/setup-training to install the packages")
        clips[kind] = _decode_kind(out_dir, kind, recordings_of_kind, workers, on_progress)
    doc = {"version": BANK_VERSION, "sample_rate_hz": SAMPLE_RATE_HZ, "held_out_share": HELD_OUT_SHARE,
           "speech_highpass_hz": SPEECH_HIGHPASS_HZ, "speech_hum_notched": True,  # clean_speech (older banks: neither)
           "packages": _packages(clips),
           "clips": clips}
    tmp = out_dir / ".bank.json.part"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out_dir / "bank.json")
    return SourceBank(out_dir)


def export_compact(bank: SourceBank, out_dir: str | Path, hours: dict[str, float] | None = None,
                   valid_hours: float = 0.1, seed: int = 0, compression_level: float = 0.9) -> SourceBank:
    """Write a compact copy of ``bank`` (see the module docstring): per kind, clips of the
    ``train`` split drawn at random (``seed``) up to ``hours[kind]`` and of ``valid`` up to
    ``valid_hours``, encoded as Ogg Opus (``compression_level`` 0.9 is about 32 kbit/s).
    The ``test`` split is never exported."""
    hours = hours or {"speech": 1.5, "music": 1.6, "effects": 0.6}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips: dict[str, list[dict]] = {}
    for kind in corpus.KINDS:
        chosen = [c for split, budget_h in (("train", hours[kind]), ("valid", valid_hours))
                  for c in _draw(bank.clips(kind, split), budget_h, rng)]
        part = out_dir / f".{kind}.ogg.part"
        with sf.SoundFile(str(part), "w", SAMPLE_RATE_HZ, 1, format="OGG", subtype="OPUS",
                          compression_level=compression_level) as f:
            offset, entries = 0, []
            for c in chosen:
                f.write(bank.audio(kind, c))
                entries.append({**asdict(c), "offset": offset})
                offset += c.n_frames
        os.replace(part, out_dir / f"{kind}.ogg")
        clips[kind] = entries
    doc = {**bank.doc, "codec": "opus", "compact_of": str(bank.root), "clips": clips}
    tmp = out_dir / ".bank.json.part"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out_dir / "bank.json")
    return SourceBank(out_dir)


def _draw(clips: list[Clip], budget_h: float, rng: np.random.Generator) -> list[Clip]:
    """Clips in random order until ``budget_h`` hours are reached (at least one)."""
    out, total = [], 0
    for k in rng.permutation(len(clips)):
        if out and total >= budget_h * 3600 * SAMPLE_RATE_HZ:
            break
        out.append(clips[int(k)])
        total += clips[int(k)].n_frames
    return out


def _decode_kind(out_dir: Path, kind: str, recordings: list[corpus.Recording], workers: int,
                 on_progress: ProgressCallback | None) -> list[dict]:
    part = out_dir / f".{kind}.i16.part"
    entries: list[dict] = []
    offset = 0
    with open(part, "wb") as f, ThreadPoolExecutor(workers) as pool:
        for i, (rec, x) in enumerate(zip(recordings, pool.map(lambda r: _prepare(kind, r), recordings))):
            if on_progress is not None:
                on_progress(i + 1, len(recordings))
            if x is None:
                continue
            f.write(x.tobytes())
            entries.append(asdict(Clip(rec.source, rec.package, rec.group, split_of(rec.group), offset, x.size)))
            offset += x.size
    os.replace(part, out_dir / f"{kind}.i16")
    return entries


def _prepare(kind: str, rec: corpus.Recording) -> np.ndarray | None:
    """Decoded, trimmed, peak-normalised int16 clip, or None when unusable (too short, silent, broken)."""
    try:
        x = decode(rec)
    except AudioFormatError:
        return None
    x = x[: int(_MAX_S[kind] * SAMPLE_RATE_HZ)]
    if kind == "speech":
        x = _trim(clean_speech(x))
    peak = float(np.abs(x).max(initial=0.0))
    if x.size < _MIN_FRAMES[kind] or peak < 1e-4:
        return None
    return np.round(x * (_PEAK / peak) * 32767.0).astype(np.int16)


def clean_speech(x: np.ndarray) -> np.ndarray:
    """A speech recording [shape=(n,)] as a dialogue stem carries it: high-passed at
    :data:`SPEECH_HIGHPASS_HZ` (4th-order Butterworth, zero phase) and the mains hum that
    :func:`~filmrestore.restoration.hum.detect_hum` finds notched at the harmonics it measured (the
    restore stage's notches, run forwards and backwards).

    The volunteers' recordings of several speech packages hold up to a fifth of their energy
    under 40 Hz, and a few a mains hum 20-2,500 times the spectrum around it (``tuxpaint``,
    ``klettres``, ``ktuberling`` groups). Left in, both are labelled dialogue, where the mixer's
    legacy channel puts the hum it adds (and the rumble-like background layers) in effects: the
    model is taught both answers. 300 steps on the cleaned bank gained 0.14 dB SI-SDRi on its valid
    items (0.08 on the old bank's), where runs on the old bank did not move.
    """
    from filmrestore.restoration.hum import detect_hum, notch_sos

    if x.size < SAMPLE_RATE_HZ // 20:  # too short for the filter's edges; dropped as too short anyway
        return x
    sos = scipy.signal.butter(4, SPEECH_HIGHPASS_HZ, "high", fs=SAMPLE_RATE_HZ, output="sos")
    x = scipy.signal.sosfiltfilt(sos, x.astype(np.float64)).astype(np.float32)
    hum = detect_hum(x[None], SAMPLE_RATE_HZ)
    if hum.fundamental_hz is not None:
        # Forwards and backwards over the whole clip: no notch rings in at its start (a 1.5 Hz notch
        # takes about 0.2 s to settle, a tenth of a short utterance).
        x = scipy.signal.sosfiltfilt(notch_sos(hum.harmonics_hz, SAMPLE_RATE_HZ), x.astype(np.float64),
                                     padlen=min(x.size - 1, SAMPLE_RATE_HZ // 2)).astype(np.float32)
    return x


def decode(rec: corpus.Recording) -> np.ndarray:
    """A recording as 48 kHz mono float32 [shape=(n,)]. libsndfile for WAV/Ogg/FLAC (also from
    zip archives), ffmpeg for the rest (G.722). Raises :class:`AudioFormatError`."""
    try:
        if rec.member is not None:
            with zipfile.ZipFile(rec.path) as z:
                data = io.BytesIO(z.read(rec.member))
            x, rate_hz = sf.read(data, dtype="float32", always_2d=True)
        elif rec.path.suffix.lower() in (".wav", ".ogg", ".flac"):
            x, rate_hz = sf.read(str(rec.path), dtype="float32", always_2d=True)
        else:
            return _ffmpeg_decode(rec.path)
    except (sf.LibsndfileError, RuntimeError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise AudioFormatError(rec.path, f"cannot decode {rec.source} ({exc})") from exc
    x = x.mean(1)
    if rate_hz != SAMPLE_RATE_HZ:
        g = int(np.gcd(SAMPLE_RATE_HZ, rate_hz))
        x = scipy.signal.resample_poly(x, SAMPLE_RATE_HZ // g, rate_hz // g)
    return x.astype(np.float32)


def _ffmpeg_decode(path: Path) -> np.ndarray:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(SAMPLE_RATE_HZ),
           "-f", "f32le", "-"]
    done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0:
        raise AudioFormatError(path, f"ffmpeg cannot decode it: {done.stderr.decode(errors='replace').strip()[:200]}")
    return np.frombuffer(done.stdout, np.float32).copy()


def _trim(x: np.ndarray, threshold_db: float = -45.0) -> np.ndarray:
    """Leading and trailing samples below ``threshold_db`` re the peak dropped (10 ms kept)."""
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max(initial=0.0) * 10.0 ** (threshold_db / 20.0))
    if not loud.size:
        return x[:0]
    pad = SAMPLE_RATE_HZ // 100
    return x[max(0, loud[0] - pad): loud[-1] + 1 + pad]


def _packages(clips: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Package, kind, licence, installed version and hours of every source the bank holds."""
    out = []
    for source in corpus.SOURCES:
        frames = sum(c["n_frames"] for c in clips.get(source.kind, []) if c["package"] == source.package)
        if frames and not any(p["package"] == source.package and p["kind"] == source.kind for p in out):
            out.append({"package": source.package, "kind": source.kind, "licence": source.licence,
                        "version": _version(source.package), "hours": round(frames / SAMPLE_RATE_HZ / 3600.0, 3)})
    return out


def _version(package: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or None
