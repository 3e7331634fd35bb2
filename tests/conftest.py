"""Shared fixtures: one Prefect test server for the session, and the demo clip."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real (temporary, SQLite) Prefect server shared by every flow test of the session."""
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    # Prefect's console log handler binds to the sys.stderr of the moment logging is first
    # set up; set it up here, not inside the first CliRunner call (whose captured stream
    # closes after that call), so CLI tests see the same output in any order.
    setup_logging()
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short generated 'legacy' clip: test-card video + degraded mono soundtrack."""
    from filmrestore.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("clip") / "demo_clip.mov", duration_s=12.0, seed=3)


@contextlib.contextmanager
def _title_locked_elsewhere(title_dir: Path) -> Iterator[subprocess.Popen]:
    """Another real process holding ``title_dir``'s lock for the ``with`` body (killed after)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom filmrestore.resume import title_lock\n"
        f"with title_lock({str(title_dir)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def title_locked_elsewhere() -> Any:
    """``with title_locked_elsewhere(title_dir) as holder:`` — the lock held by another process."""
    return _title_locked_elsewhere


@contextlib.contextmanager
def _small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A real, small file system (tmpfs of ``megabytes``) mounted on ``folder`` for the ``with``
    body; the test is skipped where this process may not mount one (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk() -> Any:
    """``with small_disk(folder, megabytes) as disk:`` — a real full-able file system."""
    return _small_disk


@pytest.fixture()
def no_prefect_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No API configured and none answering on the default port: what a bare machine has."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from filmrestore.flows import api

    def refuse(*args, **kwargs):
        raise AssertionError("a Prefect server was started")

    monkeypatch.setattr(api, "LOCAL_SERVER", "http://127.0.0.1:9/api")  # discard port: refused
    monkeypatch.setattr(SubprocessASGIServer, "start", refuse)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield
