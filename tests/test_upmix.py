"""Upmix: layouts, panner, plan, scene renderer (placement, LFE, streaming, fold-down, moving objects)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from filmrestore.errors import ConfigError, PlanError
from filmrestore.upmix.foldown import OCTAVE_CENTRES_HZ, fold_down, fold_down_matrix, octave_band_levels_db
from filmrestore.layouts import BED_7_1_4, LAYOUTS, get_layout
from filmrestore.upmix.panner import cart, panner_for, point_source_gains
from filmrestore.upmix.plan import (EVENT_FEEDS, Block, ImageAnalysis, ObjectPlan, load_plan, make_plan,
                                    moving_pair_blocks, validate_plan)
from filmrestore.upmix.render import INPUTS, SceneRenderer, object_segments, render_bed

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
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def _mix(stems: dict[str, np.ndarray]) -> np.ndarray:
    """The stereo programme the stems came from (mono at -3 dB per side)."""
    pairs = [s if s.shape[0] == 2 else np.vstack([s[0], s[0]]) * np.sqrt(0.5) for s in stems.values()]
    return np.sum(pairs, axis=0)


# ----------------------------------------------------------------------------- layouts and panner

def test_7_1_4_layout_data() -> None:
    bed = get_layout("7.1.4")
    assert bed is BED_7_1_4 and bed.n_channels == 12 and bed.channel_mask == 0x2D63F
    assert bed.labels == ("M+030", "M-030", "M+000", "LFE1", "M+135", "M-135", "M+090", "M-090",
                          "U+045", "U-045", "U+135", "U-135")
    assert bed.wave_names == ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR", "TFL", "TFR", "TBL", "TBR")
    assert get_layout("5.1.2").channel_mask == 0x503F and get_layout("5.1.4").channel_mask == 0x2D03F
    assert get_layout("22.2").channel_mask is None and get_layout("22.2").n_channels == 24
    with pytest.raises(ConfigError, match="unknown speaker layout"):
        get_layout("3+7+0")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_is_consistent(name: str) -> None:
    layout = get_layout(name)
    assert len(set(layout.labels)) == layout.n_channels
    for spk in layout.speakers:  # BS.2051 labels encode the nominal direction
        if not spk.is_lfe and spk.label[1:].lstrip("+-").isdigit():
            assert abs(spk.azimuth_deg) == float(spk.label[2:]) or spk.label == "T+000"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_panner_puts_a_source_at_a_speaker_on_that_speaker(name: str) -> None:
    layout = get_layout(name)
    for i, spk in enumerate(layout.speakers):
        if spk.is_lfe or name == "0+2+0":
            continue
        gains = point_source_gains(layout, spk.azimuth_deg, spk.elevation_deg)
        assert gains[i] == pytest.approx(1.0, abs=1e-9), spk.label


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_panner_gains_are_power_normalised_and_cover_the_sphere(name: str) -> None:
    rng = np.random.default_rng(5)
    azimuths, elevations = rng.uniform(-180, 180, 200), np.degrees(np.arcsin(rng.uniform(-1, 1, 200)))
    panner = panner_for(name)
    for az, el in zip(azimuths, elevations):
        gains = panner.gains(cart(az, el))
        assert np.all(gains >= 0)
        if name != "0+2+0":  # the stereo panner falls to -3 dB towards the back by design
            assert np.linalg.norm(gains) == pytest.approx(1.0, abs=1e-9)


def test_panner_velocity_vector_points_at_the_source() -> None:
    """VBAP's defining property inside a triangle: the gain-weighted speaker vectors point at the source."""
    layout = BED_7_1_4
    positions = cart(np.array([s.azimuth_deg for s in layout.non_lfe]), np.array([s.elevation_deg for s in layout.non_lfe]))
    for az, el in ((15.0, 0.0), (-60.0, 10.0), (100.0, 20.0), (170.0, 5.0)):
        gains = panner_for("4+7+0").gains(cart(az, el))
        direction = gains @ positions
        assert np.dot(direction / np.linalg.norm(direction), cart(az, el)) > 0.99


# ----------------------------------------------------------------------------- plan

def test_default_plan_places_dialogue_music_effects() -> None:
    plan = make_plan(FS, 10 * FS)
    by_feed = {o.feed: o for o in plan.objects}
    assert set(by_feed) == set(INPUTS) - set(EVENT_FEEDS)  # no events found: no event objects
    assert by_feed["dialogue"].blocks[0].azimuth_deg == 0.0
    assert (by_feed["music.L"].blocks[0].azimuth_deg, by_feed["music.R"].blocks[0].azimuth_deg) == (30.0, -30.0)
    assert all(o.is_static for o in plan.objects)  # no ILD analysis: nothing moves
    validate_plan(plan)


def test_effects_pair_follows_the_interchannel_level_difference() -> None:
    n = 8 * FS
    rng = np.random.default_rng(2)
    pan = np.clip(np.linspace(-0.25, 1.25, n), 0, 1)  # hard left -> hard right
    effects = (0.1 * rng.standard_normal(n) * np.vstack([np.cos(pan * np.pi / 2), np.sin(pan * np.pi / 2)]))
    analysis = ImageAnalysis(FS)
    for start in range(0, n, 33_333):  # odd block sizes: the analysis streams
        analysis.process(effects[:, start:start + 33_333])
    plan = make_plan(FS, n, effects_ild_db=analysis.ild_db())
    left = next(o for o in plan.objects if o.feed == "effects.L")
    azimuths = [b.azimuth_deg for b in left.blocks]
    assert azimuths[0] > 40 and azimuths[-1] < 20  # pushed out while panned left, back in as it goes right
    assert np.all(np.diff(azimuths) <= 0) and not left.is_static
    assert left.blocks[-1].end_s == pytest.approx(8.0) and any(b.jump for b in left.blocks)
    validate_plan(plan)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["objects"][0].update(feed="choir"), "feed 'choir'"),
    (lambda d: d.update(stems=["dialogue", "music"]), "effects stem, which this title does not have"),
    (lambda d: d["objects"][0]["blocks"][0].update(azimuth_deg=float("nan")), "azimuth_deg = nan"),
    (lambda d: d["objects"][1]["blocks"][0].update(elevation_deg=95.0), "elevation_deg = 95.0 is outside"),
    (lambda d: d["objects"][2]["blocks"][0].update(duration_s=1.0), "blocks end at 1.00000 s"),
    (lambda d: d["objects"][0].update(name="Music L"), "object names repeat"),
])
def test_bad_plans_fail_with_one_clear_error(tmp_path: Path, edit, message: str) -> None:
    d = make_plan(FS, 4 * FS).to_dict()
    edit(d)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=message) as err:
        load_plan(path)
    assert str(path) in str(err.value)


def test_too_many_objects_is_refused() -> None:
    plan = make_plan(FS, FS)
    many = replace(plan, objects=tuple(replace(plan.objects[0], name=f"o{i}") for i in range(120)))
    with pytest.raises(PlanError, match="120 objects, more than the 118 allowed"):
        validate_plan(many, max_objects=118)


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    n = 3 * FS
    plan = make_plan(FS, n, effects_ild_db=[12.0, 12.0, 0.0, -12.0, -12.0, -12.0])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    again = load_plan(path)
    assert again.content_digest() == plan.content_digest() and again.to_dict() == plan.to_dict()


# ----------------------------------------------------------------------------- renderer

def test_dialogue_lands_in_centre() -> None:
    speech = _pink(1, FS, seed=1)
    renderer = SceneRenderer(FS, 1)
    # The centre path is an all-pass (phase-matched to the fronts): render its ring-out too.
    bed = np.hstack([renderer.process({"dialogue": speech}).mix,
                     renderer.process({"dialogue": np.zeros_like(speech)}).mix])
    centre = _energy(bed[BED_7_1_4.index("M+000")])
    assert centre / _energy(bed) > 0.99
    assert centre == pytest.approx(_energy(speech), rel=1e-3)


@pytest.mark.parametrize("tone_hz, expect_lfe", [(1000.0, False), (40.0, True)])
@pytest.mark.parametrize("stem", ["music", "effects"])
def test_lfe_carries_only_the_low_band_of_music_and_effects(tone_hz: float, expect_lfe: bool, stem: str) -> None:
    t_s = np.arange(FS) / FS
    tone = (0.5 * np.sin(2 * np.pi * tone_hz * t_s)).astype(np.float32)[None, :]
    bed = SceneRenderer(FS, 1).process({stem: tone}).mix
    steady = slice(FS // 4, None)  # past the filters' onset
    lfe_rel_db = 10 * np.log10(_energy(bed[3, steady]) / _energy(tone[0, steady]))
    if expect_lfe:
        assert -13.0 < lfe_rel_db < -7.0  # the -10 dB LFE send of an in-band tone
    else:
        assert lfe_rel_db < -40.0


def _moving_plan(n_frames: int) -> object:
    """Dialogue static; effects L sweeping round the left with ramps and a jump."""
    plan = make_plan(FS, n_frames)
    duration_s = n_frames / FS
    third = round(duration_s / 3, 2)
    sweep = ObjectPlan("Effects L", "effects.L", (
        Block(0.0, third, 30.0, 0.0), Block(third, third, 110.0, 20.0),
        Block(2 * third, round(duration_s - 2 * third, 5), -150.0, 0.0, 0.7, jump=True)))
    return replace(plan, objects=tuple(sweep if o.feed == "effects.L" else o for o in plan.objects))


@pytest.mark.parametrize("n_input_channels", [1, 2])
def test_block_wise_equals_whole(n_input_channels: int) -> None:
    rng = np.random.default_rng(7)
    n_frames = FS
    stems = {name: _pink(n_input_channels, n_frames, seed=i) for i, name in enumerate(("dialogue", "music", "effects"))}
    plan = _moving_plan(n_frames)
    whole = SceneRenderer(FS, n_input_channels, plan).process(stems)
    renderer = SceneRenderer(FS, n_input_channels, plan)
    parts, start = [], 0
    while start < n_frames:
        size = int(rng.integers(1, 20_000))
        parts.append(renderer.process({k: v[:, start:start + size] for k, v in stems.items()}))
        start += size
    for field in ("mix", "bed", "feeds"):
        blocks = np.concatenate([getattr(p, field) for p in parts], axis=1)
        np.testing.assert_allclose(blocks, getattr(whole, field), atol=2e-6)


def test_moving_object_gains_follow_the_adm_timing_rules() -> None:
    """Block 2 ramps from block 1's gains over its whole duration; block 3 jumps at its start."""
    obj = _moving_plan(3 * FS).objects[3]
    segments = object_segments(obj, BED_7_1_4, FS)
    assert [(s.first, s.last, s.gains_from is not None) for s in segments] == [
        (0, FS, False), (FS, 2 * FS, True), (2 * FS, 3 * FS, False)]
    feed = np.ones(3 * FS, np.float32)
    mix = np.zeros((12, 3 * FS), np.float32)
    from filmrestore.upmix.render import _ObjectPanner

    _ObjectPanner(obj, BED_7_1_4, FS).add(feed, 0, mix)
    at_start, mid_ramp, after_jump = mix[:, 10], mix[:, FS + FS // 2], mix[:, 2 * FS + 1]
    assert at_start[BED_7_1_4.index("M+030")] == pytest.approx(1.0)
    expected = 0.5 * (point_source_gains(BED_7_1_4, 30, 0) + point_source_gains(BED_7_1_4, 110, 20))
    np.testing.assert_allclose(mid_ramp, expected, atol=1e-4)
    np.testing.assert_allclose(after_jump, 0.7 * point_source_gains(BED_7_1_4, -150, 0), atol=1e-6)


@pytest.mark.parametrize("n_frames", [10 * FS + 123, 8192, 9001])
def test_streaming_octave_levels_match_scipy_welch(n_frames: int) -> None:
    """The streaming fold-down check's batched PSD (no overlap) is scipy's Welch estimate."""
    import scipy.signal

    x = _pink(2, n_frames, seed=21) * np.linspace(0.2, 1.0, n_frames, dtype=np.float32)
    ours = octave_band_levels_db(x, FS, overlap=0.0)
    freqs_hz, psd = scipy.signal.welch(x.astype(np.float64), fs=FS, nperseg=min(n_frames, 8192), noverlap=0,
                                       detrend=False, axis=-1)
    for k, fc in enumerate(OCTAVE_CENTRES_HZ):
        band = (freqs_hz >= fc / np.sqrt(2.0)) & (freqs_hz < fc * np.sqrt(2.0))
        np.testing.assert_allclose(ours[:, k], 10.0 * np.log10(psd[:, band].sum(axis=-1)), atol=0.01)


@pytest.mark.parametrize("n_input_channels", [1, 2])
def test_stereo_and_5_1_fold_down_match_mix_per_octave(n_input_channels: int) -> None:
    n_frames = 6 * FS
    stems = {
        "dialogue": _pink(1, n_frames, seed=11),
        "music": _pink(n_input_channels, n_frames, seed=12),
        "effects": _pink(n_input_channels, n_frames, seed=13),
    }
    if n_input_channels == 2:  # a centre-panned dialogue in a stereo programme
        stems["dialogue"] = np.vstack([stems["dialogue"]] * 2) * np.float32(np.sqrt(0.5))
    bed = render_bed(stems, FS)
    mix_db = octave_band_levels_db(_mix(stems), FS)
    deviation_db = octave_band_levels_db(fold_down(bed), FS) - mix_db
    assert np.max(np.abs(deviation_db)) < 1.0, deviation_db
    # 5.1 (LFE left out), folded on to stereo with BS.775: the same programme within 1 dB per band.
    five = fold_down(bed, "5.1")
    five[3] = 0.0
    stereo_via_5_1 = fold_down(five, "stereo", get_layout("5.1"))
    deviation_db = octave_band_levels_db(stereo_via_5_1, FS) - mix_db
    assert np.max(np.abs(deviation_db)) < 1.0, deviation_db


_FOLD_IN_A_PROCESS = """
import hashlib, sys
import numpy as np
from filmrestore.upmix.foldown import fold_down
bed = np.random.default_rng(0).standard_normal((12, 480_000)).astype(np.float32)
print(hashlib.sha256(fold_down(bed, "5.1").tobytes() + fold_down(bed, "stereo").tobytes()).hexdigest())
"""


def test_fold_downs_are_the_same_bits_whatever_threads_blas_has() -> None:
    """The render writes the 5.1 fold-down on its writer thread while the main thread may be in
    BLAS; a BLAS product rounds differently with one thread or two (a re-run's fold-down differed
    in its last bits). The fold-down is the same bits on one BLAS thread and on two, and is
    the matrix product to float32 rounding."""
    import os
    import subprocess
    import sys

    blas_threads = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    digests = {subprocess.run([sys.executable, "-c", _FOLD_IN_A_PROCESS], capture_output=True, text=True, check=True,
                              env={**os.environ, **dict.fromkeys(blas_threads, threads)}).stdout
               for threads in ("1", "2")}
    assert len(digests) == 1, digests
    bed = np.random.default_rng(1).standard_normal((12, 4800)).astype(np.float32)
    for target in ("5.1", "stereo"):
        np.testing.assert_allclose(fold_down(bed, target), fold_down_matrix(target) @ bed.astype(np.float64),
                                   atol=1e-5)


@pytest.mark.parametrize("stem", ["music", "effects"])
def test_ambience_is_decorrelated_from_front(stem: str) -> None:
    bed = SceneRenderer(FS, 1).process({stem: _pink(1, 4 * FS, seed=21)}).mix
    front = BED_7_1_4.index("M+030")
    ambience = ["M+090", "M+135", "U+045", "U+135"] if stem == "music" else ["M+090", "M+135", "U+135"]
    for label in ambience:
        index = BED_7_1_4.index(label)
        assert _energy(bed[index]) > 0.01 * _energy(bed[front])  # the send is really there
        assert abs(_corr(bed[front], bed[index])) < 0.3, (label, _corr(bed[front], bed[index]))
    assert abs(_corr(bed[BED_7_1_4.index("M+090")], bed[BED_7_1_4.index("M-090")])) < 0.3


def test_fold_down_matrices_follow_bs775() -> None:
    left = dict(zip(BED_7_1_4.labels, fold_down_matrix("stereo")[0]))
    assert left["M+030"] == 1.0 and left["M-030"] == 0.0 and left["LFE1"] == 0.0
    for label in ("M+000", "M+090", "M+135", "U+045", "U+135"):
        assert left[label] == pytest.approx(10 ** (-3.0103 / 20), abs=1e-4)
    assert fold_down_matrix("5.1").shape == (6, 12) and fold_down_matrix("5.1")[3, 3] == 1.0


def test_inputs_are_validated() -> None:
    with pytest.raises(ConfigError, match="16 channels"):
        SceneRenderer(FS, 16)
    with pytest.raises(ConfigError, match="no source layout of 7 channels"):
        SceneRenderer(FS, 7)
    from filmrestore.layouts import get_layout

    with pytest.raises(ConfigError, match="not 5.1"):
        SceneRenderer(FS, 8, source=get_layout("5.1"))
    with pytest.raises(ValueError, match="one length"):
        SceneRenderer(FS, 1).process({"music": np.zeros((1, 10)), "effects": np.zeros((1, 11))})
    with pytest.raises(ConfigError, match="music_ambience_gain_db"):
        from filmrestore.upmix.plan import BedRules

        BedRules(music_ambience_gain_db=0.0)


def test_moving_pair_blocks_cover_the_programme() -> None:
    blocks = moving_pair_blocks([20.0] * 3 + [-20.0] * 3, 2.9, "R")
    assert blocks[0].start_s == 0.0 and blocks[-1].end_s == pytest.approx(2.9)
    assert all(abs(a.end_s - b.start_s) < 1e-9 for a, b in zip(blocks, blocks[1:]))


def test_shipped_decorrelator_designs_equal_a_fresh_design() -> None:
    """data/decorrelators.npz holds what the optimiser designs for the default bed at 48 kHz.

    Not bit for bit: L-BFGS in another CPU's BLAS rounds differently (seen: every tap differs,
    by up to 2e-3 against taps up to 0.15), so the shipped taps must agree with a fresh design
    to 3 % of the largest tap, in energy response to 0.1 dB, and the front gain to 0.1 %.

    Regenerate after changing the design (and bump DESIGN_VERSION):
    ``python -c "from filmrestore.upmix.decorrelate import save_designs, SHIPPED_DESIGNS;
    from filmrestore.upmix.render import decorrelator_parameters; from filmrestore.upmix.plan import BedRules;
    save_designs(SHIPPED_DESIGNS, decorrelator_parameters(BedRules(), 48000))"``
    """
    from filmrestore.upmix.decorrelate import _shipped_designs, design_key, optimise_side_decorrelators
    from filmrestore.upmix.plan import BedRules
    from filmrestore.upmix.render import decorrelator_parameters

    shipped = _shipped_designs()
    params = decorrelator_parameters(BedRules(), 48000)
    assert sorted(shipped) == sorted(design_key(*p) for p in params), "regenerate data/decorrelators.npz"
    for p in params:
        firs, front_gain = optimise_side_decorrelators(*p)
        stored, stored_gain = shipped[design_key(*p)]
        np.testing.assert_allclose(stored, firs, rtol=0, atol=0.03 * np.abs(firs).max())
        power = [np.abs(np.fft.rfft(f, 4096, axis=-1)) ** 2 for f in (stored, firs)]
        smooth = [np.convolve(q.mean(0), np.ones(64) / 64, "valid") for q in power]
        np.testing.assert_allclose(10 * np.log10(smooth[0] / smooth[1]), 0.0, atol=0.1)
        assert stored_gain == pytest.approx(front_gain, rel=1e-3)


def test_other_bed_rules_are_designed_afresh() -> None:
    """Parameters without a shipped design still get a design (not the default's)."""
    from filmrestore.upmix.decorrelate import _shipped_designs, design_key, design_side_decorrelators
    from filmrestore.upmix.plan import BedRules
    from filmrestore.upmix.render import decorrelator_parameters

    params = decorrelator_parameters(BedRules(seed=7), 48000)[0]
    assert design_key(*params) not in _shipped_designs()
    firs, front_gain = design_side_decorrelators(*params)
    assert firs.shape == (len(params[0]), params[2]) and 0.0 < front_gain < 1.0


@pytest.mark.parametrize("layout", ["3.0", "quad(side)", "5.0", "0+5+0", "5.1(side)", "0+7+0", "4+7+0"])
def test_a_multichannel_source_plays_in_place_and_folds_down_exactly(layout: str) -> None:
    """Each source channel is the bed channel at its position, sample for sample (dialogue of the
    centre as the dialogue object, panned to the centre speaker); the ambience added at the
    missing positions cancels in the stereo fold-down, which equals the source's to float32
    rounding; block-wise equals whole."""
    from filmrestore.layouts import get_layout
    from filmrestore.upmix.foldown import downmix_to_stereo, fold_down
    from filmrestore.upmix.render import SourceRouting

    source = get_layout(layout)
    n_frames = 3 * FS
    stems = {name: _pink(source.n_channels, n_frames, seed=30 + i) for i, name in enumerate(("dialogue", "music",
                                                                                               "effects"))}
    if "M+000" not in source.labels:  # dialogue of a source without a centre: in the front pair, centred
        stems["dialogue"][1] = stems["dialogue"][0]
        stems["dialogue"][2:] = 0.0
    whole = SceneRenderer(FS, source.n_channels, source=source).process(stems)
    renderer = SceneRenderer(FS, source.n_channels, source=source)
    parts = [renderer.process({k: v[:, a:a + 50_000] for k, v in stems.items()}) for a in range(0, n_frames, 50_000)]
    np.testing.assert_allclose(np.hstack([p.mix for p in parts]), whole.mix, atol=1e-6)
    total = sum(stems.values())
    for c, b in SourceRouting.of(source).kept:
        if "M+000" in source.labels or source.labels[c] not in ("M+030", "M-030"):
            np.testing.assert_allclose(whole.mix[b], total[c], atol=2e-6, err_msg=source.labels[c])
    np.testing.assert_allclose(fold_down(whole.mix, "stereo"), downmix_to_stereo(total, source), atol=2e-6)
    missing = [label for label in BED_7_1_4.labels if label not in {BED_7_1_4.labels[b] for _, b in
                                                                      SourceRouting.of(source).kept}]
    for label in missing:  # filled with ambience (LFE1 with the low band of a source without one)
        level = np.sqrt(np.mean(whole.mix[BED_7_1_4.index(label)] ** 2)) / np.sqrt(np.mean(total[0] ** 2))
        assert 10 ** (-30 / 20) < level < 1.0, (label, level)


def test_object_width_spreads_power_normalised_gains() -> None:
    from filmrestore.upmix.extent import extent_gains
    from filmrestore.upmix.panner import point_source_gains

    np.testing.assert_array_equal(extent_gains(BED_7_1_4, 20.0, 0.0, 0.0), point_source_gains(BED_7_1_4, 20.0, 0.0))
    spread = [np.count_nonzero(extent_gains(BED_7_1_4, 0.0, 0.0, w) > 1e-3) for w in (0.0, 5.0, 40.0, 120.0, 360.0)]
    assert spread == sorted(spread) and spread[0] == 1 and spread[-1] == BED_7_1_4.n_channels - 1  # all but LFE
    for w in (5.0, 40.0, 360.0):
        assert np.sum(extent_gains(BED_7_1_4, 45.0, 30.0, w) ** 2) == pytest.approx(1.0)


def test_the_renderer_gives_the_same_mix_on_one_or_two_fft_threads() -> None:
    # Not bit for bit: which transforms share a SIMD pass depends on the split and the CPU.
    rng = np.random.default_rng(8)
    stems = {k: (0.1 * rng.standard_normal((2, 3 * FS))).astype(np.float32) for k in ("dialogue", "music", "effects")}
    plan = make_plan(FS, 3 * FS)
    one, two = (SceneRenderer(FS, 2, plan, workers=w).process(stems).mix for w in (1, 2))
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-6)
