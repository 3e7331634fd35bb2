"""Upmix/ADM commands of the ``filmrestore`` CLI: ``adm-check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from filmrestore.cli.app import app, console, expected_errors


@app.command("adm-check")
@expected_errors
def adm_check(
    file: Annotated[Path, typer.Argument(help="ADM BWF file (WAV/BW64 with chna + axml).")],
    profile: Annotated[str, typer.Option("--profile", metavar="ebu|dolby",
                                         help="Profile to check against: ebu or dolby.")] = "ebu",
    as_json: Annotated[bool, typer.Option("--json", help="Print {file, profile, conforms, problems} as JSON on "
                                                         "stdout.")] = False,
) -> None:
    """List what in an ADM BWF file breaks a profile; exit 1 if anything does."""
    from filmrestore.upmix.adm import check_adm_file

    problems = check_adm_file(file, profile)
    if as_json:
        typer.echo(json.dumps({"file": str(file), "profile": profile, "conforms": not problems,
                               "problems": problems}, indent=2))
        if problems:
            raise typer.Exit(1)
        return
    for problem in problems:
        typer.echo(f"{file}: {problem}")
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/] against the {profile} profile")
        raise typer.Exit(1)
    console.print(f"{file}: conforms to the {profile} profile")
