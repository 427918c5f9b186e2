"""What a best-model file carries beside the weights (models/trained.py reads it back with load_trained)."""
from __future__ import annotations

from models.trained import model_meta


class BestModelMeta:
    """Saved as "meta" next to "model" by the best-model Checkpoint: read when the file is written.

    state_dict() runs inside the Checkpoint call, at the epoch end that made the model the best, so
    the epoch and score are the ones the file name shows.
    """

    def __init__(self, run):
        self.run = run

    def state_dict(self) -> dict:
        run = self.run
        return model_meta(classes=run.data.classes, mean=run.data.mean, std=run.data.std, width=run.config.width,
                          config=run.config.to_dict(),
                          chosen_on="val_accuracy" if run.val_evaluator is not None else "test_accuracy",
                          score=float(run.selection_evaluator.state.metrics["accuracy"]),
                          epoch=run.trainer.state.epoch)

    def load_state_dict(self, state: dict) -> None:  # never loaded into a run: the file is for inference
        pass
