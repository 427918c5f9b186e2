"""A long run on the CPU says so early: one warning with the time the run will take, measured on its first iterations.

An epoch of the full network takes half an hour or more on a small CPU, seconds on a GPU (BENCHMARKS.md).
Without a GPU (or with one torch cannot use: core/device.py) a user should learn that
after a few seconds, not at the end of the first epoch, together with how to go smaller.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from ignite.engine import Engine, Events

from run_folder.summary import format_duration

log = logging.getLogger(__name__)

WARMUP, MEASURED = 2, 4          # iterations left out (allocation, first-touch), then timed
LONG_SECONDS = 30 * 60           # warn when the run's training would take longer than this


class CpuTimeEstimate:
    """Times MEASURED iterations after WARMUP and warns once if the remaining iterations would take over LONG_SECONDS."""

    def __init__(self, epochs: int, width: int, clock: Callable[[], float] = time.perf_counter):
        self.epochs, self.width, self.clock = epochs, width, clock
        self.message: str | None = None
        self._start: tuple[int, float] | None = None

    def attach(self, trainer: Engine) -> "CpuTimeEstimate":
        trainer.add_event_handler(Events.STARTED, self._reset)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._tick)
        return self

    def _reset(self, trainer: Engine) -> None:
        self._start = None

    def _tick(self, trainer: Engine) -> None:
        if self.message is not None:
            return
        state = trainer.state
        if self._start is None:
            self._start = (state.iteration + WARMUP, 0.0)  # (iteration at which timing starts, its time)
            return
        first, began = self._start
        if state.iteration == first:
            self._start = (first, self.clock())
        elif state.iteration == first + MEASURED:
            per_iteration = (self.clock() - began) / MEASURED
            left = state.epoch_length * state.max_epochs - state.iteration
            self._warn(per_iteration, per_iteration * left)

    def _warn(self, per_iteration: float, seconds_left: float) -> None:
        self.message = ""  # measured: never again, whatever it says
        if seconds_left < LONG_SECONDS:
            return
        smaller = "--width 16 (16 times fewer multiply-adds), " if self.width > 16 else ""
        self.message = (f"training on the CPU: {per_iteration:.2f} s per iteration here, so the rest of the "
                        f"{self.epochs} epochs takes about {format_duration(seconds_left)} (test passes not "
                        f"counted); a CUDA GPU takes minutes. To go smaller: {smaller}--subset N (N training "
                        f"images) or fewer --epochs")
        log.warning(self.message)
