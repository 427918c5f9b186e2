"""TensorBoard logs through ignite's TensorboardLogger (which writes with tensorboardX) in OUTPUT/tensorboard.

Scalars: train/loss_iter and train/lr at every iteration (step = iteration); train/loss, train/accuracy,
test/loss, test/accuracy (and val/loss, val/accuracy with --val-split) every epoch (step = epoch). Figures: lr_finder/range_test, lr/one_cycle.
The confusion and misclassified handlers add per-class accuracy and their images to the same logger
(test/misclassified_gradcam with the explain extra; test/interpretation text; test/accuracy_tta with --tta).
hparams (in OUTPUT/tensorboard/hparams) hold the settings with the final metrics.
"""
from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger

from run_folder.plots import lr_finder_figure, one_cycle_figure

FOLDER = "tensorboard"


class TensorBoardWriter:
    """Per-iteration losses stay on the device until the epoch ends, then cross to the host in one copy."""

    def __init__(self, run):
        self._closed = False
        self.run = run
        self.logger = TensorboardLogger(log_dir=str(Path(run.output_dir) / FOLDER))
        self._losses: list[torch.Tensor] = []
        self._last_written = 0  # iteration of the last loss written

    @property
    def writer(self):
        return self.logger.writer

    def attach(self) -> "TensorBoardWriter":
        trainer = self.run.trainer
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._buffer_loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, self._completed)
        rt = self.run.range_test
        if rt is not None:
            self.writer.add_figure("lr_finder/range_test", lr_finder_figure(rt.to_dict()))
        return self

    def _started(self, trainer: Engine) -> None:
        self._losses.clear()
        self._last_written = trainer.state.iteration  # a resumed run starts past 0
        if not trainer.has_event_handler(self.close, Events.COMPLETED):
            # Registered now, so it runs after every COMPLETED handler attached before run(), custom ones too.
            trainer.add_event_handler(Events.COMPLETED, self.close)

    def _buffer_loss(self, trainer: Engine) -> None:
        self._losses.append(trainer.state.output["loss"])  # a detached device tensor: no sync here

    def _flush_iterations(self) -> None:
        if not self._losses:
            return
        losses = torch.stack(self._losses).float().tolist()  # the one host-device sync per epoch
        lrs = self.run.lr_recorder.lrs  # lrs[i] is the LR of iteration i + 1
        for step, loss in enumerate(losses, start=self._last_written + 1):
            self.writer.add_scalar("train/loss_iter", loss, step)
            self.writer.add_scalar("train/lr", lrs[step - 1], step)
        self._last_written += len(losses)
        self._losses.clear()

    def _epoch_completed(self, trainer: Engine) -> None:
        self._flush_iterations()
        row = self.run.history.rows[-1]
        for split in ("train", "val", "test"):
            for metric in ("loss", "accuracy"):
                if f"{split}_{metric}" in row:  # val_* only with --val-split
                    self.writer.add_scalar(f"{split}/{metric}", row[f"{split}_{metric}"], row["epoch"])
        if "test_accuracy_tta" in row:  # --tta
            self.writer.add_scalar("test/accuracy_tta", row["test_accuracy_tta"], row["epoch"])
        for key in ("raw_test_loss", "raw_test_accuracy", "raw_val_accuracy"):  # --ema: the trained weights' own
            if key in row:
                split, metric = key.split("_")[1:]
                self.writer.add_scalar(f"{split}/{metric}_raw", row[key], row["epoch"])
        self.writer.flush()

    def _completed(self, trainer: Engine) -> None:
        self._flush_iterations()
        self.writer.add_figure("lr/one_cycle", one_cycle_figure(self.run.lr_recorder.lrs, self.run.lr_max),
                               trainer.state.iteration)
        rows = self.run.history.rows
        if rows:
            final, best = rows[-1], max(r["test_accuracy"] for r in rows)
            metrics = {"hparam/final_test_accuracy": final["test_accuracy"], "hparam/best_test_accuracy": best,
                       "hparam/final_test_loss": final["test_loss"], "hparam/epochs_completed": len(rows)}
            if "val_accuracy" in final:
                metrics.update({"hparam/final_val_accuracy": final["val_accuracy"],
                                "hparam/best_val_accuracy": max(r["val_accuracy"] for r in rows)})
            self.writer.add_hparams(hparams(self.run), metrics, name="hparams")
        self.writer.flush()

    def close(self, _=None) -> None:
        """Idempotent: called at COMPLETED and again by Run.fit whatever way the run ended."""
        if not self._closed:
            self._closed = True
            self.logger.close()


def hparams(run) -> dict:
    """The settings TensorBoard's HPARAMS tab can show: numbers, strings and booleans (None as "None")."""
    keep = ("dataset", "subset", "val_split", "width", "epochs", "batch_size", "weight_decay", "peak_epoch", "seed")
    values = {k: run.config.to_dict()[k] for k in keep}
    values.update(lr_min=run.lr_min, lr_max=run.lr_max, device=str(run.device))
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in values.items()}
