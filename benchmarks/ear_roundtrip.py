"""ADM round trip through the EBU ADM renderer, per bed channel, for a mono, a stereo and a 5.1 title.

    .venv/bin/python benchmarks/ear_roundtrip.py [--seconds 20] [--work DIR]

Each title goes through ``filmrestore run`` (default options, DSP separator for speed); its
``adm.wav`` is rendered with ``ear-render -s 4+7+0`` (the tests' ear venv, ``.venv-ear``) and
compared with the ``bed_7.1.4.wav`` the pipeline wrote: per channel the energy difference
(dB) and the largest sample difference. For the 5.1 title it also prints, per source channel,
the correlation with the bed speaker at its position, and what qc.json says that speaker plays.
The titles' objects (and effect event objects) are counted from their plan.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.signal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from filmrestore.audio import read_audio, write_audio  # noqa: E402
from filmrestore.layouts import BED_7_1_4, get_layout  # noqa: E402
from filmrestore.synth import SAMPLE_RATE_HZ as FS  # noqa: E402
from filmrestore.synth import make_film_mix  # noqa: E402


def _clips(folder: Path, seconds: float) -> dict[str, tuple[Path, np.ndarray | None]]:
    """mono and stereo film mixes, and a 5.1 whose channels hold known material."""
    rng = np.random.default_rng(11)
    n = int(seconds * FS)
    film = make_film_mix(seconds, rng)
    mono = film["mix"][:1]
    stereo = np.vstack([film["music"][0] + film["effects"][0] + film["dialogue"][0],
                        np.roll(film["music"][0], 4800) + 0.5 * film["effects"][0] + film["dialogue"][0]])
    ambience = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal((2, n))) * 0.01
    booms = np.sin(2 * np.pi * 40 * np.arange(n) / FS) * (np.sin(2 * np.pi * 0.4 * np.arange(n) / FS) > 0.6)
    layout = get_layout("5.1(side)")
    by_label = {"M+030": film["music"][0] + ambience[0], "M-030": np.roll(film["music"][0], 4800) + ambience[1],
                "M+000": film["dialogue"][0] + 0.3 * film["effects"][0], "LFE1": 0.2 * booms,
                "M+110": ambience[0], "M-110": ambience[1]}
    five = np.vstack([by_label[label] for label in layout.labels])
    clips = {}
    for name, x, mask in (("mono", mono, None), ("stereo", stereo, None), ("5.1", five, layout.channel_mask)):
        path = folder / f"{name.replace('.', '')}.wav"
        write_audio(path, x.astype(np.float32), FS, channel_mask=mask)
        clips[name] = (path, x if name == "5.1" else None)
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    import ear_env

    ear = ear_env.ear_render_path()
    if ear is None:
        raise SystemExit(f"the EBU ADM renderer is unavailable: {ear_env.last_error}")
    work = args.work or Path(tempfile.mkdtemp(prefix="filmrestore-ear-"))
    cli = [sys.executable, "-m", "filmrestore.cli"]
    for name, (clip, source) in _clips(work, args.seconds).items():
        out = work / "out"
        run = subprocess.run([*cli, "--quiet", "run", str(clip), "--out", str(out), "--separator", "dsp",
                              "--device", "cpu"], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"filmrestore run failed for {name}:\n{run.stderr[-2000:]}")
        title = out / clip.stem
        ours = read_audio(title / "bed_7.1.4.wav").astype(np.float64)
        rendered = work / f"{clip.stem}-ear.wav"
        subprocess.run([str(ear), "-s", "4+7+0", str(title / "adm.wav"), str(rendered)], check=True,
                       capture_output=True)
        order = [ear_env.EAR_4_7_0_ORDER.index(label) for label in BED_7_1_4.labels]  # ear: BS.2051 order
        theirs = read_audio(rendered).astype(np.float64)[order]
        plan = json.loads((title / "plan.json").read_text())
        events = [o for o in plan["objects"] if o["feed"].startswith("effects.events")]
        n_events = sum(b["gain"] > 0 for b in events[0]["blocks"]) if events else 0
        print(f"\n{name} ({args.seconds:g} s): {len(plan['objects'])} objects, {len(events)} of them effect "
              f"events ({n_events} events)")
        print(f"{'channel':<8}{'bed (dBFS energy)':>18}{'ear - ours (dB)':>17}{'max |diff|':>12}")
        with np.errstate(divide="ignore"):
            for c, label in enumerate(BED_7_1_4.labels):
                e_ours = 10 * np.log10(np.mean(ours[c] ** 2) + 1e-30)
                e_theirs = 10 * np.log10(np.mean(theirs[c] ** 2) + 1e-30)
                print(f"{BED_7_1_4.speakers[c].wave_name:<8}{e_ours:>18.1f}{e_theirs - e_ours:>+17.3f}"
                      f"{np.max(np.abs(theirs[c] - ours[c])):>12.1e}")
        if source is not None:
            qc = json.loads((title / "qc.json").read_text())
            plays = {row["label"]: row["plays"] for row in qc["bed_channels"]}
            layout = get_layout("5.1(side)")
            at_of = {"M+110": "M+090", "M-110": "M-090"}
            print(f"{'source':<8}{'bed speaker':>12}{'correlation':>13}  plays")
            for c, speaker in enumerate(layout.speakers):
                at = at_of.get(speaker.label, speaker.label)
                corr = np.corrcoef(source[c, FS:-FS], ours[BED_7_1_4.index(at), FS:-FS])[0, 1]
                wave = BED_7_1_4.speakers[BED_7_1_4.index(at)].wave_name
                print(f"{speaker.wave_name:<8}{wave:>12}{corr:>13.3f}  {plays.get(at, '')}")


if __name__ == "__main__":
    main()
