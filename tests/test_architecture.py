"""The layout's one-way rules, checked on the installed package: library modules never import
Prefect, the stage wrappers (``filmrestore.tasks``) or the flows (``filmrestore.flows``)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import filmrestore

LIBRARY_PACKAGES = ("filmrestore.loudness", "filmrestore.restoration", "filmrestore.separation", "filmrestore.upmix")
FORBIDDEN = ("prefect", "filmrestore.tasks", "filmrestore.flows")


def _library_modules() -> list[str]:
    modules = [f"filmrestore.{m.name}" for m in pkgutil.iter_modules(filmrestore.__path__) if not m.ispkg]
    for package in LIBRARY_PACKAGES:
        mod = __import__(package, fromlist=["__path__"])
        modules.append(package)
        modules += [f"{package}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)]
    return sorted(modules)


def test_library_modules_import_neither_prefect_nor_tasks_nor_flows() -> None:
    modules = _library_modules()
    assert "filmrestore.loudness.meter" in modules and "filmrestore.restoration.hum" in modules
    # One fresh interpreter importing them in turn: a forbidden module shows up right after the
    # first library module that pulls it in.
    script = (
        "import importlib, json, sys\n"
        "def bad():\n"
        f"    return sorted(m for m in sys.modules if m.split('.')[0] == 'prefect' or m.startswith({FORBIDDEN[1:]!r}))\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    if bad():\n"
        "        print(json.dumps({name: bad()[:3]}))\n"
        "        break\n"
        "else:\n"
        "    print('{}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {}
