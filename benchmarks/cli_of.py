"""The command line of the code a benchmark's child process runs: this checkout's, or a baseline's."""

from __future__ import annotations

import sys
from pathlib import Path


def cli_command(site: str | None = None) -> list[str]:
    """``[python, -c, ...]`` that runs the ``filmrestore`` CLI of ``site`` (a folder holding an
    install of older code, first on the child's PYTHONPATH) or, with None, of this checkout.

    Code older than the ``filmrestore.cli`` package has its CLI in ``filmrestore.flows.cli``. It is
    told by its files, not by importing: an editable install of newer code answers for
    ``filmrestore.cli`` whatever comes first on the path."""
    old = site is not None and (Path(site) / "filmrestore" / "flows" / "cli.py").is_file()
    module = "filmrestore.flows.cli" if old else "filmrestore.cli"
    return [sys.executable, "-c", f"import sys; sys.argv[0] = 'filmrestore'; from {module} import main; main()"]
