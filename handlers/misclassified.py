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

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events

from run_folder.files import write_atomic
from run_folder.plots import plt, render_figure, save_png

FOLDER = "misclassified"


def mosaic(images: np.ndarray, columns: int, scale: int, gap: int, title_height: int) -> np.ndarray:
    """uint8 HWC images, each enlarged `scale` times (nearest), on a white sheet with room for a title above."""
    rows = max(1, math.ceil(len(images) / columns))
    h, w = images.shape[1] * scale, images.shape[2] * scale
    sheet = np.full((rows * (h + title_height + gap), columns * (w + gap), 3), 255, np.uint8)
    for k, image in enumerate(images):
        top, left = (k // columns) * (h + title_height + gap) + title_height, (k % columns) * (w + gap)
        sheet[top:top + h, left:left + w] = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return sheet


def misclassified_figure(images: np.ndarray, true: list[str], predicted: list[str], probability: list[float],
                         title: str, columns: int = 5, scale: int = 4):
    """A grid of uint8 HWC images, each titled with true class, predicted class and its probability."""
    captions = [f"true: {t}\npred: {p} ({prob:.0%})" for t, p, prob in zip(true, predicted, probability)]
    return captioned_figure(images, captions, title, columns, scale)


def captioned_figure(images: np.ndarray, captions: list[str], title: str, columns: int = 5, scale: int = 4):
    """A grid of uint8 HWC images, each with its caption above it (misclassified/*.png, gradcam_*.png).

    One axes holding one mosaic (not an axes per image): drawing stays cheap enough for every epoch.
    """
    gap, title_height = 8, 34
    sheet = mosaic(images, columns, scale, gap, title_height) if len(images) else np.full((64, 320, 3), 255, np.uint8)
    cell_w, cell_h = images.shape[2] * scale + gap if len(images) else 0, \
        images.shape[1] * scale + title_height + gap if len(images) else 0
    fig = plt.figure(figsize=(sheet.shape[1] / 100, sheet.shape[0] / 100 + 0.4))
    ax = fig.add_axes((0, 0, 1, sheet.shape[0] / (sheet.shape[0] + 40)))
    ax.imshow(sheet, interpolation="nearest")
    ax.axis("off")
    for k, caption in enumerate(captions):
        x, y = (k % columns) * cell_w + (cell_w - gap) / 2, (k // columns) * cell_h + title_height - 3
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=7.5)
    fig.suptitle(title if len(images) else f"{title}: no mistakes", fontsize=10, y=0.995, va="top")
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

    Indices assume the test loader is not shuffled (it is not). Under distributed evaluation each rank
    sees the strided shard rank, rank + world_size, ...: every rank attaches this (the gather is a
    collective), the shards are gathered into test-set order, and only the rank with `write` writes.
    """

    def __init__(self, run, every: int, count: int, tb_logger=None, write: bool = True, explain=None):
        self.run, self.every, self.count, self.tb_logger, self.write = run, every, count, tb_logger, write
        # explain(indices, predicted, true, probability, epoch): called with the grid's images after it is
        # written (handlers/gradcam.py), so extra views cost nothing on epochs without a dump.
        self.explain = explain
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
        if self._parts is None:  # not a dump epoch (the same decision on every rank)
            return
        # One (n, 4) float64 table per rank: float64 holds the class indices exactly.
        local = torch.stack([torch.cat(t).double() for t in zip(*self._parts)], 1) if self._parts \
            else torch.zeros((0, 4), dtype=torch.float64, device=self.run.device)
        self._parts = None
        table = gather_strided_shards(local).cpu().numpy()
        if not self.write:
            return
        predicted, probability, loss, y = table[:, 0].astype(np.int64), table[:, 1], table[:, 2], \
            table[:, 3].astype(np.int64)
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
        grid = render_figure(misclassified_figure(self.run.data.test_x[worst], names(y[worst]),
                                                  names(predicted[worst]), probability[worst].tolist(), title))
        save_png(grid, folder / f"epoch_{epoch:02d}.png")
        if self.tb_logger is not None:
            self.tb_logger.writer.add_image("test/misclassified", grid, epoch, dataformats="HWC")
        if self.explain is not None and len(worst):
            self.explain(worst, predicted[worst], y[worst], probability[worst], epoch)


def gather_strided_shards(local: torch.Tensor) -> torch.Tensor:
    """Rows of every rank's strided shard (rank r holds items r, r + W, ...) back in item order.

    One process: `local` itself. Shards may differ in length by one (no padding).
    """
    world = idist.get_world_size()
    if world == 1:
        return local
    lengths = [int(n) for n in idist.all_gather(len(local))]
    shards = idist.all_gather_tensors_with_shapes(local, [[n, local.shape[1]] for n in lengths])
    table = local.new_empty((sum(lengths), local.shape[1]))
    for rank, shard in enumerate(shards):
        table[rank::world] = shard.to(table.device)
    return table
