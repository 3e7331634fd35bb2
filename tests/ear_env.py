"""The EBU ADM renderer (``ear``, PyPI) in a virtual environment of its own.

``ear`` pins numpy 1.x, attrs<22 and lxml 4.x, so it cannot live in the project
venv. This helper creates ``$FILMRESTORE_EAR_VENV`` (default ``<repo>/.venv-ear``)
once with ``python -m venv`` + ``pip install ear`` and reuses it afterwards.
Tests call :func:`ear_render_path` and skip with its reason when it gives None.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
# ear imports pkg_resources, which setuptools dropped in release 81.
_EAR_REQUIREMENTS = ("ear==2.1.0", "setuptools<81")
_INSTALL_TIMEOUT_S = 600

last_error = ""


def ear_venv_dir() -> Path:
    """Where the ear virtual environment lives."""
    return Path(os.environ.get("FILMRESTORE_EAR_VENV", REPO_ROOT / ".venv-ear"))


def _works(ear_render: Path) -> bool:
    if not ear_render.exists():
        return False
    done = subprocess.run([str(ear_render), "--help"], capture_output=True, timeout=120)
    return done.returncode == 0


def _install(venv: Path) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True,
                       timeout=_INSTALL_TIMEOUT_S)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *_EAR_REQUIREMENTS], check=True,
                   capture_output=True, timeout=_INSTALL_TIMEOUT_S)


def ear_render_path() -> Path | None:
    """Path of a working ``ear-render``, installing it on first use; None if that fails.

    A file lock serialises concurrent first installs (several test runs at once).
    On failure, :data:`last_error` says why.
    """
    global last_error
    venv = ear_venv_dir()
    ear_render = venv / "bin" / "ear-render"
    try:
        if _works(ear_render):
            return ear_render
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.parent / f".{venv.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _works(ear_render):
                _install(venv)
        if _works(ear_render):
            return ear_render
        last_error = f"{ear_render} does not run after installing {_EAR_REQUIREMENTS}"
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        last_error = f"cannot install ear into {venv}: {exc} {stderr.decode(errors='replace')[-500:]}"
    return None


# ear writes BS.2051 table order for 4+7+0 (sides before rears); our WAV order has rears first.
EAR_4_7_0_ORDER = ("M+030", "M-030", "M+000", "LFE1", "M+090", "M-090", "M+135", "M-135",
                   "U+045", "U-045", "U+135", "U-135")


def render_in_wav_order(adm_path: Path, out_path: Path) -> np.ndarray:
    """Render an ADM file with ``ear-render -s 4+7+0``; returns [shape=(12, n_frames)] in our bed's WAV order.

    Skips the calling test when ear cannot be installed; fails it when ear rejects the file.
    """
    import pytest

    from filmrestore.audio import read_audio
    from filmrestore.layouts import BED_7_1_4

    ear_render = ear_render_path()
    if ear_render is None:
        pytest.skip(f"EBU ADM renderer unavailable: {last_error}")
    done = subprocess.run([str(ear_render), "-s", "4+7+0", str(adm_path), str(out_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rendered = read_audio(out_path)
    return rendered[[EAR_4_7_0_ORDER.index(label) for label in BED_7_1_4.labels]]
