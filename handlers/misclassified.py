"""The test images the model gets wrong: a grid of the highest-loss mistakes and a CSV of every mistake.

OUTPUT/misclassified/epoch_XX.png and epoch_XX.csv (index into the test set, true and predicted class,
predicted probability, loss), every N epochs and after the last. Per-sample results are gathered on the
device during the evaluation and copied to the host once, at its end.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events

from handlers.outputs import write_atomic
from handlers.plots import plt, save_figure

FOLDER = "misclassified"


def misclassified_figure(images: np.ndarray, true: list[str], predicted: list[str], probability: list[float],
                         title: str, columns: int = 5):
    """A grid of uint8 HWC images, each titled "true -> predicted (probability)"."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p, prob in zip(axes.flat, images, true, predicted, probability):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"true: {t}\npred: {p} ({prob:.0%})", fontsize=8)
    fig.suptitle(title if len(images) else f"{title}: no mistakes")
    return fig


def mistakes_csv(index: np.ndarray, true: list[str], predicted: list[str], probability: np.ndarray,
                 loss: np.ndarray) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", "true", "predicted", "probability", "loss"])
    for row in zip(index.tolist(), true, predicted, probability.tolist(), loss.tolist()):
        writer.writerow([row[0], row[1], row[2], f"{row[3]:.6f}", f"{row[4]:.6f}"])
    return out.getvalue()


class MisclassifiedDump:
    """Gathers (predicted class, probability, loss, label) per test image on dump epochs, then writes the files.

    Indices assume the test loader is not shuffled (it is not); under distributed evaluation each
    rank sees a shard, and this dump covers rank 0's shard only.
    """

    def __init__(self, run, every: int, count: int, tb_logger=None):
        self.run, self.every, self.count, self.tb_logger = run, every, count, tb_logger
        self._parts: list[tuple[torch.Tensor, ...]] | None = None

    def attach(self) -> "MisclassifiedDump":
        self.run.evaluator.add_event_handler(Events.STARTED, self._start)
        self.run.evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._gather)
        self.run.evaluator.add_event_handler(Events.COMPLETED, self._dump)
        return self

    def _is_dump_epoch(self) -> bool:
        state = self.run.trainer.state
        return state.epoch > 0 and (state.epoch % self.every == 0 or state.epoch == state.max_epochs)

    def _start(self, _) -> None:
        self._parts = [] if self._is_dump_epoch() else None

    def _gather(self, evaluator) -> None:
        if self._parts is None:
            return
        logits, y = evaluator.state.output
        probability, predicted = logits.float().softmax(dim=1).max(dim=1)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        self._parts.append((predicted, probability, loss, y))

    def _dump(self, _) -> None:
        if not self._parts:
            return
        predicted, probability, loss, y = (torch.cat(t).cpu().numpy() for t in zip(*self._parts))
        self._parts = None
        wrong = np.flatnonzero(predicted != y)
        classes = self.run.data.classes
        epoch = self.run.trainer.state.epoch
        folder = Path(self.run.output_dir) / FOLDER
        names = lambda ids: [classes[i] for i in ids]  # noqa: E731
        write_atomic(folder / f"epoch_{epoch:02d}.csv",
                     mistakes_csv(wrong, names(y[wrong]), names(predicted[wrong]), probability[wrong], loss[wrong]))
        worst = wrong[np.argsort(-loss[wrong], kind="stable")[: self.count]]
        title = f"epoch {epoch}: {len(worst)} highest-loss of {len(wrong)} mistakes in {len(y)} test images"
        # The stored uint8 HWC images: true colours and the right way round, no de-normalising needed.
        grid = misclassified_figure(self.run.data.test_x[worst], names(y[worst]), names(predicted[worst]),
                                    probability[worst].tolist(), title)
        if self.tb_logger is not None:
            self.tb_logger.writer.add_figure("test/misclassified", grid, epoch, close=False)
        save_figure(grid, folder / f"epoch_{epoch:02d}.png")
