"""Imports run one way, from the top down: run.py -> training -> handlers -> run_folder -> engine -> data, models -> core.

A module may import its own package and the layers below it, never one above (README, Architecture).
inference (predict, ONNX export) sits beside training: it uses a trained model file, never the training machinery.
tests/, bench/ and examples/ sit outside the layers: they may use any of them.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "engine": {"core", "data", "models"},
    "run_folder": {"core", "data", "models", "engine"},
    "handlers": {"core", "data", "models", "engine", "run_folder"},
    "training": {"core", "data", "models", "engine", "run_folder", "handlers"},
    "inference": {"core", "data", "models"},
    "run": {"core", "data", "models", "engine", "run_folder", "handlers", "training", "inference"},
}
PROJECT = set(ALLOWED) | {"tests", "bench", "examples"}


def imported_packages(path: Path) -> set[str]:
    """The project packages a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


def layer_files():
    yield "run", REPO / "run.py"
    for package in ALLOWED:
        if package != "run":
            yield from ((package, f) for f in sorted((REPO / package).glob("*.py")))


@pytest.mark.parametrize("package, path", list(layer_files()), ids=lambda v: getattr(v, "name", v))
def test_no_import_runs_back_up(package, path):
    upward = imported_packages(path) - ALLOWED[package] - {package}
    assert not upward, f"{path.relative_to(REPO)} ({package}) imports {sorted(upward)}: not allowed from its layer"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from run_folder.summary import write_atomic\n    import training.builder\n")
    assert imported_packages(bad) - ALLOWED["engine"] == {"run_folder", "training"}


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages - PROJECT == set(), "a new package needs a place in ALLOWED (and in the README)"
