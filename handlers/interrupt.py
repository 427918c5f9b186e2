"""Ctrl-C (SIGINT) during training: finish the current iteration, save a checkpoint, exit with a resume hint.

SigintStop.active() wraps `trainer.run` (see `Run.fit`): the first Ctrl-C asks ignite to terminate after
the current iteration (`Engine.terminate`), and a second one aborts at once. SigintStop.attach_checkpoint
saves a training checkpoint at the resulting Events.TERMINATE; `active()` then raises `RunInterrupted`,
which run.py prints as one line and exits with 130.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from ignite.engine import Engine, Events

from core.cli import SIGINT_EXIT
from core.errors import UserError
from handlers.checkpoint import refuse_non_finite_weights



class RunInterrupted(UserError):
    """Training stopped by Ctrl-C after saving a checkpoint; run.py exits with `exit_code`."""
    exit_code = SIGINT_EXIT
    label = "interrupted"


class SigintStop:
    """Ctrl-C during `trainer.run`: finish the iteration, save a checkpoint, raise RunInterrupted.

    `active()` wraps trainer.run (Run.fit): while it is active the first Ctrl-C asks ignite to terminate after
    the current iteration, and a second one aborts at once. `attach_checkpoint` (rank 0) saves a training
    checkpoint at the resulting Events.TERMINATE. `requested` and `last_checkpoint` say what happened.
    """

    def __init__(self, trainer: Engine, output_dir):
        self.trainer, self.output_dir = trainer, output_dir
        self.requested = False
        self.last_checkpoint = None  # the checkpoint saved after a Ctrl-C

    def attach_checkpoint(self, model, checkpointer) -> None:
        """At Events.TERMINATE caused by Ctrl-C, save a training checkpoint with `checkpointer` (weights checked)."""
        guard = refuse_non_finite_weights(model)

        def save(engine: Engine) -> None:
            if self.requested:
                guard(engine)
                checkpointer(engine)  # same file name as an epoch-end save of this iteration: rewritten, never lost
                self.last_checkpoint = checkpointer.last_checkpoint

        self.trainer.add_event_handler(Events.TERMINATE, save)

    @contextmanager
    def active(self):
        """While active, Ctrl-C stops the trainer cleanly; raises RunInterrupted when it did."""
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            yield
            return
        self.requested = False
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.requested:
            state, saved = self.trainer.state, self.last_checkpoint
            raise RunInterrupted(f"training stopped by Ctrl-C at epoch {state.epoch}, iteration {state.iteration}"
                                 f"{f'; saved {saved}' if saved else ''}: continue it with python run.py "
                                 f"--resume auto --output-dir {self.output_dir} (and the other flags of this run)")

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.requested = True
        self.trainer.terminate(skip_completed=True)
        print("\nCtrl-C: stopping after this iteration and saving a checkpoint (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)
