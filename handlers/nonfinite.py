"""Stop training when the loss turns non-finite, checked every N iterations and at each epoch's end.

Ignite's TerminateOnNan reads the loss with a host-device sync every iteration; this keeps the
iteration path free of syncs: it only keeps a reference to each iteration's (detached, on-device)
loss and looks at all of them at once when it checks, so it can still name the first bad iteration.
"""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from core.errors import UserError


class NonFiniteLossCheck:
    """Raise UserError naming the epoch and iteration of the first NaN/inf training loss.

    every: also check every `every` iterations (0: only at the end of each epoch). The error
    propagates out of trainer.run(), so no later handler of that epoch (evaluation, outputs) runs.
    """

    def __init__(self, every: int = 0, output_key: str = "loss"):
        self.every, self.output_key = every, output_key
        self._losses: list[tuple[int, int, torch.Tensor]] = []  # (epoch, iteration, loss)

    def attach(self, trainer: Engine) -> "NonFiniteLossCheck":
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._remember)
        if self.every > 0:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.check)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.check)
        return self

    def _remember(self, engine: Engine) -> None:
        self._losses.append((engine.state.epoch, engine.state.iteration, engine.state.output[self.output_key]))

    def check(self, engine: Engine | None = None) -> None:
        """One host-device sync for all the losses remembered since the last check."""
        if not self._losses:
            return
        losses, self._losses = self._losses, []
        finite = torch.isfinite(torch.stack([loss.float().reshape(()) for _, _, loss in losses]))
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0, 0])
        epoch, iteration, loss = losses[first]
        raise UserError(f"the training loss became {float(loss)} at epoch {epoch}, iteration {iteration} "
                        f"(checked {f'every {self.every} iterations' if self.every else 'at each epoch end'}): the learning rate is probably "
                        f"too high: lower --lr-max (or --lr-min), or check the data for broken images")
