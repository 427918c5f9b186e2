"""Ctrl-C (SIGINT) during training: finish the current iteration, save a checkpoint, exit with a resume hint.

`stop_on_sigint(run)` wraps `trainer.run` (see `Run.fit`): while it is active the first Ctrl-C asks
ignite to terminate after the current iteration (`Engine.terminate`), and a second one aborts at once.
`attach_interrupt_checkpoint` saves a training checkpoint at the resulting Events.TERMINATE; the
context manager then raises `RunInterrupted`, which run.py prints as one line and exits with 130.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from ignite.engine import Engine, Events

from core.errors import UserError
from handlers.checkpoint import refuse_non_finite_weights

SIGINT_EXIT_CODE = 130  # the shell's code for a process ended by SIGINT (128 + 2)


class RunInterrupted(UserError):
    """Training stopped by Ctrl-C after saving a checkpoint; run.py exits with `exit_code`."""
    exit_code = SIGINT_EXIT_CODE
    label = "interrupted"


class _SigintFlag:
    requested = False


def attach_interrupt_checkpoint(run, checkpointer) -> None:
    """At Events.TERMINATE caused by Ctrl-C, save a training checkpoint with `checkpointer` (weights checked first)."""
    guard = refuse_non_finite_weights(run.model)

    def save(engine: Engine) -> None:
        if getattr(run, "sigint", _SigintFlag).requested:
            guard(engine)
            checkpointer(engine)  # same file name as an epoch-end save of this iteration: rewritten, never lost
            run.last_checkpoint = checkpointer.last_checkpoint

    run.trainer.add_event_handler(Events.TERMINATE, save)


@contextmanager
def stop_on_sigint(run):
    """While active, Ctrl-C stops `run.trainer` cleanly; raises RunInterrupted when it did."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    flag = run.sigint = _SigintFlag()
    trainer = run.trainer

    def on_sigint(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        flag.requested = True
        trainer.terminate(skip_completed=True)
        print("\nCtrl-C: stopping after this iteration and saving a checkpoint (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if flag.requested:
        state = trainer.state
        saved = getattr(run, "last_checkpoint", None)
        raise RunInterrupted(f"training stopped by Ctrl-C at epoch {state.epoch}, iteration {state.iteration}"
                             f"{f'; saved {saved}' if saved else ''}: continue it with python run.py "
                             f"--resume auto --output-dir {run.output_dir} (and the other flags of this run)")
