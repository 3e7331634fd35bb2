"""The ``filmrestore`` Typer app and what every command shares: the consoles, the exit codes,
``--version``/``--verbose``/``--quiet``, and :func:`expected_errors`.

Expected failures (bad media, unwritable folders, silent programmes, bad
options) print one line naming the file and the problem and exit with code 2;
no traceback. A delivery that was written but FAILS its loudness spec exits with
code 3 (``EXIT_DELIVERY_FAILED``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

# The CLI is the edge where the environment is read: keep Prefect's temporary
# server quiet and local unless the user configured otherwise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from filmrestore.errors import FilmrestoreError  # noqa: E402

app = typer.Typer(
    name="filmrestore",
    help="Film-soundtrack restoration and 7.1.4 / ADM upmix, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Messages go to stderr, unwrapped and without rich's number highlighting, so piped output stays
# one line per message; machine-readable results (--json) go to stdout.
console = Console(stderr=True, soft_wrap=True, highlight=False)
#: A command's result (the deliverables and the verdict) for a script to read: stdout, never wrapped;
#: rich colours it on a terminal only.
results = Console(soft_wrap=True, highlight=False)

EXIT_EXPECTED_ERROR = 2
EXIT_DELIVERY_FAILED = 3  # everything written, but the delivery fails its loudness spec


def _print_version(value: bool) -> None:
    if value:
        from filmrestore import __version__

        typer.echo(f"filmrestore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print all of Prefect's log lines.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No stage lines or progress: warnings, errors and "
                                                       "the result only.")] = False,
) -> None:
    """Film-soundtrack restoration and 7.1.4 / ADM upmix, orchestrated by Prefect."""
    from filmrestore.cli.progress import StageConsole

    _TerminalLines.verbose = verbose and not quiet
    _TerminalLines.quiet = StageConsole.quiet = quiet


class _QuietExpectedErrors(logging.Filter):
    """Drop the traceback from Prefect's log of a run that failed with an expected error: the
    state line names the file and the problem, and the CLI prints its one error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FilmrestoreError):
            record.exc_info, record.exc_text = None, None
        return True


class _TerminalLines(logging.Filter):
    """What Prefect's console handler prints from the CLI: the stages' own lines (one per stage,
    marked by ``log_stage``), warnings and unexpected errors. Prefect's chatter (temporary
    server, flow run begun or finished) and its lines about an expected error, which the CLI
    states once itself, are left out; ``--verbose`` prints everything. The API (the UI) still
    gets every record: this filter sits on the console handler only."""

    verbose = False
    quiet = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or (getattr(record, "filmrestore_stage", False) and not self.quiet):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if message.startswith("Concurrency limits ") and "do not exist" in message:
            return False  # the gpu slot of a run without a configured server: nothing to act on
        expected = record.exc_info and isinstance(record.exc_info[1], FilmrestoreError)
        return not (expected or any(name in message for name in _expected_error_names()))


def _expected_error_names() -> set[str]:
    found, todo = set(), [FilmrestoreError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _quiet_prefect_tracebacks() -> None:
    """Put :class:`_QuietExpectedErrors` on the handlers of Prefect's loggers, and
    :class:`_TerminalLines` on its console handlers (once)."""
    from prefect.logging.configuration import setup_logging

    if not logging.getLogger("prefect").handlers:
        setup_logging()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # "": the root, Prefect's console
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _QuietExpectedErrors) for f in handler.filters):
                handler.addFilter(_QuietExpectedErrors())
            console_handler = "Console" in type(handler).__name__ or type(handler) is logging.StreamHandler
            if console_handler and not any(isinstance(f, _TerminalLines) for f in handler.filters):
                handler.addFilter(_TerminalLines())


def expected_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a FilmrestoreError into one line on stderr and exit code 2 (and keep Prefect from
    printing its traceback first)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from filmrestore.cli.progress import install

        _quiet_prefect_tracebacks()
        stages = install(console)
        try:
            return fn(*args, **kwargs)
        except FilmrestoreError as exc:
            stages.close_display()
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_EXPECTED_ERROR) from None

    return wrapper
