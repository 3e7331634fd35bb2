"""Upmix benchmark: real-time factor of plan + render + export, and peak memory against length.

Each length runs in its own subprocess (so ``ru_maxrss`` is that run's peak):
stems are made block by block (stereo noise; the effects pan slowly so the
effects pair moves), the ILD analysis and a plan with 16 objects (the 5 default
ones + 11 moving ones) are made, the scene is rendered and exported to
``adm.wav`` (BW64 past 4 GiB) and ``bed_7.1.4.wav`` in a temporary folder.

    .venv/bin/python benchmarks/upmix.py               # 5 and 60 minutes
    .venv/bin/python benchmarks/upmix.py --minutes 2 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

FS = 48_000
BLOCK = 480_000  # 10 s, as the render stage reads


def _stem_blocks(n_frames: int, seed: int = 1):
    """Consecutive {stem: (2, n)} float32 blocks; noise made once, the effects' pan changes per block."""
    rng = np.random.default_rng(seed)
    noise = {k: (0.05 * rng.standard_normal((2, BLOCK))).astype(np.float32) for k in ("dialogue", "music", "effects")}
    done = 0
    while done < n_frames:
        n = min(BLOCK, n_frames - done)
        pan = 0.5 + 0.5 * np.sin(2 * np.pi * done / (FS * 90.0))  # one sweep per 90 s
        effects = noise["effects"][:, :n] * np.array([[np.cos(pan * np.pi / 2)], [np.sin(pan * np.pi / 2)]],
                                                        np.float32)
        yield {"dialogue": noise["dialogue"][:, :n], "music": noise["music"][:, :n], "effects": effects}
        done += n


def _plan_16(n_frames: int, ild_db: list[float]):
    from filmrestore.upmix.plan import Block, ObjectPlan, make_plan

    plan = make_plan(FS, n_frames, effects_ild_db=ild_db)
    duration_s = n_frames / FS
    extra = []
    for k in range(11):  # objects circling at 1 deg per second, a block every 10 s
        blocks = tuple(Block(float(t), float(min(10.0, duration_s - t)), float((37 * k + t) % 360 - 180),
                             float(10 * (k % 3)), 0.2) for t in range(0, int(np.ceil(duration_s)), 10))
        extra.append(ObjectPlan(f"Extra {k}", ("music.L", "music.R", "effects.L", "effects.R")[k % 4], blocks))
    return replace(plan, objects=plan.objects + tuple(extra))


def run_one(minutes: float, folder: Path) -> dict:
    """Time plan, render and export of one length in this process; returns times and peak RSS."""
    from filmrestore.audio import AudioWriter
    from filmrestore.upmix.adm import AdmSceneWriter, get_profile, scene_for
    from filmrestore.layouts import BED_7_1_4
    from filmrestore.upmix.plan import ImageAnalysis
    from filmrestore.upmix.render import SceneRenderer

    n_frames = int(minutes * 60 * FS)
    times = {"setup": 0.0, "plan": 0.0, "render": 0.0, "export": 0.0}
    t0 = time.perf_counter()
    analysis = ImageAnalysis(FS)
    for blocks in _stem_blocks(n_frames):
        analysis.process(blocks["effects"])
    plan = _plan_16(n_frames, analysis.ild_db())
    times["plan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    renderer = SceneRenderer(FS, 2, plan)  # designs the decorrelators (cached per process)
    scene = scene_for(plan, get_profile("ebu"))
    times["setup"] = time.perf_counter() - t0
    with AdmSceneWriter(folder / "adm.wav", scene, "bench") as adm, \
            AudioWriter(folder / "bed_7.1.4.wav", FS, 12, "PCM_24", BED_7_1_4.channel_mask) as bed:
        for blocks in _stem_blocks(n_frames):
            t0 = time.perf_counter()
            rendered = renderer.process(blocks)
            t1 = time.perf_counter()
            adm.write(rendered.bed, rendered.feeds)
            bed.write(rendered.mix)
            times["render"] += t1 - t0
            times["export"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        adm.close()
        bed.close()
        times["export"] += time.perf_counter() - t0
    sizes_gib = {p.name: p.stat().st_size / 2**30 for p in folder.iterdir()}
    return {"minutes": minutes, "objects": len(plan.objects), "tracks": scene.n_tracks, **times,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gib": sizes_gib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0])
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            print(json.dumps(run_one(args.child, Path(tmp))))
        return
    rows = []
    for minutes in args.minutes:
        done = subprocess.run([sys.executable, __file__, "--child", str(minutes)], capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| minutes | objects | ADM tracks | setup s | plan s | render s | export s | plan+render+export x RT "
          "| render x RT | peak RSS MiB | adm.wav GiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        seconds = r["minutes"] * 60
        total = r["plan"] + r["render"] + r["export"]
        print(f"| {r['minutes']:g} | {r['objects']} | {r['tracks']} | {r['setup']:.1f} | {r['plan']:.1f} "
              f"| {r['render']:.1f} | {r['export']:.1f} | {seconds / total:.0f} | {seconds / r['render']:.0f} "
              f"| {r['peak_rss_mib']:.0f} | {r['gib']['adm.wav']:.2f} |")


if __name__ == "__main__":
    main()
