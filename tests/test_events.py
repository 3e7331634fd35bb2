"""Effect events: found where the effects burst, made a pair of objects that play them, split from
the ambience without changing the stereo fold-down, and rendered back by the EBU ADM renderer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from filmrestore.upmix.events import EventDetector, find_events
from filmrestore.upmix.foldown import downmix_to_stereo
from filmrestore.upmix.plan import EVENT_FEEDS, make_plan, validate_plan
from filmrestore.upmix.render import INPUTS, SceneRenderer

FS = 48_000
BURSTS = ((2.0, (1.0, 0.0)), (4.5, (0.7, 0.7)), (7.25, (0.0, 1.0)), (9.5, (0.7, 0.7)))  # (start s, (L, R))


def _effects(n_frames: int, seed: int = 5) -> np.ndarray:
    """Stereo effects: a quiet uncorrelated ambience and four decaying noise bursts, hard left,
    centre, hard right and centre again."""
    rng = np.random.default_rng(seed)
    x = 0.004 * rng.standard_normal((2, n_frames))
    for start_s, (left, right) in BURSTS:
        k, n = int(start_s * FS), int(0.4 * FS)
        burst = 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.1 * FS))
        x[:, k:k + n] += np.outer([left, right], burst)
    return x.astype(np.float32)


def test_events_are_found_where_the_effects_burst_and_stream_alike() -> None:
    x = _effects(12 * FS)
    detector = EventDetector(FS)
    for start in range(0, x.shape[1], 33_333):  # odd blocks: the same as the whole
        detector.process(x[:, start:start + 33_333])
    events = detector.events()
    whole = EventDetector(FS)
    whole.process(x)
    assert events == whole.events()
    assert len(events) == len(BURSTS)
    for event, (start_s, (left, right)) in zip(events, BURSTS):
        assert start_s - 0.05 <= event.start_s <= start_s + 0.01 and event.end_s > start_s + 0.15
        assert (event.ild_db > 15) if right == 0 else (event.ild_db < -15) if left == 0 else abs(event.ild_db) < 1
    # Steady noise has no events; neither has silence.
    assert find_events(np.full(1000, 1e-4), np.full(1000, 1e-4)) == []
    assert find_events(np.zeros(1000), np.zeros(1000)) == []


def test_events_become_a_pair_of_objects_that_play_only_the_events() -> None:
    n = 12 * FS
    detector = EventDetector(FS)
    detector.process(_effects(n))
    plan = make_plan(FS, n, events=detector.events())
    validate_plan(plan)
    objects = {o.feed: o for o in plan.objects if o.feed in EVENT_FEEDS}
    assert sorted(objects) == ["effects.events.L", "effects.events.R"]
    playing = {feed: [b.start_s for b in o.blocks if b.gain > 0] for feed, o in objects.items()}
    assert playing["effects.events.L"] == playing["effects.events.R"]
    assert [round(t, 1) for t in playing["effects.events.L"]] == [2.0, 4.5, 7.2, 9.5]
    assert [o.blocks[0].azimuth_deg for o in objects.values()] == [30.0, -30.0]
    assert all(b.jump and b.interpolation_s == pytest.approx(0.01) for o in objects.values() for b in o.blocks[1:])


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_event_objects_leave_the_stereo_fold_down_as_it_was(channels: int) -> None:
    """Ambience plus events is the effects stem: the 7.1.4 mix folds down to the same stereo
    levels as without event objects, over the whole and inside each event."""
    n = 12 * FS
    stereo = _effects(n)
    effects = stereo if channels == 2 else stereo[:1] + stereo[1:]  # mono: the sides summed
    detector = EventDetector(FS)
    detector.process(effects)
    events = detector.events()
    quiet = np.zeros_like(effects)
    stems = {"dialogue": quiet, "music": quiet, "effects": effects}
    with_events = make_plan(FS, n, events=events)
    assert sum(o.feed in EVENT_FEEDS for o in with_events.objects) == 2
    folds = [downmix_to_stereo(SceneRenderer(FS, channels, plan).process(stems).mix).astype(np.float64)
             for plan in (with_events, make_plan(FS, n))]
    total = [10 * np.log10(np.sum(f**2)) for f in folds]
    assert abs(total[0] - total[1]) < 0.1
    for event in events:
        span = slice(int(event.start_s * FS), int(event.end_s * FS))
        inside = [10 * np.log10(np.sum(f[:, span] ** 2)) for f in folds]
        assert abs(inside[0] - inside[1]) < 0.3, (event, inside)
    feeds = SceneRenderer(FS, channels, with_events).process(stems).feeds
    before_the_first = slice(0, int((events[0].start_s - 0.05) * FS))
    rows = [INPUTS.index(feed) for feed in EVENT_FEEDS]
    assert np.max(np.abs(feeds[rows][:, before_the_first])) == 0.0  # an event track is silent between its events


@pytest.mark.ear
def test_ear_renders_a_scene_with_event_objects_back(tmp_path: Path) -> None:
    import ear_env

    from filmrestore.layouts import BED_7_1_4
    from filmrestore.upmix.adm import AdmSceneWriter, check_adm_file, get_profile, scene_for

    n = 12 * FS
    rng = np.random.default_rng(1)
    stems = {"dialogue": (0.02 * rng.standard_normal((2, n))).astype(np.float32),
             "music": (0.02 * rng.standard_normal((2, n))).astype(np.float32), "effects": _effects(n)}
    detector = EventDetector(FS)
    detector.process(stems["effects"])
    plan = make_plan(FS, n, events=detector.events())
    scene = scene_for(plan, get_profile("ebu"))
    renderer = SceneRenderer(FS, 2, plan)
    ours = []
    with AdmSceneWriter(tmp_path / "adm.wav", scene, "Events") as writer:
        for start in range(0, n, 100_000):
            rendered = renderer.process({k: v[:, start:start + 100_000] for k, v in stems.items()})
            writer.write(rendered.bed, rendered.feeds)
            ours.append(rendered.mix)
        writer.close()
    ours = np.concatenate(ours, axis=1)
    assert check_adm_file(tmp_path / "adm.wav", "ebu") == []
    assert b"Effects events L" in (tmp_path / "adm.wav").read_bytes()
    theirs = ear_env.render_in_wav_order(tmp_path / "adm.wav", tmp_path / "out.wav")
    with np.errstate(divide="ignore"):
        diff_db = [10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(b.astype(np.float64) ** 2))
                   for a, b in zip(theirs, ours) if np.any(b)]
    assert max(abs(d) for d in diff_db) < 1.0, dict(zip(BED_7_1_4.labels, diff_db))
    assert np.max(np.abs(theirs - ours)) < 1e-3


def test_the_ambience_keeps_its_level_under_an_event() -> None:
    """An event object takes its event's share of the effects, not all of them: the surrounds,
    which play the effects' ambience, keep about the background's level under each event
    instead of falling silent."""
    from filmrestore.layouts import BED_7_1_4

    n = 12 * FS
    effects = _effects(n)
    detector = EventDetector(FS)
    detector.process(effects)
    events = detector.events()
    quiet = np.zeros_like(effects)
    bed = SceneRenderer(FS, 2, make_plan(FS, n, events=events)).process(
        {"dialogue": quiet, "music": quiet, "effects": effects}).bed.astype(np.float64)
    side = bed[BED_7_1_4.index("M+090")] + bed[BED_7_1_4.index("M-090")]
    for event in events:
        assert 0.6 < event.share < 1.0
        inside = side[int((event.start_s + 0.05) * FS):int(event.end_s * FS)]
        before = side[int((event.start_s - 0.6) * FS):int((event.start_s - 0.1) * FS)]
        level_db = 10 * np.log10(np.mean(inside**2) / np.mean(before**2))
        assert level_db > -3.0, (event, level_db)
