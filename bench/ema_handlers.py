"""Weight averages of several momenta scored beside one training run (`python run.py --handler
bench/ema_handlers.py:FUNCTION`), to choose `--ema` on a validation split.

Averaging never changes the trajectory (ignite's EMAHandler only reads the trained weights after each step), so
one run without --ema gives the baseline (its own columns) and every candidate momentum on the same weights: a
paired comparison, free of the seed noise two separate runs would add. Each epoch, every average is scored on
the validation split (on the test split only when there is none) and the accuracies go into summary.json under
`ema_candidates`: {momentum: {"val_accuracy": [...]}}.
"""
from __future__ import annotations

from ignite.engine import Events
from ignite.handlers import EMAHandler
from torch import nn

from engine.trainer import create_evaluator

MOMENTA = (0.01, 0.03, 0.1)


def ema_candidates(run, momenta=MOMENTA) -> None:
    """Score an average of each momentum in `momenta` on val (test without a split) at every epoch end."""
    if run.config.ema:
        raise RuntimeError("ema_candidates compares averages beside the trained weights: leave --ema out")
    scores = run.summary_extra.setdefault("ema_candidates", {})
    key, loader = ("val_accuracy", run.val_loader) if run.val_loader is not None else ("test_accuracy",
                                                                                       run.test_loader)
    for momentum in momenta:
        ema = EMAHandler(run.model, momentum=momentum, handle_buffers="update")
        ema.attach(run.trainer, name=f"ema_momentum_{momentum}")
        evaluator = create_evaluator(ema.ema_model, nn.CrossEntropyLoss(), run.device, run.speed)
        values = scores.setdefault(str(momentum), {key: []})[key]

        def score(_, evaluator=evaluator, values=values):
            evaluator.run(loader)
            values.append(float(evaluator.state.metrics["accuracy"]))
        # Before the history row is written: attached at build time, after MetricHistory, so it runs after the
        # run's own evaluation and its row; summary.json is rewritten at the next epoch end and at the finish.
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, score)
