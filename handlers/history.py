"""Metric tracking: one row per epoch, and the LR the optimizer used at every iteration."""
from __future__ import annotations

import time

from ignite.engine import Engine, Events

from run_folder.summary import TTA_FIELD

class MetricHistory:
    """Rows of HISTORY_FIELDS, one per epoch, read from the engines' metrics once per epoch.

    Attach after the train metrics and the per-epoch evaluation, so both are ready when it records.
    `lr` is the LR of the epoch's last iteration; `seconds` covers training and the evaluation passes.
    With a validation evaluator, rows also hold `val_loss` and `val_accuracy`; with --ema (the evaluators score the
    weight average), `raw_test_loss`, `raw_test_accuracy` (and `raw_val_accuracy`): the trained weights' own.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.rows: list[dict] = []
        self._started = 0.0

    def attach(self, trainer: Engine, evaluator: Engine, val_evaluator: Engine | None = None,
               raw: dict[str, Engine] | None = None) -> "MetricHistory":
        """raw (--ema): {"test": engine[, "val": engine]} scoring the trained weights beside the average."""
        trainer.add_event_handler(Events.EPOCH_STARTED, self._start)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._record, evaluator, val_evaluator, raw or {})
        return self

    def _start(self, engine: Engine) -> None:
        self._started = time.perf_counter()

    def _record(self, trainer: Engine, evaluator: Engine, val_evaluator: Engine | None,
                raw: dict[str, Engine]) -> None:
        train, test = trainer.state.metrics, evaluator.state.metrics
        row = {
            "epoch": trainer.state.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(train["train_loss"]),
            "train_accuracy": float(train["train_accuracy"]),
            "test_loss": float(test["loss"]),
            "test_accuracy": float(test["accuracy"]),
        }
        if "accuracy_tta" in test:  # --tta
            row[TTA_FIELD] = float(test["accuracy_tta"])
        if val_evaluator is not None:
            row.update(val_loss=float(val_evaluator.state.metrics["loss"]),
                       val_accuracy=float(val_evaluator.state.metrics["accuracy"]))
        if "test" in raw:
            row.update(raw_test_loss=float(raw["test"].state.metrics["loss"]),
                       raw_test_accuracy=float(raw["test"].state.metrics["accuracy"]))
        if "val" in raw:
            row["raw_val_accuracy"] = float(raw["val"].state.metrics["accuracy"])
        row["seconds"] = time.perf_counter() - self._started
        self.rows.append(row)

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(r) for r in state["rows"]]


class LRRecorder:
    """The LR in the optimizer at the start of every iteration, after the scheduler has set it.

    Reading a Python float from param_groups costs no device sync.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.lrs: list[float] = []

    def attach(self, trainer: Engine) -> "LRRecorder":
        trainer.add_event_handler(Events.ITERATION_STARTED, self._record)
        return self

    def _record(self, engine: Engine) -> None:
        self.lrs.append(float(self.optimizer.param_groups[0]["lr"]))

    def state_dict(self) -> dict:
        return {"lrs": list(self.lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.lrs = list(state["lrs"])
