"""Byte-identity check for refactors: run ``filmrestore run`` on a few generated titles and
record (or compare) the SHA-256 of every deliverable it writes.

A code move that keeps behaviour leaves every audio file, the plan and the stems byte for
byte as they were. Record with the code before the move, compare with the code after:

    .venv/bin/python benchmarks/identity.py record before.json [--work DIR]
    .venv/bin/python benchmarks/identity.py compare before.json [--work DIR]   # exit 1 on a difference

The titles: the demo clip (mono, neural separator, EBU R128), the same clip through the
DSP separator with the Netflix preset (dialogue-gated), and a stereo clip with the ATSC
preset. Files whose content carries run-specific text (``qc.json``, ``qc.md``, manifests
with times and absolute paths, plots) are left out; every WAV, ``plan.json`` and the ADM
file are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from filmrestore.demo import make_demo_clip
from filmrestore.synth import SAMPLE_RATE_HZ, make_film_mix

TITLES = (
    # (title, clip kind, extra run options)
    ("mono-neural", "mono", ["--preset", "ebu-r128"]),
    ("mono-dsp-netflix", "mono", ["--separator", "dsp", "--preset", "netflix"]),
    ("stereo-atsc", "stereo", ["--preset", "atsc-a85"]),
)
COMPARED = ("*.wav", "**/*.wav", "plan.json", "**/plan.json")


def _clip(work: Path, kind: str) -> Path:
    """The demo clip (mono, in a .mov), or a stereo WAV mixed from the same synthetic stems
    with music and effects panned apart."""
    if kind == "mono":
        path = work / "clip-mono.mov"
        if not path.exists():
            make_demo_clip(path, duration_s=20.0, seed=7)
        return path
    path = work / "clip-stereo.wav"
    if not path.exists():
        stems = make_film_mix(20.0, np.random.default_rng(7))
        d, m, e = (stems[k][0] for k in ("dialogue", "music", "effects"))
        stereo = np.stack([d + 0.9 * m + 1.0 * e, d + 1.0 * m + 0.5 * e], axis=1)
        sf.write(path, stereo, SAMPLE_RATE_HZ, subtype="PCM_24")
    return path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_titles(work: Path) -> dict[str, dict[str, str]]:
    """Run every title into ``work/out`` (from scratch) and hash its deliverables."""
    # The CLI of the code on sys.path (a baseline install on PYTHONPATH included): filmrestore.flows.cli
    # in code older than the filmrestore.cli package (asked first: an editable install of newer
    # code would answer for filmrestore.cli whatever comes first on the path).
    old = importlib.util.find_spec("filmrestore.flows.cli") is not None
    cli = [sys.executable, "-m", "filmrestore.flows.cli" if old else "filmrestore.cli"]
    out = work / "out"
    hashes: dict[str, dict[str, str]] = {}
    for title, kind, options in TITLES:
        folder = out / title
        if folder.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
        proc = subprocess.run([*cli, "run", str(_clip(work, kind)), "--out", str(out), "--title", title,
                               "--device", "cpu", *options], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"filmrestore run failed for {title}:\n{proc.stderr[-3000:]}")
        files = sorted({p for pattern in COMPARED for p in folder.glob(pattern)
                        if p.is_file() and ".manifests" not in p.relative_to(folder).parts})
        hashes[title] = {str(p.relative_to(folder)): _digest(p) for p in files}
        print(f"{title}: {len(files)} files hashed", file=sys.stderr)
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("record", "compare"))
    parser.add_argument("hashes", type=Path, help="JSON file of the recorded hashes")
    parser.add_argument("--work", type=Path, default=None, help="folder for the clips and outputs (default: temporary)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="filmrestore-identity-"))
    work.mkdir(parents=True, exist_ok=True)
    now = run_titles(work)
    if args.mode == "record":
        args.hashes.write_text(json.dumps(now, indent=1, sort_keys=True))
        print(f"recorded {sum(len(v) for v in now.values())} files in {args.hashes}")
        return
    before = json.loads(args.hashes.read_text())
    differ = 0
    print(f"{'title':<20} {'file':<36} result")
    for title, files in before.items():
        for name, digest in files.items():
            got = now.get(title, {}).get(name)
            if got == digest:
                result = "identical"
            else:
                differ += 1
                result = "MISSING" if got is None else "DIFFERS"
            print(f"{title:<20} {name:<36} {result}")
        for name in sorted(set(now.get(title, {})) - set(files)):
            differ += 1
            print(f"{title:<20} {name:<36} NEW")
    print(f"{differ} of {sum(len(v) for v in before.values())} files differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
