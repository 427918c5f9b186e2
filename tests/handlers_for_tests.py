"""Custom handlers the tests pass with --handler."""
from __future__ import annotations

import json

from ignite.engine import Events

NOT_A_FUNCTION = 42


def count_events(run) -> None:
    """Count the trainer's iterations and epochs; write them to OUTPUT/handler_counts.json at the end."""
    counts = {"iterations": 0, "epochs": 0}

    def bump(key):
        counts[key] += 1

    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bump("iterations"))
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: bump("epochs"))
    run.trainer.add_event_handler(
        Events.COMPLETED, lambda _: (run.output_dir / "handler_counts.json").write_text(json.dumps(counts)))


def stop_after_first_epoch(run) -> None:
    """Stop the run at the end of epoch 1 as an interruption would: no COMPLETED event, summary incomplete."""
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate(skip_completed=True))
