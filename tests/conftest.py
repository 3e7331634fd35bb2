"""Shared fixtures: one Prefect test server for the session, and the demo clip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
