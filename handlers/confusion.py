"""Confusion matrix and per-class test accuracy (ignite ConfusionMatrix, without its per-batch syncs), in
summary.json and as a heatmap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import ConfusionMatrix
from ignite.metrics.metric import reinit__is_reduced

from run_folder.plots import plt, render_figure, save_png


def per_class_accuracy(matrix: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """Share of each true class predicted right (rows are true classes); None for a class with no test image."""
    totals = matrix.sum(axis=1)
    return {c: (float(matrix[i, i] / totals[i]) if totals[i] else None) for i, c in enumerate(classes)}


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str = "confusion matrix (test)"):
    fig, ax = plt.subplots(figsize=(2.0 + 0.55 * len(classes), 1.6 + 0.5 * len(classes)))
    image = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    # Fixed margins with room for the class names: tight_layout would double the drawing time.
    fig.subplots_adjust(left=0.18, bottom=0.2, right=0.9, top=0.93)
    return fig


class SyncFreeConfusionMatrix(ConfusionMatrix):
    """ignite's ConfusionMatrix, counted without a host-device sync per batch.

    ignite's update drops labels outside [0, num_classes) with a boolean mask (`y[mask]` must wait
    for the device to know how many remain) and counts with torch.bincount (on CUDA it reads the
    largest index back to size its output): three syncs per evaluation batch. Here every
    (true, predicted) pair is added into the matrix with index_add_, and a label outside the range
    adds 0, so the counts are the same and the host never waits.
    """

    @reinit__is_reduced
    def update(self, output) -> None:
        self._check_shape(output)
        y_pred, y = output[0].detach(), output[1].detach()
        self._num_examples += y_pred.shape[0]
        predicted = torch.argmax(y_pred, dim=1).flatten()
        y = y.flatten().to(predicted.device)
        valid = (y >= 0) & (y < self.num_classes)
        cells = torch.where(valid, self.num_classes * y + predicted, torch.zeros_like(predicted))
        counts = self.confusion_matrix.view(-1)
        counts.index_add_(0, cells.to(counts.device), valid.to(counts.device, counts.dtype))


class ConfusionTracker:
    """After each evaluation: matrix and per-class accuracy into run.summary_extra (and TensorBoard)."""

    def __init__(self, run, tb_logger=None):
        self.run, self.tb_logger = run, tb_logger
        self.classes = list(run.data.classes)
        self.matrix: np.ndarray | None = None

    def attach(self, write: bool = True) -> "ConfusionTracker":
        # Attached on every rank: the metric's all-reduce needs them all; only rank 0 writes.
        SyncFreeConfusionMatrix(num_classes=len(self.classes), device=self.run.device).attach(
            self.run.evaluator, "confusion_matrix")
        self.run.evaluator.add_event_handler(Events.COMPLETED, self._record)
        if write:
            self.run.trainer.add_event_handler(Events.COMPLETED, self._plot)
        return self

    def _record(self, evaluator) -> None:
        self.matrix = evaluator.state.metrics["confusion_matrix"].cpu().numpy().astype(np.int64)  # once per epoch
        accuracy = per_class_accuracy(self.matrix, self.classes)
        self.run.summary_extra["confusion_matrix"] = {"classes": self.classes, "rows_true_cols_predicted":
                                                      self.matrix.tolist()}
        self.run.summary_extra["per_class_accuracy"] = accuracy
        if self.tb_logger is not None:
            step = self.run.trainer.state.epoch
            for name, value in accuracy.items():
                if value is not None:
                    self.tb_logger.writer.add_scalar(f"test_per_class_accuracy/{name}", value, step)
            self.tb_logger.writer.add_image("test/confusion_matrix", render_figure(
                confusion_figure(self.matrix, self.classes)), step, dataformats="HWC")

    def _plot(self, _) -> None:
        if self.matrix is not None:
            save_png(render_figure(confusion_figure(self.matrix, self.classes), dpi=110),
                     Path(self.run.output_dir) / "plots" / "confusion_matrix.png")
