"""The composition root: `build_run` wires data, model, engines and handlers into a run.

The top layer below run.py: it may import every other layer, and only run.py (and a user's own
script) imports it. `from training import build_run, Config`.

`build_run` and `Run` are imported on first use (PEP 562), so `training.flags` (the command line) loads
without torch and ignite: `run.py --help` and a bad flag answer in a fraction of a second.
"""
from engine.config import Config

__all__ = ["Config", "Run", "build_run"]


def __getattr__(name: str):
    if name in ("Run", "build_run"):
        from training import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
