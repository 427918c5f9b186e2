"""The composition root: `build_run` wires data, model, engines and handlers into a run.

The top layer below run.py: it may import every other layer, and only run.py (and a user's own
script) imports it. `from training import build_run, Config`.
"""
from engine.config import Config
from training.builder import Run, build_run

__all__ = ["Config", "Run", "build_run"]
