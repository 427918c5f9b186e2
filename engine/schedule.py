"""One Cycle without annihilation, as ignite's PiecewiseLinear stepped every iteration."""
from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import PiecewiseLinear

from core.errors import UserError


def one_cycle_milestones(lr_min: float, lr_max: float, iters_per_epoch: int, epochs: int,
                         peak_epoch: float) -> list[tuple[int, float]]:
    """[(0, LRMIN), (peak, LRMAX), (last, LRMIN)] in iterations (0-based).

    The peak is the last iteration of epoch `peak_epoch` (fractional epochs allowed); the LR is
    back at LRMIN on the last iteration of the run and never goes below it.
    """
    last = iters_per_epoch * epochs - 1
    if last < 2:
        raise UserError(f"the run has only {last + 1} iterations; One Cycle needs at least 3: "
                        f"use more data, more epochs or a smaller --batch-size")
    peak = min(max(round(peak_epoch * iters_per_epoch) - 1, 1), last - 1)
    return [(0, lr_min), (peak, lr_max), (last, lr_min)]


def attach_one_cycle(trainer: Engine, optimizer, milestones) -> PiecewiseLinear:
    """Set the LR at the start of every iteration; the scheduler has state_dict for resuming."""
    scheduler = PiecewiseLinear(optimizer, "lr", milestones_values=milestones)
    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    return scheduler
