"""The layout's one-way rules, checked on the installed package: library modules never import
Prefect, the stage wrappers (``filmrestore.tasks``) or the flows (``filmrestore.flows``)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import filmrestore

LIBRARY_PACKAGES = ("filmrestore.loudness", "filmrestore.restoration", "filmrestore.separation", "filmrestore.upmix")
FORBIDDEN = ("prefect", "filmrestore.tasks", "filmrestore.flows")
TOP_FOLDERS = ("filmrestore.flows", "filmrestore.tasks", "filmrestore.separation", "filmrestore.upmix")


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


def _module_level_imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``module`` imports at import time (top-level statements, not the lazy
    imports inside functions); ``from P import m`` counts as importing ``P.m`` when that is a module."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    # Importing a.b.c first runs the packages a and a.b (those that ``module`` is not inside of).
    found |= {p for name in found for p in _parents(name) if not module.startswith(p + ".")}
    return {name for name in found if name in known and name != module}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_project_has_no_import_cycle() -> None:
    """Followed from any module, the imports made at import time (a package's ``__init__``
    included) never come back to it: the CLI's commands used to import the module that imported
    them, and a module that imports ``pkg.mod`` also runs ``pkg/__init__``."""
    infos = {"filmrestore": True}
    for top in ("filmrestore", *TOP_FOLDERS):  # the folders mapped into the package live apart on disk
        path = importlib.import_module(top).__path__
        infos[top] = True
        infos |= {m.name: m.ispkg for m in pkgutil.walk_packages(path, top + ".")}
    assert {"filmrestore.cli.title", "filmrestore.upmix.adm.scene", "filmrestore.tasks.render"} <= set(infos)
    graph = {}
    for name, is_package in infos.items():
        source = importlib.util.find_spec(name).origin
        graph[name] = _module_level_imports(ast.parse(Path(source).read_text()), name, is_package, set(infos))
    assert "filmrestore.cli.app" in graph["filmrestore.cli.title"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join(path[path.index(target):] + [target])
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_stage_wrappers_stay_thin() -> None:
    """tasks/ holds thin stage wrappers (the work is in the libraries): each module well under 150 lines."""
    import filmrestore.tasks

    sizes = {p.name: len(p.read_text().splitlines()) for p in Path(filmrestore.tasks.__path__[0]).glob("*.py")}
    assert "render.py" in sizes and max(sizes.values()) <= 150, sizes
