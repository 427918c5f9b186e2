"""Stop training once accuracy has not improved for PATIENCE epochs (ignite's EarlyStopping).

It watches the validation accuracy when the run holds a validation split (--val-split), so the
decision to stop is never tuned on the test set; without one it falls back to test accuracy.

From the command line (run from the repository root):
    python run.py --val-split 0.1 --handler examples.early_stopping:attach
As a custom run, with the same builder run.py uses:
    python examples/early_stopping.py

Stopping early also stops the One Cycle schedule before its LR has come back down to LRMIN.
"""
from __future__ import annotations

from ignite.engine import Events
from ignite.handlers import EarlyStopping

PATIENCE = 3


def attach(run, patience: int = PATIENCE) -> EarlyStopping:
    """Check after every evaluation; terminate the trainer after `patience` epochs without a better accuracy."""
    stopper = EarlyStopping(patience=patience, score_function=lambda evaluator: evaluator.state.metrics["accuracy"],
                            trainer=run.trainer)
    run.selection_evaluator.add_event_handler(Events.COMPLETED, stopper)  # validation if any, else test
    watched = "validation" if run.val_evaluator is not None else "test"

    def say_why(_):  # report.html's verdict shows run.stop_reason when a handler ends the run
        if run.trainer.should_terminate:
            run.stop_reason = (f"early stopping: the {watched} accuracy did not improve on {stopper.best_score:.2%} "
                               f"for {patience} epochs")

    run.selection_evaluator.add_event_handler(Events.COMPLETED, say_why)
    return stopper


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from training import Config, build_run

    # A quick CPU run on generated data; Config() alone is the assignment's CIFAR-10 recipe.
    config = Config(dataset="fake", subset=512, val_split=0.2, epochs=6, batch_size=64, width=16, workers=0,
                    device="cpu", lr_min=1e-3, lr_max=1e-2, progress=False)  # output: runs/<timestamp>
    run = build_run(config)
    attach(run, patience=2)
    summary = run.fit()
    print(f"stopped after {summary['epochs_completed']} of {config.epochs} epochs; "
          f"best validation accuracy {summary['best_val_accuracy']:.2%}; outputs in {run.output_dir}")
