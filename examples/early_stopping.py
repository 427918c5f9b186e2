"""Stop training once test accuracy has not improved for PATIENCE epochs (ignite's EarlyStopping).

From the command line (run from the repository root):
    python run.py --handler examples.early_stopping:attach
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
    run.evaluator.add_event_handler(Events.COMPLETED, stopper)

    def say_why(_):  # report.html's verdict shows run.stop_reason when a handler ends the run
        if run.trainer.should_terminate:
            run.stop_reason = (f"early stopping: the test accuracy did not improve on {stopper.best_score:.2%} "
                               f"for {patience} epochs")

    run.evaluator.add_event_handler(Events.COMPLETED, say_why)
    return stopper


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from training.builder import build_run
    from engine.config import Config

    # A quick CPU run on generated data; Config() alone is the assignment's CIFAR-10 recipe.
    config = Config(dataset="fake", subset=512, epochs=6, batch_size=64, width=16, workers=0, device="cpu",
                    lr_min=1e-3, lr_max=1e-2, progress=False)  # output: runs/<timestamp>
    run = build_run(config)
    attach(run, patience=2)
    summary = run.fit()
    print(f"stopped after {summary['epochs_completed']} of {config.epochs} epochs; "
          f"best test accuracy {summary['best_test_accuracy']:.2%}; outputs in {run.output_dir}")
