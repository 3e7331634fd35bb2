"""What the terminal shows while a title runs in this process: a line per finished stage and
live progress. On a terminal each running stage has a rich progress bar with its percentage
and the time left; piped or redirected, progress is a plain line at every 10 % (nothing is
redrawn, so a log file stays readable)."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console

PLAIN_STEP = 0.10  # a plain progress line at every 10 % ...
PLAIN_AFTER_S = 3.0  # ... of a stage that has been running this long (short stages: just their line)


class StageConsole(logging.Handler):
    """Handler of the ``filmrestore.stages`` logger for the CLI (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self._progress: Any = None  # rich.progress.Progress while a bar is shown
        self._bars: dict[str, Any] = {}
        self._printed: dict[str, int] = {}
        self._started: dict[str, float] = {}

    quiet = False  # --quiet: warnings only (no stage lines, no progress)

    def emit(self, record: logging.LogRecord) -> None:
        if self.quiet and record.levelno < logging.WARNING:
            return
        try:
            progress = getattr(record, "filmrestore_progress", None)
            if progress is not None:
                self._show_progress(*progress)
            elif record.levelno >= logging.INFO:
                self._line(record)
        except Exception:  # noqa: BLE001 - a display fault must never stop a restoration
            self.handleError(record)

    def _line(self, record: logging.LogRecord) -> None:
        stage = record.getMessage().split(" ", 1)[0]
        self._finish(stage)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        style = "yellow" if record.levelno >= logging.WARNING else ""
        text = f"{stamp} {record.getMessage()}"
        target = self._progress.console if self._progress is not None else self.console
        target.print(f"[{style}]{text}[/]" if style else text, markup=bool(style), highlight=False, soft_wrap=True)

    def _show_progress(self, stage: str, fraction: float) -> None:
        if not self.console.is_terminal:
            started = self._started.setdefault(stage, time.monotonic())
            step = int(fraction / PLAIN_STEP + 1e-9)
            if step > self._printed.get(stage, 0) and fraction < 1.0 and time.monotonic() - started >= PLAIN_AFTER_S:
                self._printed[stage] = step
                self.console.print(f"{time.strftime('%H:%M:%S')} {stage} {100 * step * PLAIN_STEP:.0f} %",
                                   markup=False, highlight=False)
            return
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description:<9}"), BarColumn(), TaskProgressColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=True)
            self._progress.start()
        if stage not in self._bars:
            self._bars[stage] = self._progress.add_task(stage, total=1.0)
        self._progress.update(self._bars[stage], completed=fraction)

    def _finish(self, stage: str) -> None:
        if self._progress is not None and stage in self._bars:
            self._progress.remove_task(self._bars.pop(stage))
        if self._progress is not None and not self._bars:
            self.close_display()

    def close_display(self) -> None:
        """Stop the live display (the bars vanish; the stage lines stay)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.close_display()
        super().close()


def done_line(what: str, detail: str) -> None:
    """The closing line of a long command run outside a title (``separate``, ``evaluate``), through
    the stage logger like a stage's line, so that it also ends the command's progress bar."""
    from filmrestore.stagelog import STAGE_LOGGER

    logging.getLogger(STAGE_LOGGER).info("%s done: %s", what, detail, extra={"filmrestore_stage": True})


def install(console: Console) -> StageConsole:
    """Route the ``filmrestore.stages`` logger to one :class:`StageConsole` (once per process); its
    records then no longer reach Prefect's console handler."""
    from filmrestore.stagelog import STAGE_LOGGER

    logger = logging.getLogger(STAGE_LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, StageConsole):
            return handler
    handler = StageConsole(console)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return handler
