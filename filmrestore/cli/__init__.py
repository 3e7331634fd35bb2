"""The ``filmrestore`` command line: the edge where options are parsed, the environment is read
and results are printed; the work is done by the flows and the libraries.

* :mod:`.app`: the Typer app, the consoles, the exit codes and :func:`~.app.expected_errors`;
* :mod:`.options`: option types and choices shared by the commands;
* :mod:`.title`: ``run``, ``demo``, ``extract``, ``separate``, ``loudness``;
* :mod:`.upmix`: ``adm-check``; :mod:`.separation`: ``make-bank``, ``make-dataset``, ``train``,
  ``evaluate``; :mod:`.orchestration`: ``catalog``, ``server``, ``worker``;
* :mod:`.progress`: the stage lines and progress bars of a run in this process.

Imports run one way: the command modules import :mod:`.app`; this package imports the command
modules (which registers them) and nothing imports this package back.

Expected failures (bad media, unwritable folders, silent programmes, bad options) print one line
naming the file and the problem and exit with code 2 (``EXIT_EXPECTED_ERROR``); a delivery that
was written but FAILS its loudness spec exits with code 3 (``EXIT_DELIVERY_FAILED``).
"""

from __future__ import annotations

# Importing a command module registers its commands; --help lists them in this order.
from filmrestore.cli import title  # noqa: F401  (run, demo, extract, separate, loudness)
from filmrestore.cli import upmix  # noqa: F401,I001  (adm-check)
from filmrestore.cli import separation  # noqa: F401,I001  (make-bank, make-dataset, train, evaluate)
from filmrestore.cli import orchestration  # noqa: F401,I001  (catalog, server, worker)
from filmrestore.cli.app import EXIT_DELIVERY_FAILED, EXIT_EXPECTED_ERROR, app

__all__ = ["EXIT_DELIVERY_FAILED", "EXIT_EXPECTED_ERROR", "app", "main"]


def main() -> None:
    """Entry point of the ``filmrestore`` script."""
    app()
