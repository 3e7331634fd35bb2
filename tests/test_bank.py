"""The training source bank, the on-the-fly legacy mixer and training from a bank.

The banks here are small: a few recordings of each kind from the test corpus
(asterisk-core-sounds-fr-wav, fillets-ng-data-nl, colobot-common-sounds), grouped by
file, chosen so that every split holds some of each kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import torch
from safetensors import safe_open

from filmrestore import corpus
from filmrestore.errors import ConfigError
from filmrestore.separation.bandsplit import BandSplitConfig
from filmrestore.separation.training.bank import (SPEECH_HIGHPASS_HZ, SPLITS, Clip, SourceBank, build_bank, clean_speech,
                                                 decode, export_compact, split_of)
from filmrestore.separation.checkpoint import config_path, load_checkpoint
from filmrestore.separation.training.dataset import list_items, make_bank_dataset
from filmrestore.separation.training.evaluate import load_item
from filmrestore.separation.training.mixer import (CODECS, MixerConfig, MixerDataset, codec_round_trip, compressor_gain,
                                                   encode_decode, legacy_channel, make_example, mix_transfer, pick_speakers,
                                                   restored)
from filmrestore.separation.training.train import TrainConfig, learning_rate, train

FS = 48000
TINY = BandSplitConfig(n_fft=512, hop_frames=256, bands=((4, 8), (16, 4)), dim=16, n_layers=2, mask_hidden=16,
                       dilations=(1, 2))
HAVE_CORPUS = all(corpus.find_recordings(k) for k in corpus.KINDS)
pytestmark = pytest.mark.skipif(not HAVE_CORPUS, reason="needs the test corpus (.ci/setup)")
# Every mixer stage on: no stem dropped, no randomness in the levels.
FIXED = MixerConfig(segment_s=4.0, speech_lufs=(-27.0, 0.0), music_lufs=(-32.0, 0.0),
                    fg_effects_lufs=(-32.0, 0.0), p_drop=(0.0, 0.0, 0.0), p_background=0.0, p_legacy=0.0)


def _recordings(kind: str, per_split: int) -> list[corpus.Recording]:
    """``per_split`` test-corpus files of ``kind`` for each split, each file its own group."""
    picked: dict[str, list[corpus.Recording]] = {s: [] for s in SPLITS}
    for path in corpus.find_recordings(kind):
        rec = corpus.Recording(path, None, "test-corpus", f"{kind}:{path.name}")
        if len(picked[split_of(rec.group)]) < per_split:
            picked[split_of(rec.group)].append(rec)
    return [r for s in SPLITS for r in picked[s]]


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> SourceBank:
    recordings = {"speech": _recordings("speech", 4), "music": _recordings("music", 1),
                  "effects": _recordings("effects", 4)}
    return build_bank(tmp_path_factory.mktemp("bank"), recordings=recordings)


def test_bank_holds_every_split_and_its_clips_decode_back(bank: SourceBank) -> None:
    for kind in corpus.KINDS:
        for split in SPLITS:
            clips = bank.clips(kind, split)
            assert clips and all(split_of(c.group) == split for c in clips)
    clip = bank.clips("effects", "train")[0]
    original = decode(corpus.Recording(Path(clip.source), None, clip.package, clip.group))
    stored = bank.audio("effects", clip)
    assert stored.size == original.size == clip.n_frames
    assert np.abs(stored).max() == pytest.approx(0.891, abs=1e-3)  # peak-normalised to -1 dBFS
    assert np.corrcoef(stored, original)[0, 1] > 0.9999
    # Speech is trimmed of its leading and trailing silence.
    speech = bank.clips("speech", "train")[0]
    x = bank.audio("speech", speech)
    threshold = 10 ** (-45 / 20) * np.abs(x).max()
    assert np.abs(x[:481]).max() > threshold and np.abs(x[-481:]).max() > threshold


def test_speech_loses_its_recordings_rumble_and_hum_and_keeps_the_voice() -> None:
    """A real utterance with rumble under 40 Hz and a 60 Hz hum series added, as several volunteers'
    recordings hold them: the bank's speech keeps the voice (320-3,400 Hz within 0.2 dB) and loses
    both (the rumble 25 dB down, the hum's lines to the level around them, 10 dB more SI-SDR
    against the voice high-passed alike), so that neither is labelled dialogue."""
    from filmrestore.restoration.hum import detect_hum
    from filmrestore.separation.training.metrics import si_sdr

    voice = np.concatenate([decode(corpus.Recording(p, None, "t", "t")) for p in corpus.find_recordings("speech")[:3]])
    voice = voice[: 6 * FS]
    t = np.arange(voice.size) / FS
    rng = np.random.default_rng(0)
    rumble = scipy.signal.sosfilt(scipy.signal.butter(4, 40.0, "low", fs=FS, output="sos"), rng.standard_normal(voice.size))
    rumble *= 0.3 * np.std(voice) / np.std(rumble)
    hum = sum(0.1 * np.std(voice) * np.sin(2 * np.pi * 60.0 * k * t + k) for k in (1, 2, 3))
    cleaned = clean_speech((voice + rumble + hum).astype(np.float32))

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        f, p = scipy.signal.welch(x, FS, nperseg=1 << 15)
        return 10.0 * np.log10(p[(f >= lo) & (f < hi)].sum() + 1e-30)

    assert abs(band_db(cleaned, 320.0, 3400.0) - band_db(voice, 320.0, 3400.0)) < 0.2
    filtered_voice = scipy.signal.sosfiltfilt(scipy.signal.butter(4, SPEECH_HIGHPASS_HZ, "high", fs=FS, output="sos"),
                                              voice)
    residue = cleaned - filtered_voice
    assert band_db(residue, 10.0, 40.0) < band_db(rumble, 10.0, 40.0) - 25.0

    def line_db(x: np.ndarray, f0: float) -> float:  # a line's height over its neighbours (0.18 Hz bins)
        f, p = scipy.signal.welch(x, FS, nperseg=1 << 18)
        k = int(np.argmin(np.abs(f - f0)))
        return 10.0 * np.log10(p[k - 1:k + 2].max() / np.median(np.r_[p[k - 40:k - 8], p[k + 9:k + 41]]))

    dirty = voice + rumble + hum
    found = detect_hum((voice + hum)[None], FS)
    assert found.fundamental_hz == 60.0
    assert detect_hum(cleaned[None], FS).fundamental_hz is None
    assert found.harmonics_hz and all(line_db(dirty, f) > 6.0 and line_db(cleaned, f) < 3.0 for f in found.harmonics_hz)
    assert si_sdr(cleaned, filtered_voice) > si_sdr(dirty, filtered_voice) + 10.0


def test_bank_index_and_data_must_agree(bank: SourceBank, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no source bank here"):
        SourceBank(tmp_path)
    for name in ("bank.json", "speech.i16", "music.i16"):
        (tmp_path / name).write_bytes((bank.root / name).read_bytes())
    (tmp_path / "effects.i16").write_bytes((bank.root / "effects.i16").read_bytes()[:1000])
    with pytest.raises(ConfigError, match="effects.i16: missing or not"):
        SourceBank(tmp_path)


def test_split_depends_on_the_group_name_only() -> None:
    names = [f"speaker-{i}" for i in range(2000)]
    shares = {s: np.mean([split_of(n) == s for n in names]) for s in SPLITS}
    assert shares["test"] == pytest.approx(0.15, abs=0.03) and shares["valid"] == pytest.approx(0.07, abs=0.02)
    assert [split_of(n) for n in names[:50]] == [split_of(n) for n in names[:50]]


def test_training_corpus_never_reads_a_reserved_package() -> None:
    reserved = ("fillets-ng-data", "fillets-ng-data-cs", "warzone2100-data", "wesnoth", "hyperrogue-music", "sound-theme-freedesktop",
                "asterisk-core-sounds-en", "asterisk-core-sounds-es", "asc-music", "chromium-bsu-data")
    for source in corpus.SOURCES:
        assert not any(source.package == r or (source.package.startswith(r) and r != "fillets-ng-data")
                       for r in reserved), source.package


def test_examples_sum_to_the_mix_at_their_drawn_loudness(bank: SourceBank) -> None:
    data = MixerDataset(bank, "train", 6, FIXED, seed=1)
    meter = pyloudnorm.Meter(FS)
    for i in range(len(data)):
        mix, stems = data[i]
        assert mix.shape == (1, 4 * FS) and stems.shape == (3, 1, 4 * FS)
        np.testing.assert_allclose(mix.numpy(), stems.sum(0).numpy(), atol=1e-6)
        dialogue = stems[0, 0].numpy().astype(np.float64)
        assert meter.integrated_loudness(dialogue) == pytest.approx(-27.0, abs=0.5)
    again = MixerDataset(bank, "train", 6, FIXED, seed=1)[3][1]
    np.testing.assert_array_equal(again.numpy(), data[3][1].numpy())  # example i of an epoch is reproducible


def test_dropped_stems_are_silent_and_never_all_at_once(bank: SourceBank) -> None:
    config = MixerConfig(segment_s=2.0, p_drop=(0.5, 0.5, 0.5), p_legacy=0.0)
    pools = {k: bank.clips(k, "train") for k in corpus.KINDS}
    silent = np.array([[not np.any(s) for s in make_example(bank, pools, np.random.default_rng(i), config)]
                       for i in range(40)])
    assert silent.any(axis=0).all() and not silent.all(axis=1).any()


def test_solo_examples_hold_one_stem_and_leave_the_others_alone(bank: SourceBank) -> None:
    pools = {k: bank.clips(k, "train") for k in corpus.KINDS}
    solo = MixerConfig(segment_s=2.0, p_solo=1.0, p_legacy=0.0)
    sounding = np.array([[bool(np.any(s)) for s in make_example(bank, pools, np.random.default_rng(i), solo)]
                         for i in range(30)])
    assert np.all(sounding.sum(axis=1) == 1) and sounding.any(axis=0).all()  # one stem, each of them sometimes
    # At 0 nothing is drawn for it (held-out items are made so and stay what they were); any share
    # above 0 takes one draw first, so the same generator gives another example.
    plain = MixerConfig(segment_s=2.0, p_legacy=0.0)
    rare = MixerConfig(**{**plain.__dict__, "p_solo": 1e-12})
    assert plain.p_solo == 0.0
    assert not np.array_equal(make_example(bank, pools, np.random.default_rng(5), plain),
                              make_example(bank, pools, np.random.default_rng(5), rare))


@pytest.mark.parametrize("weighting", ["group", "hours"])
def test_speakers_are_drawn_alike_or_by_their_hours(weighting: str) -> None:
    # One cast with 20 s of scenes in 4 clips, ten languages with a 1 s word each.
    clips = [Clip(f"scene{k}", "p", "cast", "train", 0, 5 * FS) for k in range(4)]
    clips += [Clip(f"word{k}", "p", f"lang{k}", "train", 0, FS) for k in range(10)]
    config = MixerConfig(p_two_speakers=0.0, speech_weighting=weighting)
    rng = np.random.default_rng(0)
    cast = np.mean([pick_speakers(clips, rng, config) == {"cast"} for _ in range(4000)])
    assert cast == pytest.approx(20 / 30 if weighting == "hours" else 1 / 11, abs=0.03)
    if weighting == "hours":  # two speakers are two groups
        two = MixerConfig(p_two_speakers=1.0, speech_weighting=weighting)
        assert all(len(pick_speakers(clips, rng, two)) == 2 for _ in range(50))
    with pytest.raises(ValueError, match="speech_weighting"):
        MixerConfig(speech_weighting="words")


def test_legacy_channel_band_limits_every_stem_and_puts_its_noise_in_effects() -> None:
    rng = np.random.default_rng(0)
    n = 4 * FS
    stems = np.zeros((3, n), np.float32)
    stems[0], stems[1] = rng.standard_normal((2, n)).astype(np.float32) * 0.05  # white: energy up to 24 kHz
    quiet = MixerConfig(p_wow=0.0, p_compress=0.0, p_hiss=0.0, p_hum=0.0, p_buzz=0.0, p_crackle=0.0)
    out = legacy_channel(stems, np.random.default_rng(3), quiet)
    assert not np.any(out[2])
    for k in (0, 1):
        f, p = scipy.signal.welch(out[k], FS, nperseg=4096)
        assert 10 * np.log10(p[f > 12000].mean() / p[(f > 500) & (f < 3000)].mean()) < -30.0
        assert 10 * np.log10(p[f < 25].mean() / p[(f > 500) & (f < 3000)].mean()) < -10.0
    # The effects stem was silent: what it holds now is the transfer's hiss, or its hum, under the mix.
    hiss = legacy_channel(stems, np.random.default_rng(3), MixerConfig(**{**quiet.__dict__, "p_hiss": 1.0}))[2]
    assert -55.0 < 10 * np.log10(np.mean(hiss ** 2) / np.mean(out.sum(0) ** 2)) < -20.0
    hum = legacy_channel(stems, np.random.default_rng(3), MixerConfig(**{**quiet.__dict__, "p_hum": 1.0}))[2]
    f, p = scipy.signal.welch(hum, FS, nperseg=1 << 15)
    near = [np.abs(f[:, None] - f0 * np.arange(1, 8)[None]).min(1) < 3.0 for f0 in (50.0, 60.0)]
    assert max(p[m].sum() for m in near) > 0.95 * p.sum()


@pytest.mark.parametrize("codec", CODECS, ids=[c[0] for c in CODECS])
def test_codec_round_trip_is_aligned_and_reaches_every_stem_alike(codec: tuple) -> None:
    """The decoded mix lines up with the original (the codec's delay removed), and the stems carry the
    codec's effect on the mix: they add up to the decoded mix, each changed by it."""
    rng = np.random.default_rng(5)
    n = 3 * FS
    lp = scipy.signal.butter(8, 6000.0, fs=FS, output="sos")  # within every codec's band at its lowest rate
    stems = np.stack([scipy.signal.sosfilt(lp, rng.standard_normal(n)) * g for g in (0.1, 0.05, 0.02)])
    stems[0] *= (np.arange(n) % FS) < FS // 2  # dialogue with pauses: the stems' shares change over time
    stems = stems.astype(np.float32)
    mix = stems.sum(0)
    coded = encode_decode(mix, *codec[:3], codec[3])
    assert coded is not None and coded.shape == mix.shape

    def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(ref ** 2) / np.sum((est - ref) ** 2)))

    assert snr_db(mix[FS:-FS], coded[FS:-FS]) > 10.0  # a misaligned decode would be near 0 dB
    out = mix_transfer(stems, mix, coded)
    assert snr_db(coded[FS:-FS], out.sum(0)[FS:-FS]) > 30.0
    assert all(3.0 < snr_db(stems[k], out[k]) < 60.0 for k in range(3))
    drawn = codec_round_trip(stems, np.random.default_rng(0))
    assert drawn.shape == stems.shape and drawn.dtype == np.float32 and not np.array_equal(drawn, stems)


def test_restored_examples_lose_their_hum_in_the_effects_and_still_add_up() -> None:
    """Through the restore stage (as a run plans and applies it): the mains hum the transfer put in the
    effects target is notched out of it, and the stems add up to the restored mix."""
    from filmrestore.restoration.restorer import Restorer, plan_restoration

    rng = np.random.default_rng(2)
    n = 6 * FS
    t = np.arange(n) / FS
    stems = np.zeros((3, n), np.float32)
    stems[0] = 0.1 * np.sin(2 * np.pi * 220 * t) * ((np.arange(n) % FS) < FS // 2)  # a voice with pauses
    stems[1] = 0.05 * np.sin(2 * np.pi * 330 * t + 0.3 * np.sin(2 * np.pi * 0.5 * t))
    stems[2] = 0.01 * np.sin(2 * np.pi * 50 * t) + 0.004 * np.sin(2 * np.pi * 150 * t) \
        + 0.001 * rng.standard_normal(n)
    out = restored(stems)

    def hum_db(x: np.ndarray) -> float:
        spectrum, f = np.abs(np.fft.rfft(x[FS:-FS])) ** 2, np.fft.rfftfreq(n - 2 * FS, 1 / FS)
        return float(10 * np.log10(spectrum[(np.abs(f - 50) < 1) | (np.abs(f - 150) < 1)].sum()))

    assert hum_db(out[2]) < hum_db(stems[2]) - 10.0
    mix = stems.sum(0)[None]
    restorer = Restorer(FS, 1, plan_restoration(mix, FS))
    repaired = np.concatenate([restorer.process(mix), restorer.flush()], axis=1)[0]
    err = out.sum(0)[FS:-FS] - repaired[FS:-FS]
    assert 10 * np.log10(np.sum(repaired[FS:-FS] ** 2) / np.sum(err ** 2)) > 30.0


def test_compressor_gain_follows_the_mix_and_never_boosts() -> None:
    t = np.arange(4 * FS) / FS
    mix = (0.05 * np.sin(2 * np.pi * 440 * t) * np.where((t > 1.5) & (t < 2.5), 8.0, 1.0)).astype(np.float32)
    gain = compressor_gain(mix, np.random.default_rng(0))
    assert gain.max() <= 1.0 + 1e-6
    assert gain[int(2.3 * FS)] < 0.8 * gain[int(0.5 * FS)]


def test_bank_test_items_are_dnr_folders_from_the_test_split(bank: SourceBank, tmp_path: Path) -> None:
    folders = make_bank_dataset(bank.root, tmp_path, "test", n_items=2, item_s=3.0, seed=4)
    items = list_items(tmp_path / "test")
    assert [i.folder for i in items] == folders
    mix, stems = load_item(items[0])
    np.testing.assert_allclose(mix, stems.sum(0), atol=1e-5)
    assert json.loads((tmp_path / "test" / "dataset.json").read_text())["split"] == "test"


def test_held_out_items_can_carry_a_codec_round_trip(bank: SourceBank, tmp_path: Path) -> None:
    """make-dataset --p-codec 1: the same draws as without, each mix then through MP2 or AAC; the
    stems still add up to it, and what the codec took out is above its quantisation floor."""
    from typer.testing import CliRunner

    from filmrestore.cli import app

    for name, p_codec in (("plain", "0"), ("coded", "1")):
        done = CliRunner().invoke(app, ["make-dataset", str(tmp_path / name), "--bank", str(bank.root), "--split", "test",
                                        "--items", "2", "--seconds", "3", "--seed", "4", "--p-codec", p_codec])
        assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "coded" / "test" / "dataset.json").read_text())["mixer_config"]["p_codec"] == 1.0
    plain, coded = (list_items(tmp_path / name / "test") for name in ("plain", "coded"))
    for a, b in zip(plain, coded):
        (mix_a, stems_a), (mix_b, stems_b) = load_item(a), load_item(b)
        np.testing.assert_allclose(mix_b, stems_b.sum(0), atol=1e-4)
        residual = float(np.sum((mix_b - mix_a) ** 2) / np.sum(mix_a ** 2))
        assert 1e-6 < residual < 0.1  # a lossy round trip of the same mix, not another mix


def test_learning_rate_warms_up_then_decays_to_its_floor() -> None:
    config = TrainConfig(learning_rate=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    lrs = [learning_rate(s, config) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[60] == pytest.approx(0.55e-3, rel=1e-6) and lrs[115] == pytest.approx(1e-4)


def test_training_from_a_bank_validates_keeps_the_best_and_resumes(bank: SourceBank, tmp_path: Path) -> None:
    out = tmp_path / "b.safetensors"
    config = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, segment_s=1.0, warmup_steps=2,
                         ema_decay=0.9, valid_examples=3)
    log: list[dict] = []
    train(bank.root, out, config, model_config=TINY, device="cpu", on_log=log.append)
    epochs = [r for r in log if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(set(r["valid"]) >= {"dialogue_si_sdri_db", "music_si_sdri_db", "mean_si_sdri_db"} for r in epochs)
    assert epochs[-1]["hours_seen"] == pytest.approx(4 * 2 * 1.0 / 3600.0)
    notes = json.loads(config_path(out).read_text())["notes"]
    best = max(r["valid"]["mean_si_sdri_db"] for r in epochs)
    assert notes["valid"]["mean_si_sdri_db"] == pytest.approx(best)  # the shipped file is the best epoch's
    with safe_open(str(out), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert load_checkpoint(out)[0].config == TINY
    log.clear()
    train(bank.root, out, TrainConfig(**{**config.__dict__, "epochs": 3}), device="cpu", on_log=log.append)
    assert [r["step"] for r in log if r["event"] == "step"] == [5, 6]  # resumed after step 4


def test_compact_bank_decodes_to_the_same_clips(bank: SourceBank, tmp_path: Path) -> None:
    compact = export_compact(bank, tmp_path / "compact", hours={"speech": 0.001, "music": 0.001, "effects": 0.001},
                             valid_hours=0.0001)
    assert compact.doc["codec"] == "opus" and not compact.clips("speech", "test")
    for kind in corpus.KINDS:
        assert compact.clips(kind, "train") and compact.clips(kind, "valid")
        clip = compact.clips(kind, "train")[0]
        original = next(c for c in bank.clips(kind, "train") if c.source == clip.source)
        a, b = compact.audio(kind, clip), bank.audio(kind, original)
        assert a.size == b.size
        assert 10 * np.log10(np.sum(b ** 2) / np.sum((a - b) ** 2)) > 8.0  # Opus at ~32 kbit/s
    assert sum(p.stat().st_size for p in (tmp_path / "compact").iterdir()) < 2 * sum(
        p.stat().st_size for p in bank.root.glob("*.i16")) / 10


def test_device_training_script_rehearsed_on_cpu(bank: SourceBank, tmp_path: Path) -> None:
    """separation/training/train_device.sh, the script a lent GPU runs, with tiny settings on this CPU."""
    import os
    import subprocess
    import sys

    compact = export_compact(bank, tmp_path / "compact", hours={"speech": 0.002, "music": 0.002, "effects": 0.002},
                             valid_hours=0.0005)
    out = tmp_path / "out"
    # TRAIN_DEVICE_FRESH: lay out the import package as on a bare machine, not the venv's install.
    env = {**os.environ, "PYTHON": sys.executable, "TRAIN_DEVICE_FRESH": "1", "TMPDIR": str(tmp_path),
           "TRAIN_DEVICE_ARGS": "--epochs 2 --steps-per-epoch 2 --batch-size 2 --segment-s 1 --valid-examples 2 "
                                "--num-workers 0 --epoch-minutes 1",
           "BENCH_DEVICE_ARGS": "--minutes 0.1 --devices cpu"}
    root = Path(__file__).parent.parent
    done = subprocess.run(["bash", str(root / "separation/training/train_device.sh"), str(compact.root), str(out), "5"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in records] == [1, 2] and "valid" in records[-1]
    net, doc = load_checkpoint(out / "dme.safetensors")
    assert net.config == load_checkpoint(root / "separation/checkpoints/dme-small.safetensors")[0].config
    assert (out / "dme.state.json").is_file()
    assert "neural" in (out / "bench.log").read_text()


def test_corpus_globs_keep_to_their_folders() -> None:
    match = corpus._match
    assert match("/usr/share/games/hedgewars/Data/Sounds/1C.ogg", "**/[0-9][A-G]*.ogg")
    assert not match("/usr/share/games/hedgewars/Data/Sounds/boom.ogg", "**/[0-9][A-G]*.ogg")
    assert match("voices/Default/x.ogg", "**/*.ogg") and match("x.ogg", "**/*.ogg")
    assert not match("voices/Default/x.ogg", "*.ogg")  # '*' stays within one folder
    assert match("sound/player/a/b.wav", "sound/player/**/*") and not match("sound/items/b.wav", "sound/player/**/*")


@pytest.mark.parametrize(("package", "path", "kept"), [
    ("megaglest-data", "/usr/share/games/megaglest/techs/megapack/commondata/sounds/archer_ack1.wav", False),
    ("megaglest-data", "/usr/share/games/megaglest/techs/megapack/commondata/sounds/worker_select4.wav", False),
    ("megaglest-data", "/usr/share/games/megaglest/techs/megapack/commondata/sounds/archer_attack2.wav", True),
    ("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps/hobbies/music/string/cello.ogg", False),
    ("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps/animals/birds/crow.ogg", True),
    ("supertuxkart-data", "/usr/share/games/supertuxkart/data/sfx/sara_airport_pa.ogg", False),
    ("supertuxkart-data", "/usr/share/games/supertuxkart/data/sfx/last_lap_fanfare.ogg", False),
    ("supertuxkart-data", "/usr/share/games/supertuxkart/data/sfx/crash.ogg", True),
    ("nexuiz-data", "sound/weapons/tuba_note-11.ogg", False),
    ("nexuiz-data", "sound/weapons/rocket_fire.wav", True),
])
def test_effects_leave_out_spoken_lines_and_instrument_notes(package: str, path: str, kept: bool) -> None:
    """A voice or a note labelled as an effect teaches the model both answers: a unit's spoken answer
    to an order is dialogue, an instrument's note is music."""
    sources = [s for s in corpus.SOURCES if s.package == package and s.kind == "effects"]
    assert any(corpus._selects(s, path) for s in sources) is kept


@pytest.mark.parametrize(("path", "group"), [
    ("/usr/share/games/hedgewars/Data/Sounds/voices/Default/Hello.ogg", "hedgewars-data:Default"),
    ("/usr/share/games/hedgewars/Data/Sounds/voices/Default_es/Hello.ogg", "hedgewars-data:Default_es"),
    ("/usr/share/games/hedgewars/Data/Sounds/voices/Robot/Hello.ogg", None),  # a vocoder
    ("/usr/share/games/hedgewars/Data/Sounds/voices/Singer/Hello.ogg", None),  # sung
    ("/usr/share/games/megaglest/techs/megapack/commondata/sounds/archer_ack1.wav", "megaglest-data:archer"),
    ("/usr/share/games/megaglest/techs/megapack/factions/indian/units/fire_archer/sounds/archer_select3.wav",
     "megaglest-data:archer"),
    ("/usr/share/games/megaglest/techs/megapack/commondata/sounds/cow_ack1.wav", None),
    ("/usr/share/games/megaglest/techs/megapack/factions/magic/units/dragon/sounds/dragon_select1.wav", None),
    ("/usr/share/games/megaglest/techs/megapack/commondata/sounds/archer_attack2.wav", None),  # an effect
])
def test_acted_lines_are_speech_grouped_by_voice(path: str, group: str | None) -> None:
    """Game voice lines are dialogue, held out by actor: a hedgewars pack by its whole folder name
    (``Default_es`` is another actor than ``Default``), a MegaGlest voice by its name in whatever
    faction reuses it (so no voice straddles two splits); animals, creatures, a vocoder and singing are not."""
    kept = [corpus._group(s, Path(path)) for s in corpus.SOURCES if s.kind == "speech" and corpus._selects(s, path)]
    assert kept == ([group] if group else [])
