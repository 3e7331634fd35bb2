"""What a stage says while it runs in this process (no Prefect): its lines on the
``filmrestore.stages`` logger and its progress records, which the CLI shows
(:mod:`filmrestore.cli.progress`); ``title/stage`` when several titles run at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

STAGE_LOGGER = "filmrestore.stages"
#: The title a thread is restoring, when several run at once in one process (an in-process
#: catalogue): the CLI's stage lines and progress bars then read ``title/stage``.
TITLE_LABEL: ContextVar[str | None] = ContextVar("filmrestore_title_label", default=None)


def stage_label(stage: str) -> str:
    """``stage``, or ``title/stage`` in a thread restoring one title of several (:data:`TITLE_LABEL`)."""
    label = TITLE_LABEL.get()
    return f"{label}/{stage}" if label else stage


def terminal_progress(stage: str, step: float = 0.01) -> Callable[[int, int], None]:
    """An ``on_progress(done, total)`` callback for a stage run in-process: a record on the
    ``filmrestore.stages`` logger at every ``step`` of progress, marked
    ``filmrestore_progress=(stage, fraction)`` for the CLI's progress display (plain loggers
    drop them: they are DEBUG)."""
    logger = logging.getLogger(STAGE_LOGGER)
    last = [-1.0]
    stage = stage_label(stage)  # now: the callback may be called from a stage's worker threads

    def on_progress(done: int, total: int) -> None:
        fraction = min(done / total, 1.0) if total else 1.0
        if fraction - last[0] >= step or (fraction >= 1.0 > last[0]):
            last[0] = fraction
            logger.debug("%s %.0f %%", stage, 100.0 * fraction, extra={"filmrestore_progress": (stage, fraction)})

    return on_progress
