"""Custom handlers from the command line: `--handler package.module:function` (or path/to/file.py:function).

The function is called as `function(run)` with the built `training.builder.Run`, after the default
handlers are attached (and a resume loaded) and before training; it attaches what it wants to
`run.trainer` / `run.evaluator`. The range test has already run on its own throwaway engine by then,
so a custom handler never fires during it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from core.errors import UserError

EXAMPLE = "examples.early_stopping:attach"


def _import(module_name: str):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ImportError(f"no file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    # Like `python -m`: modules in the current folder import, wherever run.py lives.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)


def load_handler(spec: str) -> Callable:
    """Resolve "module:function" to the callable; a bad spec is a one-line UserError."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"--handler {spec!r}: expected MODULE:FUNCTION, e.g. --handler {EXAMPLE}")
    try:
        module = _import(module_name)
    except ImportError as e:
        message = " ".join(str(e).split())
        raise UserError(f"--handler {spec}: cannot import {module_name} ({message}): check the module name "
                        f"and run from the folder that holds it (or put it on PYTHONPATH)") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserError(f"--handler {spec}: {module_name} has no attribute {attribute!r}: "
                            f"name a function defined in that module")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"--handler {spec}: {module_name}.{attribute} is a {type(target).__name__}, not a "
                        f"function: name a function that takes the run, e.g. def attach(run): ...")
    return target
