"""The neural (band-split) separator: shapes, engine run, checkpoints, training, resuming.

Models here are tiny (dim 16, 2 layers, n_fft 512) random or briefly trained ones;
the training data are a few short items from ``make_dataset``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from filmrestore.audio import read_audio, write_audio
from filmrestore.errors import CheckpointError, ConfigError
from filmrestore.separation import STEMS, get_separator, separate_array, separate_file
from filmrestore.separation.bandsplit import BandSplitConfig, BandSplitNet
from filmrestore.separation.checkpoint import config_path, load_checkpoint, save_checkpoint
from filmrestore.separation.training.dataset import RemixDataset, make_dataset
from filmrestore.separation.neural import NeuralSeparator
from filmrestore.separation.training.train import TrainConfig, l2snr_db, separation_loss, state_paths, train

FS = 48000
TINY = BandSplitConfig(n_fft=512, hop_frames=256, bands=((4, 8), (16, 4)), dim=16, n_layers=2, mask_hidden=16,
                       dilations=(1, 2))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dnr")
    make_dataset(root, n_items=5, item_s=2.0, seed=3, test_fraction=0.2)
    return root


def _tiny(seed: int = 0) -> BandSplitNet:
    torch.manual_seed(seed)
    return BandSplitNet(TINY)


def test_band_edges_cover_every_bin_once() -> None:
    for config in (BandSplitConfig(), TINY):
        edges = config.band_edges()
        assert edges[0][0] == 0 and edges[-1][1] == config.n_fft // 2 + 1
        assert all(a < b for a, b in edges) and all(e[1] == f[0] for e, f in zip(edges, edges[1:]))


def test_time_block_convolution_is_a_dilated_depthwise_conv() -> None:
    from filmrestore.separation.bandsplit import TimeBlock

    torch.manual_seed(0)
    block = TimeBlock(dim=8, kernel_frames=5, dilation=3, mlp_ratio=2)
    z = torch.randn(2, 40, 8)
    weight = block.taps.detach().T[:, None, :]  # (dim, 1, kernel)
    expected = F.conv1d(z.transpose(1, 2), weight, block.tap_bias.detach(), padding=6, dilation=3, groups=8)
    torch.testing.assert_close(block._depthwise(z), expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_inference_path_computes_what_the_training_path_does() -> None:
    """Without autograd the blocks take their own path (fused residual adds, in-place activations);
    the masks are the same as with autograd, and the spectrogram handed in is left as it was."""
    net = _tiny(seed=5).eval()
    with torch.no_grad():  # every block doing something, as a trained one's do
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    spec = torch.randn(2, TINY.n_fft // 2 + 1, 50, dtype=torch.complex64)
    kept = spec.clone()
    with torch.enable_grad():
        trained = net(spec).detach()
    with torch.inference_mode():
        inferred = net(spec)
    torch.testing.assert_close(inferred, trained, atol=1e-6, rtol=1e-5)
    assert torch.equal(spec, kept)
    assert (trained - net(torch.randn_like(spec)).detach()).abs().max() > 1e-3  # the masks depend on the input


def test_receptive_field_is_what_the_config_says() -> None:
    """A change in one STFT frame moves the masks of the frames within half the receptive field, no others."""
    net = _tiny().eval()
    half = (TINY.receptive_field_frames() - 1) // 2
    spec = torch.randn(1, TINY.n_fft // 2 + 1, 60, dtype=torch.complex64)
    changed = spec.clone()
    changed[:, :, 30] *= 3.0
    with torch.inference_mode():
        moved = (net(changed) - net(spec)).abs().amax(dim=(0, 1, 2))
    assert torch.all(moved[30 - half: 31 + half] > 0)
    assert torch.all(moved[: 30 - half] == 0) and torch.all(moved[31 + half:] == 0)


@pytest.mark.parametrize("n_channels", [1, 2])
def test_neural_separator_runs_in_the_engine(n_channels: int, tmp_path: Path) -> None:
    model = NeuralSeparator(_tiny())
    x = (np.random.default_rng(0).standard_normal((n_channels, 3 * FS + 11)) * 0.1).astype(np.float32)
    out = separate_array(model, x, segment_s=1.0, overlap_s=0.25)
    assert all(out[s].shape == x.shape for s in STEMS)
    assert np.abs(sum(out.values()) - x).max() < 1e-4
    # Softmax masks: no stem is empty and none takes everything.
    shares = np.array([np.sum(out[s] ** 2) for s in STEMS]) / np.sum(x ** 2)
    assert np.all(shares > 0.01) and np.all(shares < 0.99)
    write_audio(tmp_path / "mix.wav", x, FS)
    paths = {s: tmp_path / f"{s}.wav" for s in STEMS}
    separate_file(model, tmp_path / "mix.wav", paths, segment_s=1.0, overlap_s=0.25, read_block_frames=7777)
    for s in STEMS:
        np.testing.assert_allclose(read_audio(paths[s]), out[s], atol=1e-5)


def test_upsampled_masks_keep_the_coarse_frames_and_interpolate_between() -> None:
    from filmrestore.separation.neural import upsample_frames

    masks = torch.softmax(torch.randn(2, 3, 6, 5), dim=1)
    fine = upsample_frames(masks, 4, 23)  # 21 interpolated frames and two past the last coarse one
    torch.testing.assert_close(fine[:, :, 0:21:4], masks)
    torch.testing.assert_close(fine[:, :, 1], 0.75 * masks[:, :, 0] + 0.25 * masks[:, :, 1])
    torch.testing.assert_close(fine[:, :, 18], 0.5 * masks[:, :, 4] + 0.5 * masks[:, :, 5])
    torch.testing.assert_close(fine[:, :, 21:], masks[:, :, 5:].expand(-1, -1, 2, -1))
    torch.testing.assert_close(fine.sum(1), torch.ones(2, 23, 5))


@pytest.mark.parametrize(("shifts", "upsample", "smooth"), [(1, 2, 0.0), (1, 4, 0.0), (2, 1, 0.0), (3, 2, 0.0),
                                                        (1, 1, 0.25), (2, 2, 1 / 3)])
def test_inference_options_rebuild_the_mixture(shifts: int, upsample: int, smooth: float) -> None:
    """Masks that are the same everywhere give each stem its share of the mixture exactly,
    whatever hop the masks are applied on, however many shifted passes are averaged and however
    the masks are smoothed; the stems add up to the input, and a trained-like network's stems
    do move with the options."""
    net = _tiny(6).eval()
    x = torch.randn(2, 1, FS // 2) * 0.1
    options = {"shifts": shifts, "upsample": upsample, "smooth_frames": smooth, "smooth_bins": smooth / 2}
    with torch.no_grad():
        plain = NeuralSeparator(net)(x)
        for head in net.mask_out:
            head.weight.zero_()
            head.bias.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0])).repeat_interleave(head.bias.shape[1] // 3))
        flat = NeuralSeparator(net, **options)(x)
    for k, share in enumerate((1 / 8, 2 / 8, 5 / 8)):
        torch.testing.assert_close(flat[:, k], share * x, atol=1e-5, rtol=1e-4)
    net = _tiny(6).eval()
    with torch.no_grad():
        moved = NeuralSeparator(net, **options)(x)
    torch.testing.assert_close(moved.sum(1), x, atol=1e-5, rtol=1e-4)
    assert (moved - plain).abs().max() > 1e-4


def test_mask_smoothing_is_the_three_tap_kernel_with_edges_repeated() -> None:
    """``smooth_along`` is ``[a, 1 - 2a, a]`` along one axis with the edge values repeated:
    np.convolve of the edge-padded signal; masks that sum to one over the stems still do."""
    from filmrestore.separation.neural import smooth_along

    masks = torch.softmax(torch.randn(2, 3, 9, 7, dtype=torch.float64), dim=1)
    for axis, side in ((2, 0.25), (3, 1 / 6), (2, 1 / 3)):
        got = smooth_along(masks, side, axis)
        moved = np.moveaxis(masks.numpy(), axis, -1)
        padded = np.concatenate([moved[..., :1], moved, moved[..., -1:]], axis=-1)
        kernel = np.array([side, 1 - 2 * side, side])
        expected = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), -1, padded)
        np.testing.assert_allclose(np.moveaxis(got.numpy(), -1, axis), expected, atol=1e-12)
        torch.testing.assert_close(got.sum(1), torch.ones_like(got[:, 0]))
    assert torch.equal(smooth_along(masks[:, :, :1], 0.25, 2), masks[:, :, :1])  # one frame: as it was
    with pytest.raises(ValueError, match="smooth_frames and smooth_bins must be in"):
        NeuralSeparator(_tiny(7), smooth_frames=0.5)


def test_shifted_passes_make_the_output_follow_a_delay_of_half_a_hop() -> None:
    """One pass sees the input on its hop's grid: delayed by half a hop, the stems change beyond
    the delay. Averaging two passes half a hop apart makes the separator delay-equivariant (to
    rounding) away from the ends."""
    net = _tiny(7).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 1, FS) * 0.1
    delay = TINY.hop_frames // 2
    delayed = F.pad(x, (delay, 0))
    inner = slice(4 * TINY.n_fft, FS - 4 * TINY.n_fft)  # away from either end

    def mismatch(model: NeuralSeparator) -> float:
        with torch.no_grad():
            a, b = model(x)[..., inner], model(delayed)[..., delay:][..., inner]
        return float((a - b).square().sum() / a.square().sum())

    one, two = mismatch(NeuralSeparator(net)), mismatch(NeuralSeparator(net, shifts=2))
    assert two < 1e-4 * one and one > 1e-3


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    net = _tiny(1)
    path = save_checkpoint(tmp_path / "m.safetensors", net, {"note": "test"})
    doc = json.loads(config_path(path).read_text())
    assert doc["architecture"] == "bandsplit" and doc["sample_rate_hz"] == FS and doc["version"] == 2
    loaded = get_separator("neural", str(path))
    x = torch.randn(1, 1, FS) * 0.1
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), NeuralSeparator(net).eval()(x).numpy(), atol=1e-6)
    assert loaded.config == TINY


def test_mask_powers_sharpen_each_stem_and_keep_the_sum() -> None:
    """A power p gives ``m_i^p / sum_j m_j^p`` of the plain masks; one power per stem gives
    ``m_i^p_i / sum_j m_j^p_j``; either way the masks sum to one in every bin."""
    net = _tiny(2).eval()
    spec = torch.randn(2, TINY.n_fft // 2 + 1, 40, dtype=torch.complex64)
    with torch.inference_mode():
        plain = net(spec).double()
        for power in (0.6, (0.6, 0.6, 0.6), (1.5, 0.6, 1.0)):
            masks = net(spec, power).double()
            p = torch.tensor(power if isinstance(power, tuple) else (power,) * 3, dtype=torch.float64)
            expected = plain ** p.reshape(1, 3, 1, 1)
            expected = expected / expected.sum(1, keepdim=True)
            torch.testing.assert_close(masks, expected, atol=2e-5, rtol=0)
            torch.testing.assert_close(masks.sum(1), torch.ones_like(masks[:, 0]), atol=1e-5, rtol=0)
    # Dialogue at power 2, the others at 1: m^2 / (m^2 + 1 - m) < m, less dialogue in every bin.
    with torch.inference_mode():
        sharper = net(spec, (2.0, 1.0, 1.0)).double()
    assert torch.all(sharper[:, 0] < plain[:, 0] + 1e-6) and torch.all(sharper[:, 1:] > plain[:, 1:] - 1e-6)
    with pytest.raises(ValueError, match="one value per stem"):
        NeuralSeparator(net, (1.0, 2.0))


def test_checkpoint_inference_settings(tmp_path: Path) -> None:
    net = _tiny(3)
    path = save_checkpoint(tmp_path / "m.safetensors", net,
                           inference={"mask_power": {"dialogue": 0.9, "music": 0.6, "effects": 0.5}})
    assert NeuralSeparator.from_checkpoint(path).mask_power == (0.9, 0.6, 0.5)
    doc = json.loads(config_path(path).read_text())
    for bad in ({"dialogue": 0.9, "music": 0.6}, {"dialogue": 0.9, "music": 0.6, "effects": 9.0}, "0.6", True):
        config_path(path).write_text(json.dumps({**doc, "inference": {"mask_power": bad}}))
        with pytest.raises(CheckpointError, match=r"m.json: inference.mask_power must be a number"):
            load_checkpoint(path)
    config_path(path).write_text(json.dumps({**doc, "inference": {"mask_power": 0.7}}))
    assert NeuralSeparator.from_checkpoint(path).mask_power == (0.7, 0.7, 0.7)
    loaded = NeuralSeparator.from_checkpoint(path)
    assert (loaded.shifts, loaded.upsample) == (1, 1)  # absent: one pass, on the network's hop
    config_path(path).write_text(json.dumps({**doc, "inference": {"upsample": 4, "shifts": 2}}))
    loaded = NeuralSeparator.from_checkpoint(path)
    assert (loaded.shifts, loaded.upsample) == (2, 4)
    for name, bad in (("upsample", 3), ("upsample", 0), ("shifts", 2.0), ("shifts", 99), ("upsample", True)):
        config_path(path).write_text(json.dumps({**doc, "inference": {name: bad}}))
        with pytest.raises(CheckpointError, match=rf"m.json: inference.{name} must be an integer"):
            load_checkpoint(path)
    config_path(path).write_text(json.dumps({**doc, "inference": {"smooth_frames": 0.25, "smooth_bins": 0.1}}))
    loaded = NeuralSeparator.from_checkpoint(path)
    assert (loaded.smooth_frames, loaded.smooth_bins) == (0.25, 0.1)
    for name, bad in (("smooth_frames", 0.5), ("smooth_bins", -0.1), ("smooth_frames", "0.2"), ("smooth_bins", True)):
        config_path(path).write_text(json.dumps({**doc, "inference": {name: bad}}))
        with pytest.raises(CheckpointError, match=rf"m.json: inference.{name} must be a number in \[0, 1/3\]"):
            load_checkpoint(path)


def test_separate_stage_is_redone_when_the_checkpoint_settings_change(tmp_path: Path) -> None:
    """The stage's key covers the checkpoint's JSON as well as its weights: a new mask power
    (the same weights) gives other stems, so a re-run must not reuse the old ones."""
    from filmrestore.manifest import FileRecord, StageManifest
    from filmrestore.tasks.separate import run_separate

    x = (np.random.default_rng(2).standard_normal((1, 2 * FS)) * 0.1).astype(np.float32)
    write_audio(tmp_path / "restored.wav", x, FS)
    restored = StageManifest("restore", {"restored": FileRecord.from_path(tmp_path / "restored.wav")})
    path = save_checkpoint(tmp_path / "m.safetensors", _tiny(4), inference={"mask_power": 1.0})
    first, reused = run_separate(restored, tmp_path / "title", "neural", "cpu", str(path))
    dialogue = read_audio(first.file("dialogue").path)
    assert not reused and run_separate(restored, tmp_path / "title", "neural", "cpu", str(path))[1]
    doc = json.loads(config_path(path).read_text())
    config_path(path).write_text(json.dumps({**doc, "inference": {"mask_power": 3.0}}))
    again, reused = run_separate(restored, tmp_path / "title", "neural", "cpu", str(path))
    assert not reused
    assert np.abs(read_audio(again.file("dialogue").path) - dialogue).max() > 1e-3
    # Shifts asked for by the run: redone too, then reused.
    shifted, reused = run_separate(restored, tmp_path / "title", "neural", "cpu", str(path), shifts=2)
    assert not reused and shifted.cache_key != again.cache_key
    assert run_separate(restored, tmp_path / "title", "neural", "cpu", str(path), shifts=2)[1]


def test_separate_stage_keeps_its_stems_when_only_notes_or_spelled_out_defaults_change(tmp_path: Path) -> None:
    """The key holds the settings the stems depend on, resolved: an edit of the checkpoint's
    training notes, or asking for the shifts it already uses, reuses the stems; its shifts
    changed in the JSON redo them."""
    from filmrestore.manifest import FileRecord, StageManifest
    from filmrestore.tasks.separate import run_separate

    x = (np.random.default_rng(3).standard_normal((1, 2 * FS)) * 0.1).astype(np.float32)
    write_audio(tmp_path / "restored.wav", x, FS)
    restored = StageManifest("restore", {"restored": FileRecord.from_path(tmp_path / "restored.wav")})
    path = save_checkpoint(tmp_path / "m.safetensors", _tiny(5), inference={"mask_power": 0.9, "chosen_on": "a"})
    first, reused = run_separate(restored, tmp_path / "title", "neural", "cpu", str(path))
    assert not reused
    doc = json.loads(config_path(path).read_text())
    config_path(path).write_text(json.dumps({**doc, "notes": {"how": "edited"},
                                             "inference": {"mask_power": 0.9, "chosen_on": "b"}}))
    again, reused = run_separate(restored, tmp_path / "title", "neural", "cpu", str(path), shifts=1)
    assert reused and again.cache_key == first.cache_key
    config_path(path).write_text(json.dumps({**doc, "inference": {"mask_power": 0.9, "shifts": 2}}))
    assert not run_separate(restored, tmp_path / "title", "neural", "cpu", str(path))[1]
    assert run_separate(restored, tmp_path / "title", "neural", "cpu", str(path), shifts=2)[1]


def test_shipped_checkpoint_is_the_default() -> None:
    from filmrestore.separation import DEFAULT_CHECKPOINT

    model = get_separator("neural")
    assert DEFAULT_CHECKPOINT.is_file()
    x = torch.randn(1, 1, FS // 2) * 0.1
    with torch.inference_mode():
        stems = model(x)
    assert stems.shape == (1, 3, 1, FS // 2)


def test_bad_checkpoints_name_the_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", _tiny())
    with pytest.raises(ConfigError, match="has no weights"):
        get_separator("dsp", str(path))
    with pytest.raises(CheckpointError, match="missing.safetensors: checkpoint file does not exist"):
        get_separator("neural", str(tmp_path / "missing.safetensors"))
    raw = path.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    config_path(truncated).write_text(config_path(path).read_text())
    with pytest.raises(CheckpointError, match="cut.safetensors: not a complete safetensors file"):
        load_checkpoint(truncated)
    other = json.loads(config_path(path).read_text())
    other["config"]["dim"] = 24
    config_path(path).write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match=r"m.safetensors: tensor .* has shape"):
        load_checkpoint(path)
    good = {**other, "config": {**other["config"], "dim": 16}}
    for key, value in (("hop_frames", 0), ("dim", 10 ** 9), ("compress", float("nan")), ("kernel_frames", 4)):
        config_path(path).write_text(json.dumps({**good, "config": {**good["config"], key: value}}))
        with pytest.raises(CheckpointError, match=rf"m.json: invalid architecture config \({key} must"):
            load_checkpoint(path)
    config_path(path).write_text(json.dumps(good))
    tensors = load_file(str(path))
    tensors[next(iter(tensors))][0] = float("nan")
    from safetensors.torch import save_file
    save_file(tensors, str(path), metadata={"format": "filmrestore-dme", "version": "2", "architecture": "bandsplit"})
    with pytest.raises(CheckpointError, match="m.safetensors: tensor .* holds NaN"):
        load_checkpoint(path)
    other["version"] = 99
    config_path(path).write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match=r"m.json: version is 99"):
        load_checkpoint(path)
    config_path(path).unlink()
    with pytest.raises(CheckpointError, match=r"m.json: config of checkpoint m.safetensors is missing"):
        load_checkpoint(path)


def test_dialogue_weight_is_a_weighted_mean_of_the_stem_losses(data: Path) -> None:
    probe = RemixDataset(data / "train", segment_s=1.0, n_examples=3, remix=False, seed=2)
    mix, stems = (torch.stack(t) for t in zip(*[probe[i] for i in range(3)]))
    with torch.inference_mode():
        estimate = NeuralSeparator(_tiny()).eval()(mix)
        per_stem = [float(separation_loss(estimate[:, k:k + 1], stems[:, k:k + 1], mix)) for k in range(3)]
        plain = float(separation_loss(estimate, stems, mix))
        weighted = float(separation_loss(estimate, stems, mix, dialogue_weight=3.0))
    assert plain == pytest.approx(sum(per_stem) / 3, rel=1e-5)
    assert weighted == pytest.approx((3 * per_stem[0] + per_stem[1] + per_stem[2]) / 5, rel=1e-5)


def test_rms_snr_loss_is_minimised_by_the_mean_mask_where_l1_takes_the_median() -> None:
    # One stem of a noise mix whose true share is 0.1, 0.1 and 0.8 of the mix in three 0.5 s
    # thirds; a constant mask g: L1 is lowest at the median share, RMS-SNR at the mean (0.33),
    # the estimate that SI-SDR (an energy ratio) scores best.
    rng = np.random.default_rng(4)
    mix = torch.from_numpy(rng.standard_normal(3 * FS // 2).astype(np.float32))[None, None]
    share = torch.repeat_interleave(torch.tensor([0.1, 0.1, 0.8]), FS // 2)
    target = (mix * share)[:, None]
    gains = np.arange(0.05, 0.9, 0.01)
    best = {}
    for norm in (1, 2):
        losses = [float(separation_loss(g * mix[:, None], target, mix, norm=norm)) for g in gains]
        best[norm] = gains[int(np.argmin(losses))]
    assert best[1] == pytest.approx(0.1, abs=0.03)
    assert best[2] == pytest.approx(1.0 / 3.0, abs=0.03)
    # On the L1 loss's dB scale: an error 20 dB under the target (power) scores -10.
    noise = torch.from_numpy(rng.standard_normal(FS).astype(np.float32))
    signal = torch.from_numpy(rng.standard_normal(FS).astype(np.float32))
    noise = noise * 0.1 * signal.square().mean().sqrt() / noise.square().mean().sqrt()
    assert float(l2snr_db(signal + noise, signal, torch.tensor(1e-9))) == pytest.approx(-10.0, abs=0.01)
    with pytest.raises(ConfigError, match="loss norm must be one of"):
        TrainConfig(loss_norm=3)


def test_waveform_loss_takes_the_projection_where_magnitudes_take_more() -> None:
    """A stem that is half the power of a mix of two independent noises, under a constant mask g:
    the waveform term is lowest at the projection g = <s, x> / <x, x> = 0.5, the SI-SDR optimum;
    the STFT-magnitude terms, blind to phase, pull g above it."""
    rng = np.random.default_rng(5)
    target = torch.from_numpy(rng.standard_normal(FS).astype(np.float32))[None, None, None]
    other = torch.from_numpy(rng.standard_normal(FS).astype(np.float32))[None, None, None]
    mix = (target + other)[:, 0]
    projection = float((target * mix).sum() / mix.square().sum())
    gains = np.arange(0.3, 0.9, 0.01)
    best = {}
    for weight in (0.0, 1.0):
        losses = [float(separation_loss(g * mix[:, None], target, mix, spec_weight=weight)) for g in gains]
        best[weight] = gains[int(np.argmin(losses))]
    assert best[0.0] == pytest.approx(projection, abs=0.015)
    assert best[1.0] > projection + 0.05
    with pytest.raises(ConfigError, match="spec weight"):
        TrainConfig(spec_weight=-1.0)


def test_tiny_model_trains_and_its_loss_falls(data: Path, tmp_path: Path) -> None:
    probe = RemixDataset(data / "train", segment_s=1.0, n_examples=4, remix=False, seed=9)
    mix, stems = (torch.stack(t) for t in zip(*[probe[i] for i in range(4)]))

    def held_out_loss(net: BandSplitNet) -> float:
        with torch.inference_mode():
            return float(separation_loss(NeuralSeparator(net).eval()(mix), stems, mix))

    # The probe is the stored items (not remixed): the loss the trainer minimises, on fixed examples.

    out = tmp_path / "tiny.safetensors"
    config = TrainConfig(epochs=4, steps_per_epoch=10, batch_size=4, segment_s=1.0, learning_rate=1e-2)
    log: list[dict] = []
    train(data, out, config, model_config=TINY, device="cpu", on_log=log.append)
    before = held_out_loss(_tiny(config.seed))  # train() seeds torch with config.seed before building
    after = held_out_loss(load_checkpoint(out)[0])
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [1, 2, 3, 4]
    # The loss is an SNR in dB: training must lower it by a clear margin.
    assert after < before - 1.0, f"probe loss {before:.2f} dB -> {after:.2f} dB"


def test_training_resumes_from_its_state_files(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.safetensors"
    config = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, segment_s=0.5)
    train(data, out, config, model_config=TINY, device="cpu")
    tensors_path, json_path = state_paths(out)
    saved = load_file(str(tensors_path))
    assert json.loads(json_path.read_text())["step"] == 3 and any(k.endswith("exp_avg") for k in saved)
    log: list[dict] = []
    train(data, out, TrainConfig(epochs=2, steps_per_epoch=3, batch_size=2, segment_s=0.5), device="cpu",
          on_log=log.append)
    steps = [r["step"] for r in log if r["event"] == "step"]
    assert steps == [4, 5, 6]  # continued, not restarted
    resumed = load_file(str(tensors_path))
    assert float(resumed["state.0.step"]) == 6.0
    assert json.loads(config_path(out).read_text())["notes"]["epoch"] == 2


def test_resume_refuses_another_recipe(data: Path, tmp_path: Path) -> None:
    """A run resumed with another loss or rate would silently be a different run: it is refused,
    naming the state file and each change; how long it runs may change."""
    out = tmp_path / "c.safetensors"
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, segment_s=0.5, loss_norm=1)
    train(data, out, config, model_config=TINY, device="cpu")
    changed = dataclasses.replace(config, epochs=2, loss_norm=2, learning_rate=5e-4)
    with pytest.raises(ConfigError, match=r"c\.state\.json.*learning_rate 0\.0005 \(was 0\.001\), loss_norm 2 \(was 1\)"):
        train(data, out, changed, device="cpu")
    train(data, out, dataclasses.replace(config, epochs=2, max_minutes=5.0, threads=1), device="cpu")
    assert json.loads(state_paths(out)[1].read_text())["step"] == 2


def test_ema_from_trained_weights_starts_there_at_full_decay(data: Path, tmp_path: Path) -> None:
    """From ``init`` the EMA is ``d * start + (1 - d) * weights`` after one step, and stays on full decay
    when the run resumes; from random weights the decay warms up, so the first step's average is
    mostly the step's weights (d = 1/10)."""
    def weights(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        tensors = load_file(str(state_paths(out)[0]))
        return ({k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})

    start_net = _tiny(seed=3)
    start = {k: v.float() for k, v in load_checkpoint(save_checkpoint(tmp_path / "s.safetensors", start_net))[0]
             .state_dict().items()}
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, segment_s=0.5, ema_decay=0.9)
    out = tmp_path / "from_init.safetensors"
    train(data, out, config, device="cpu", init=tmp_path / "s.safetensors")
    live, ema = weights(out)
    moved = max(float((live[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-5  # the step changed the weights, so the two averages differ
    for k in start:
        torch.testing.assert_close(ema[k], 0.9 * start[k] + 0.1 * live[k], atol=1e-6, rtol=1e-5)
    train(data, out, dataclasses.replace(config, epochs=2), device="cpu")  # resumed: still full decay
    live2, ema2 = weights(out)
    for k in start:
        torch.testing.assert_close(ema2[k], 0.9 * ema[k] + 0.1 * live2[k], atol=1e-6, rtol=1e-5)

    fresh = tmp_path / "fresh.safetensors"
    torch.manual_seed(config.seed)
    random_start = {k: v.clone() for k, v in BandSplitNet(TINY).state_dict().items()}
    train(data, fresh, config, model_config=TINY, device="cpu")
    live, ema = weights(fresh)
    for k in random_start:
        torch.testing.assert_close(ema[k], 0.1 * random_start[k] + 0.9 * live[k], atol=1e-6, rtol=1e-5)


def test_resume_with_broken_state_names_the_file(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.safetensors"
    train(data, out, TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, segment_s=0.5), model_config=TINY,
          device="cpu")
    tensors_path, _ = state_paths(out)
    tensors_path.write_bytes(tensors_path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="b.state.safetensors"):
        train(data, out, TrainConfig(epochs=2, steps_per_epoch=1, batch_size=1, segment_s=0.5), device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_neural_cuda_autocast_matches_cpu() -> None:
    from filmrestore.separation.training.metrics import si_sdr

    model = NeuralSeparator(_tiny())
    x = (np.random.default_rng(0).standard_normal((1, 2 * FS)) * 0.1).astype(np.float32)
    cpu = separate_array(model, x, device="cpu", segment_s=1.0, overlap_s=0.25)
    gpu = separate_array(model, x, device="cuda", segment_s=1.0, overlap_s=0.25, batch_size=4)
    model.to("cpu")
    assert np.abs(sum(gpu.values()) - x).max() < 1e-4
    for s in STEMS:
        assert si_sdr(gpu[s], cpu[s]) > 20.0


def test_a_non_finite_batch_is_skipped_and_a_run_of_them_stops_training(data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose loss is NaN (a fault real data cannot be made to cause on demand) leaves the
    weights alone; twenty in a row is divergence, reported as such."""
    import filmrestore.separation.training.train as trainer

    real_loss, calls = trainer.separation_loss, {"n": 0}

    def sometimes_nan(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(trainer, "separation_loss", sometimes_nan)
    out = tmp_path / "n.safetensors"
    log: list[dict] = []
    train(data, out, TrainConfig(epochs=1, steps_per_epoch=4, batch_size=1, segment_s=0.5), model_config=TINY,
          device="cpu", on_log=log.append)
    assert [r["event"] for r in log if r["event"] in ("step", "skipped")] == ["step", "skipped", "step", "step"]
    assert all(bool(torch.isfinite(p).all()) for p in load_checkpoint(out)[0].parameters())

    monkeypatch.setattr(trainer, "separation_loss", lambda *args, **kwargs: real_loss(*args, **kwargs) * float("nan"))
    with pytest.raises(ConfigError, match=r"diverged at step 0 \(20 batches in a row"):
        train(data, tmp_path / "d.safetensors", TrainConfig(epochs=1, steps_per_epoch=30, batch_size=1,
                                                            segment_s=0.5), model_config=TINY, device="cpu")


def test_training_can_deepen_the_network_it_starts_from(data: Path, tmp_path: Path) -> None:
    """``init`` + ``deepen``: the run starts from the checkpoint's function with more layers, and its
    checkpoint records them; without ``init`` there is nothing to deepen."""
    start = save_checkpoint(tmp_path / "start.safetensors", _tiny(seed=2))
    out = tmp_path / "deeper.safetensors"
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, segment_s=1.0)
    train(data, out, config, device="cpu", init=start, deepen=(4,))
    net, _ = load_checkpoint(out)
    assert net.config.n_layers == TINY.n_layers + 1 and net.config.dilations == (*TINY.dilations, 4)
    with pytest.raises(ConfigError, match="init"):
        train(data, tmp_path / "x.safetensors", config, model_config=TINY, device="cpu", deepen=(4,))


def test_deepened_network_computes_what_the_trained_one_did_and_can_learn() -> None:
    """Identity blocks appended to a network leave its masks unchanged, and get gradients at once."""
    from filmrestore.separation.training.grow import deepen

    net = _tiny(seed=4).eval()
    with torch.no_grad():  # a net whose blocks all do something, as a trained one's do
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    grown = deepen(net, dilations=(4, 1))
    assert grown.config.n_layers == 4 and grown.config.dilations == (1, 2, 4, 1)
    spec = torch.randn(2, TINY.n_fft // 2 + 1, 30, dtype=torch.complex64)
    with torch.no_grad():
        torch.testing.assert_close(grown(spec), net(spec), atol=1e-6, rtol=1e-5)
    grown.train()
    grown(spec)[:, 0].square().mean().backward()
    assert grown.time_blocks[3].mlp[2].weight.grad.abs().sum() > 0
    assert grown.band_blocks[2].w2.grad.abs().sum() > 0
