"""7.1.4 bed: layouts, placement, LFE crossover, streaming, fold-down compatibility."""

from __future__ import annotations

import numpy as np
import pytest

from filmrestore.errors import ConfigError
from filmrestore.upmix.foldown import fold_down, fold_down_matrix, octave_band_levels_db
from filmrestore.upmix.layouts import BED_7_1_4, get_layout
from filmrestore.upmix.render import BedRenderer, UpmixParams

FS = 48_000


def _pink(n_channels: int, n_frames: int, seed: int, rms: float = 0.05) -> np.ndarray:
    """Pink noise (1/f power) made in the frequency domain. [shape=(n_channels, n_frames)]"""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal((n_channels, n_frames)), axis=1)
    freqs_hz = np.fft.rfftfreq(n_frames, 1.0 / FS)
    spectrum[:, 0] = 0.0
    spectrum[:, 1:] /= np.sqrt(freqs_hz[1:])
    x = np.fft.irfft(spectrum, n_frames, axis=1)
    return (rms * x / x.std(axis=1, keepdims=True)).astype(np.float32)


def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-lag normalised correlation of two signals."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def _mix(stems: dict[str, np.ndarray]) -> np.ndarray:
    """The stereo programme the stems came from (mono at -3 dB per side)."""
    pairs = [s if s.shape[0] == 2 else np.vstack([s[0], s[0]]) * np.sqrt(0.5) for s in stems.values()]
    return np.sum(pairs, axis=0)


def test_layouts_data() -> None:
    bed = get_layout("7.1.4")
    assert bed is BED_7_1_4 and bed.n_channels == 12
    assert bed.channel_mask == 0x2D63F
    assert bed.labels == ("M+030", "M-030", "M+000", "LFE1", "M+135", "M-135", "M+090", "M-090",
                          "U+045", "U-045", "U+135", "U-135")
    assert bed.wave_names == ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR", "TFL", "TFR", "TBL", "TBR")
    assert bed.lfe_indices == (3,)
    assert bed.speakers[bed.index("U-135")].elevation_deg == 30.0
    assert get_layout("stereo").channel_mask == 0x3 and get_layout("5.1").channel_mask == 0x3F
    with pytest.raises(ConfigError, match="9\\+10\\+3"):
        get_layout("9+10+3")


def test_fold_down_matrices_follow_bs775() -> None:
    stereo = fold_down_matrix("stereo")
    left = dict(zip(BED_7_1_4.labels, stereo[0]))
    assert left["M+030"] == 1.0 and left["M-030"] == 0.0 and left["LFE1"] == 0.0
    for label in ("M+000", "M+090", "M+135", "U+045", "U+135"):
        assert left[label] == pytest.approx(10 ** (-3.0103 / 20), abs=1e-4)
    five_one = fold_down_matrix("5.1")
    assert five_one.shape == (6, 12) and five_one[3, 3] == 1.0  # LFE kept in 5.1
    assert fold_down(np.ones((12, 5), np.float32), "5.1").shape == (6, 5)


def test_dialogue_lands_in_centre() -> None:
    speech = _pink(1, FS, seed=1)
    renderer = BedRenderer(FS, 1)
    # The centre path is an all-pass (phase-matched to the fronts): render its ring-out too.
    bed = np.hstack([renderer.process({"dialogue": speech}),
                     renderer.process({"dialogue": np.zeros_like(speech)})])
    centre = _energy(bed[BED_7_1_4.index("M+000")])
    assert centre / _energy(bed) > 0.95
    assert centre == pytest.approx(_energy(speech), rel=1e-3)


@pytest.mark.parametrize("tone_hz, expect_lfe", [(1000.0, False), (40.0, True)])
def test_lfe_carries_only_low_band(tone_hz: float, expect_lfe: bool) -> None:
    t_s = np.arange(FS) / FS
    tone = (0.5 * np.sin(2 * np.pi * tone_hz * t_s)).astype(np.float32)[None, :]
    bed = BedRenderer(FS, 1).process({"effects": tone})
    steady = slice(FS // 4, None)  # past the filters' onset
    lfe_rel_db = 10 * np.log10(_energy(bed[3, steady]) / _energy(tone[0, steady]))
    if expect_lfe:
        assert lfe_rel_db > -13.0  # the -10 dB LFE send of an in-band tone
    else:
        assert lfe_rel_db < -40.0


@pytest.mark.parametrize("n_input_channels", [1, 2])
def test_block_wise_equals_whole(n_input_channels: int) -> None:
    rng = np.random.default_rng(7)
    n_frames = FS // 2
    stems = {name: _pink(n_input_channels, n_frames, seed=i) for i, name in enumerate(("dialogue", "music", "effects"))}
    whole = BedRenderer(FS, n_input_channels).process(stems)
    renderer = BedRenderer(FS, n_input_channels)
    blocks, start = [], 0
    while start < n_frames:
        size = int(rng.integers(1, 6000))
        blocks.append(renderer.process({k: v[:, start:start + size] for k, v in stems.items()}))
        start += size
    blocks.append(renderer.flush())
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), whole, atol=1e-6)


@pytest.mark.parametrize("n_input_channels", [1, 2])
def test_stereo_fold_down_matches_mix_per_octave(n_input_channels: int) -> None:
    n_frames = 6 * FS
    stems = {
        "dialogue": _pink(1, n_frames, seed=11),
        "music": _pink(n_input_channels, n_frames, seed=12),
        "effects": _pink(n_input_channels, n_frames, seed=13),
    }
    if n_input_channels == 2:  # a centre-panned dialogue in a stereo programme
        stems["dialogue"] = np.vstack([stems["dialogue"]] * 2) * np.float32(np.sqrt(0.5))
    bed = BedRenderer(FS, n_input_channels).process(stems)
    deviation_db = octave_band_levels_db(fold_down(bed), FS) - octave_band_levels_db(_mix(stems), FS)
    assert np.max(np.abs(deviation_db)) < 1.0, deviation_db


@pytest.mark.parametrize("stem", ["music", "effects"])
def test_ambience_is_decorrelated_from_front(stem: str) -> None:
    bed = BedRenderer(FS, 1).process({stem: _pink(1, 4 * FS, seed=21)})
    front = BED_7_1_4.index("M+030")
    ambience = ["M+090", "M+135", "U+045", "U+135"] if stem == "music" else ["M+090", "M+135"]
    for label in ambience:
        index = BED_7_1_4.index(label)
        assert _energy(bed[index]) > 0.01 * _energy(bed[front])  # the send is really there
        assert abs(_corr(bed[front], bed[index])) < 0.3, (label, _corr(bed[front], bed[index]))
    # Left and right ambience differ too (mono source, independent decorrelators).
    assert abs(_corr(bed[BED_7_1_4.index("M+090")], bed[BED_7_1_4.index("M-090")])) < 0.3


def test_params_and_inputs_are_validated() -> None:
    with pytest.raises(ConfigError, match="music_ambience_gain_db"):
        UpmixParams(music_ambience_gain_db=0.0)
    with pytest.raises(ConfigError, match="3 channels"):
        BedRenderer(FS, 3)
    with pytest.raises(ValueError, match="one length"):
        BedRenderer(FS, 1).process({"music": np.zeros((1, 10)), "effects": np.zeros((1, 11))})
