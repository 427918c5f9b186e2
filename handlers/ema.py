"""--ema: ignite's EMAHandler with a warm-up that lets the average follow a short run.

With a fixed momentum M the average starts as the random initial weights and needs about 1/M steps to forget them
(100 steps at 0.01: a whole CIFAR-10 epoch, and more than a short run has). So the momentum starts high and falls
as timm's ModelEmaV2 lets it: max(M, 9 / (9 + iteration)), 0.9 at the first step, 0.09 at step 91, M from step
9/M - 9 on (891 at 0.01, epoch 10 of a CIFAR-10 run): until then the average covers about the last tenth of the
steps. It is set from the trainer's iteration count, so a resumed run goes on with the same momenta.
"""
from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

NAME = "ema_momentum"  # engine.state attribute the handler reads at each update


def warmed_up_momentum(momentum: float, iteration: int) -> float:
    """The momentum of the update after `iteration` (1-based) training steps."""
    return max(momentum, 9 / (9 + iteration))


def attach_ema(trainer: Engine, model: nn.Module, momentum: float) -> EMAHandler:
    """An EMAHandler of `model` (DDP: its module) updated after every step, BatchNorm statistics averaged too."""
    ema = EMAHandler(model, momentum=momentum, handle_buffers="update")

    def set_momentum(engine: Engine) -> None:  # registered first: runs before the update on the same event
        setattr(engine.state, NAME, warmed_up_momentum(momentum, engine.state.iteration))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, set_momentum)
    ema.attach(trainer, name=NAME, warn_if_exists=False)
    return ema
