"""Divide-and-Remaster (DnR) style training data: folders of stems, a remixing torch Dataset,
and :func:`make_dataset`, which builds such folders from the project's synthesis and from
real recordings that Debian packages ship (:mod:`filmrestore.corpus`).

Layout (one folder per item, every file 48 kHz, same length)::

    ROOT/[train|test]/item_00000/mix.wav      (optional: the sum of the stems when absent)
                                 speech.wav   (or dialogue.wav)
                                 music.wav
                                 sfx.wav      (or effects.wav)

:func:`make_dataset` writes ``ROOT/train`` and ``ROOT/test`` from *disjoint source
files*: each corpus file belongs to one split by a hash of its path (independent of
the seed), and synthetic stems are drawn from seed streams that differ per split.
See ``separation/DATA.md`` for the packages, licences and the split rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import torch

from filmrestore import corpus, synth
from filmrestore.audio import read_info, write_audio
from filmrestore.errors import AudioFormatError, ConfigError
from filmrestore.separation.base import STEMS

SAMPLE_RATE_HZ = 48000
#: File names accepted for each stem, first one preferred (DnR names first).
STEM_FILES: dict[str, tuple[str, ...]] = {
    "dialogue": ("speech.wav", "dialogue.wav"),
    "music": ("music.wav",),
    "effects": ("sfx.wav", "effects.wav"),
}
MIX_FILES: tuple[str, ...] = ("mix.wav", "mixture.wav")
SPLITS: tuple[str, str] = ("train", "test")
#: Stem levels in dB relative to the dialogue's RMS over its active samples (DnR keeps
#: dialogue on top; music and effects vary over a range below and around it).
MUSIC_DB_RANGE = (-9.0, 1.0)
EFFECTS_DB_RANGE = (-9.0, 1.0)
DIALOGUE_RMS_DB = -22.0

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Item:
    """One DnR item folder: its stem files, optional mix file, length and channel count."""

    folder: Path
    stems: dict[str, Path]
    mix: Path | None
    n_frames: int
    n_channels: int
    sample_rate_hz: int = SAMPLE_RATE_HZ


def resolve_split(root: str | Path, split: str) -> Path:
    """``root/split`` when that folder exists (a :func:`make_dataset` tree), else ``root``."""
    root = Path(root)
    return root / split if (root / split).is_dir() else root


def read_item(folder: Path, sample_rate_hz: int | None = SAMPLE_RATE_HZ) -> Item:
    """Check one item folder and describe it: its files share one length, channel count and sample
    rate, ``sample_rate_hz`` unless that is None (any rate: evaluation resamples, training does not).
    Raises :class:`AudioFormatError` naming the file."""
    stems: dict[str, Path] = {}
    for stem, names in STEM_FILES.items():
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            raise AudioFormatError(folder, f"item has no {stem} stem (expected one of {', '.join(names)})")
        stems[stem] = found[0]
    mixes = [folder / n for n in MIX_FILES if (folder / n).is_file()]
    infos = [read_info(p) for p in [*stems.values(), *mixes[:1]]]
    for info in infos:
        if sample_rate_hz is not None and info.sample_rate_hz != sample_rate_hz:
            raise AudioFormatError(info.path, f"sample rate is {info.sample_rate_hz} Hz; need {sample_rate_hz}")
        if info.n_frames != infos[0].n_frames or info.n_channels != infos[0].n_channels:
            raise AudioFormatError(info.path, f"{info.n_channels} ch x {info.n_frames} frames differs from "
                                   f"{infos[0].path.name} ({infos[0].n_channels} ch x {infos[0].n_frames})")
        if info.sample_rate_hz != infos[0].sample_rate_hz:
            raise AudioFormatError(info.path, f"sample rate is {info.sample_rate_hz} Hz; "
                                   f"{infos[0].path.name} is at {infos[0].sample_rate_hz} Hz")
    return Item(folder, stems, mixes[0] if mixes else None, infos[0].n_frames, infos[0].n_channels,
                infos[0].sample_rate_hz)


def list_items(root: str | Path, sample_rate_hz: int | None = SAMPLE_RATE_HZ) -> list[Item]:
    """Every item folder directly under ``root`` (sorted), at ``sample_rate_hz`` (None: any rate,
    each item's files at one). Raises :class:`ConfigError` when none."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: dataset folder does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and any((p / n).is_file() for n in STEM_FILES["music"]))
    if not folders:
        raise ConfigError(f"{root}: no item folders holding {'/'.join(STEM_FILES['dialogue'])}, music.wav, "
                          f"{'/'.join(STEM_FILES['effects'])}")
    return [read_item(f, sample_rate_hz) for f in folders]


def read_segment(path: Path, start_frame: int, n_frames: int, n_channels: int) -> np.ndarray:
    """``n_frames`` from ``start_frame``, zero-padded past the end, down/up-mixed to
    ``n_channels``. [shape=(n_channels, n_frames)] float32."""
    with sf.SoundFile(str(path)) as f:
        f.seek(max(0, start_frame))
        data = f.read(n_frames, dtype="float32", always_2d=True).T
    if data.shape[0] != n_channels:
        data = np.repeat(data.mean(0, keepdims=True), n_channels, axis=0)
    out = np.zeros((n_channels, n_frames), np.float32)
    out[:, : data.shape[1]] = data
    return out


class EpochDataset(torch.utils.data.Dataset):
    """``n_examples`` examples per epoch; example ``i`` of epoch ``e`` draws from the generator
    seeded with ``(seed, e, i)``, so it is reproducible. Call :meth:`set_epoch` for new draws."""

    def __init__(self, n_examples: int, seed: int) -> None:
        self.n_examples, self.seed, self.epoch = n_examples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_examples

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class RemixDataset(EpochDataset):
    """Training examples from DnR item folders, remixed on the fly.

    Each example is ``(mix [shape=(n_channels, segment_frames)], stems [shape=(3, n_channels,
    segment_frames)])`` float32 tensors, stems in :data:`STEMS` order, ``mix == stems.sum(0)``.
    With ``remix`` (training), each stem is taken from a random offset (a random *shift*
    relative to the others), from another random item with probability ``p_cross``
    (*cross-item mixing*), scaled by a random gain in ``gain_db_range``, with a random
    polarity; the mix is their sum. Without ``remix`` (validation), example ``i`` is item
    ``i % n_items`` at a seeded random offset, stems as stored. Call :meth:`set_epoch`
    so each epoch draws new remixes; example ``i`` of an epoch is reproducible.
    """

    def __init__(self, root: str | Path, segment_s: float = 3.0, n_examples: int | None = None,
                 remix: bool = True, p_cross: float = 0.5, gain_db_range: tuple[float, float] = (-6.0, 6.0),
                 n_channels: int = 1, seed: int = 0) -> None:
        self.items = list_items(root)
        super().__init__(n_examples or len(self.items), seed)
        self.segment_frames = int(round(segment_s * SAMPLE_RATE_HZ))
        self.remix, self.p_cross, self.gain_db_range = remix, p_cross, gain_db_range
        self.n_channels = n_channels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        home = index % len(self.items)
        if self.remix:
            stems = np.stack([self._remixed_stem(stem, home, rng) for stem in STEMS])
        else:
            item = self.items[home]
            start = self._random_start(item, rng)
            stems = np.stack([read_segment(item.stems[s], start, self.segment_frames, self.n_channels)
                              for s in STEMS])
        return torch.from_numpy(stems.sum(0)), torch.from_numpy(stems)

    def _random_start(self, item: Item, rng: np.random.Generator) -> int:
        return int(rng.integers(0, max(1, item.n_frames - self.segment_frames + 1)))

    def _remixed_stem(self, stem: str, home: int, rng: np.random.Generator) -> np.ndarray:
        source = int(rng.integers(len(self.items))) if rng.random() < self.p_cross else home
        item = self.items[source]
        x = read_segment(item.stems[stem], self._random_start(item, rng), self.segment_frames, self.n_channels)
        gain = 10.0 ** (rng.uniform(*self.gain_db_range) / 20.0) * rng.choice([-1.0, 1.0])
        return (x * gain).astype(np.float32)


# ---------------------------------------------------------------- building a dataset


def split_files(paths: list[Path], test_fraction: float) -> dict[str, list[Path]]:
    """Partition ``paths`` into ``{"train": [...], "test": [...]}`` by :func:`split_of`'s rule."""
    ranked = sorted(paths, key=_path_hash)
    n_test = int(np.ceil(test_fraction * len(paths))) if paths else 0
    return {"test": sorted(ranked[:n_test]), "train": sorted(ranked[n_test:])}


def _path_hash(path: Path) -> str:
    return hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()


def load_recording(path: Path, start_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
    """Decode (WAV, Ogg Vorbis) a mono downmix at 48 kHz. [shape=(n_frames,)] float32.

    Only ``[start_s, start_s + duration_s)`` of the file is decoded.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            rate_hz = f.samplerate
            f.seek(min(int(start_s * rate_hz), max(0, f.frames - 1)))
            n = -1 if duration_s is None else int(np.ceil(duration_s * rate_hz))
            data = f.read(n, dtype="float32", always_2d=True).mean(1)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFormatError(path, f"cannot decode recording ({exc})") from exc
    if rate_hz != SAMPLE_RATE_HZ:
        g = int(np.gcd(SAMPLE_RATE_HZ, rate_hz))
        data = scipy.signal.resample_poly(data, SAMPLE_RATE_HZ // g, rate_hz // g).astype(np.float32)
    return data


def _duration_s(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def real_speech(files: list[Path], n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Random recorded prompts/lines one after another with 0.2-1.0 s pauses. [shape=(n_frames,)]"""
    out = np.zeros(n_frames, np.float32)
    used: list[str] = []
    cursor = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE_HZ)
    while cursor < n_frames:
        path = files[int(rng.integers(len(files)))]
        x = _trim_silence(load_recording(path))
        _add(out, cursor, x)
        used.append(str(path))
        cursor += x.size + int(rng.uniform(0.2, 1.0) * SAMPLE_RATE_HZ)
    return out, used


def real_music(files: list[Path], n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A random excerpt of a random track, playing for at least 80 % of its 100 ms
    blocks (tracks end in long silences); the last of 10 draws otherwise. [shape=(n_frames,)]"""
    duration_s = n_frames / SAMPLE_RATE_HZ
    for _ in range(10):
        path = files[int(rng.integers(len(files)))]
        start_s = rng.uniform(0.0, max(0.0, _duration_s(path) - duration_s))
        x = load_recording(path, start_s, duration_s)
        if _active_share(x) >= 0.8:
            break
    out = np.zeros(n_frames, np.float32)
    _add(out, 0, x)
    return out, [str(path)]


def real_effects(files: list[Path], n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Random recorded effects every 0.3-2.0 s (overlapping when long). [shape=(n_frames,)]"""
    out = np.zeros(n_frames, np.float32)
    used: list[str] = []
    cursor = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE_HZ)
    while cursor < n_frames:
        path = files[int(rng.integers(len(files)))]
        _add(out, cursor, _unit_rms(load_recording(path)) * rng.uniform(0.3, 1.0))
        used.append(str(path))
        cursor += int(rng.uniform(0.3, 2.0) * SAMPLE_RATE_HZ)
    return out, used


def _add(out: np.ndarray, start: int, x: np.ndarray) -> None:
    """Add ``x`` into ``out`` from frame ``start`` (which may be negative), clipped at both ends."""
    lo, hi = max(0, start), min(out.size, start + x.size)
    if hi > lo:
        out[lo:hi] += x[lo - start: hi - start]


def _active_share(x: np.ndarray, threshold_db: float = -50.0) -> float:
    """Share of 100 ms blocks whose RMS is above ``threshold_db`` dBFS."""
    block = SAMPLE_RATE_HZ // 10
    n = x.size // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(np.square(x[: n * block].reshape(n, block), dtype=np.float64), axis=1))
    return float(np.mean(rms > 10.0 ** (threshold_db / 20.0)))


def _trim_silence(x: np.ndarray, threshold_db: float = -50.0) -> np.ndarray:
    """Drop leading/trailing samples below ``threshold_db`` re the peak."""
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max(initial=0.0) * 10.0 ** (threshold_db / 20.0))
    return x[loud[0]: loud[-1] + 1] if loud.size else x


def _unit_rms(x: np.ndarray) -> np.ndarray:
    """Scaled to RMS 1 over the samples above -60 dB re the peak (silent input unchanged)."""
    active = np.abs(x) > np.abs(x).max(initial=0.0) * 1e-3
    if not active.any():
        return x
    return (x / np.sqrt(np.mean(np.square(x[active], dtype=np.float64)))).astype(np.float32)


_SYNTH = {
    "dialogue": synth.synth_dialogue,
    "music": synth.synth_music,
    "effects": synth.synth_effects,
}
_REAL = {"dialogue": real_speech, "music": real_music, "effects": real_effects}
_CORPUS_KIND = {"dialogue": "speech", "music": "music", "effects": "effects"}


def make_item(n_frames: int, files: dict[str, list[Path]], real_share: float,
              rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """One item's stems ``{stem: [shape=(1, n_frames)]}`` and their provenance.

    Each stem is real (from ``files[stem]``) with probability ``real_share`` when files
    exist, else synthetic. Levels: dialogue at :data:`DIALOGUE_RMS_DB` over its active
    samples, music and effects at random offsets from it; the sum peaks below 0.99.
    """
    stems: dict[str, np.ndarray] = {}
    sources: dict[str, list[str]] = {}
    for stem in STEMS:
        if files.get(stem) and rng.random() < real_share:
            x, sources[stem] = _REAL[stem](files[stem], n_frames, rng)
        else:
            x = _SYNTH[stem](n_frames / SAMPLE_RATE_HZ, SAMPLE_RATE_HZ, rng)[0, :n_frames]
            sources[stem] = [f"synth.{_SYNTH[stem].__name__}"]
        offset_db = {"dialogue": 0.0, "music": rng.uniform(*MUSIC_DB_RANGE),
                     "effects": rng.uniform(*EFFECTS_DB_RANGE)}[stem]
        stems[stem] = _unit_rms(x) * np.float32(10.0 ** ((DIALOGUE_RMS_DB + offset_db) / 20.0))
    peak = float(np.abs(sum(stems.values())).max())
    scale = min(1.0, 0.99 / peak) if peak > 0 else 1.0
    return {s: (x * scale).astype(np.float32)[None] for s, x in stems.items()}, sources


def corpus_files(test_fraction: float) -> dict[str, dict[str, list[Path]]]:
    """``{split: {stem: files}}`` of the installed corpus recordings, split by :func:`split_files`."""
    out: dict[str, dict[str, list[Path]]] = {s: {} for s in SPLITS}
    for stem, kind in _CORPUS_KIND.items():
        parts = split_files(corpus.find_recordings(kind), test_fraction)
        for split in SPLITS:
            out[split][stem] = parts[split]
    return out


def make_dataset(out_dir: str | Path, n_items: int = 50, item_s: float = 10.0, seed: int = 0,
                 test_fraction: float = 0.2, real_share: float = 0.7,
                 on_progress: ProgressCallback | None = None) -> dict[str, list[Path]]:
    """Build ``out_dir/train`` and ``out_dir/test`` DnR folders (mono, 48 kHz float32).

    ``round(n_items * test_fraction)`` items (at least 1) go to ``test``, built only
    from the corpus files of the test split; the rest to ``train``. Returns
    ``{split: [item folders]}`` and writes ``out_dir/dataset.json`` (parameters, file
    split, and every item's source files).
    """
    if n_items < 2 or item_s <= 0 or not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"need n_items >= 2, item_s > 0 and 0 < test_fraction < 1; got "
                          f"{n_items}, {item_s}, {test_fraction}")
    out_dir = Path(out_dir)
    files = corpus_files(test_fraction)
    n_test = max(1, int(round(n_items * test_fraction)))
    counts = {"train": n_items - n_test, "test": n_test}
    n_frames = int(round(item_s * SAMPLE_RATE_HZ))
    folders: dict[str, list[Path]] = {s: [] for s in SPLITS}
    provenance: dict[str, dict[str, list[str]]] = {}
    done = 0
    for split_no, split in enumerate(SPLITS):
        for i in range(counts[split]):
            rng = np.random.default_rng([seed, split_no, i])
            stems, sources = make_item(n_frames, files[split], real_share, rng)
            folder = out_dir / split / f"item_{i:05d}"
            _write_item(folder, stems)
            folders[split].append(folder)
            provenance[f"{split}/{folder.name}"] = sources
            done += 1
            if on_progress is not None:
                on_progress(done, n_items)
    _write_manifest(out_dir, dict(n_items=n_items, item_s=item_s, seed=seed, test_fraction=test_fraction,
                                  real_share=real_share), files, provenance)
    return folders


def _write_item(folder: Path, stems: dict[str, np.ndarray]) -> None:
    names = {"dialogue": "speech.wav", "music": "music.wav", "effects": "sfx.wav"}
    for stem, x in stems.items():
        write_audio(folder / names[stem], x, SAMPLE_RATE_HZ)
    write_audio(folder / "mix.wav", sum(stems.values()).astype(np.float32), SAMPLE_RATE_HZ)


def _write_manifest(out_dir: Path, params: dict, files: dict[str, dict[str, list[Path]]],
                    provenance: dict[str, dict[str, list[str]]]) -> None:
    doc = {
        "params": params,
        "packages": [{"package": s.package, "kind": s.kind, "licence": s.licence} for s in corpus.SOURCES],
        "split_files": {split: {stem: [str(p) for p in paths] for stem, paths in by_stem.items()}
                        for split, by_stem in files.items()},
        "items": provenance,
    }
    (out_dir / "dataset.json").write_text(json.dumps(doc, indent=1))


def make_bank_dataset(bank_dir: str | Path, out_dir: str | Path, split: str = "test", n_items: int = 24,
                      item_s: float = 30.0, seed: int = 0, mixer_config: object | None = None,
                      on_progress: ProgressCallback | None = None) -> list[Path]:
    """Write ``n_items`` DnR folders to ``out_dir/split`` mixed by the training mixer
    (:mod:`.mixer`: film-like levels, the legacy channel on most items) from the bank's
    ``split``, whose speakers, tracks and effect files no training example uses.

    Returns the item folders; ``out_dir/split/dataset.json`` records the parameters and the
    bank's hours per split.
    """
    from filmrestore.separation.training.bank import SourceBank
    from filmrestore.separation.training.mixer import MixerConfig, make_example

    if n_items < 1 or item_s <= 0:
        raise ConfigError(f"need n_items >= 1 and item_s > 0; got {n_items}, {item_s}")
    bank = SourceBank(bank_dir)
    config = mixer_config or MixerConfig(segment_s=item_s)
    pools = {kind: bank.clips(kind, split) for kind in corpus.KINDS}
    out_dir = Path(out_dir)
    folders = []
    for i in range(n_items):
        stems = make_example(bank, pools, np.random.default_rng([seed, 77, i]), config)
        folder = out_dir / split / f"item_{i:05d}"
        _write_item(folder, {s: stems[k][None] for k, s in enumerate(STEMS)})
        folders.append(folder)
        if on_progress is not None:
            on_progress(i + 1, n_items)
    doc = {"bank": str(bank_dir), "split": split, "n_items": n_items, "item_s": item_s, "seed": seed,
           "mixer_config": {k: v for k, v in vars(config).items()}, "bank_summary": bank.summary()}
    (out_dir / split / "dataset.json").write_text(json.dumps(doc, indent=1, default=list))
    return folders
