"""The non-finite loss check stops training with a message naming the first bad epoch and iteration."""
from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from core.errors import UserError
from handlers.nonfinite import NonFiniteLossCheck


def engine_with_losses(bad_iteration: int | None, every: int) -> Engine:
    def step(engine, _):
        value = float("nan") if engine.state.iteration >= (bad_iteration or 10**9) else 1.0
        return {"loss": torch.tensor(value)}

    engine = Engine(step)
    NonFiniteLossCheck(every).attach(engine)
    return engine


def test_finite_losses_run_to_the_end():
    engine = engine_with_losses(None, every=0)
    engine.run(range(4), max_epochs=3)
    assert engine.state.iteration == 12


def test_checked_once_per_epoch_names_the_first_bad_iteration():
    engine = engine_with_losses(bad_iteration=6, every=0)
    with pytest.raises(UserError, match=r"became nan at epoch 2, iteration 6 .*--lr-max"):
        engine.run(range(4), max_epochs=3)
    assert engine.state.iteration == 8  # found at the end of epoch 2, not later


def test_checked_every_n_iterations_stops_early():
    engine = engine_with_losses(bad_iteration=2, every=3)
    with pytest.raises(UserError, match=r"epoch 1, iteration 2 "):
        engine.run(range(10), max_epochs=1)
    assert engine.state.iteration == 3
