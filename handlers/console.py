"""What rank 0 prints while it trains: ignite's ProgressBar on a terminal, otherwise one line per epoch.

A bar redraws itself with carriage returns: in a log file, CI output or nohup.out that is a stream of
overwritten fragments (and tqdm goes to stderr, so a log of stdout alone would show nothing for the
whole run). Away from a terminal, or with --no-progress, each epoch ends with one plain line instead.
"""
from __future__ import annotations

import sys
from typing import TextIO

from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine, Events

from run_folder.summary import format_duration


def wants_bar(progress: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """A bar only when asked for, and in a Jupyter notebook or when both streams are terminals (the bar draws on
    stderr; stdout may be a log)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    return progress and (in_notebook() or (_isatty(stdout) and _isatty(stderr)))


def in_notebook() -> bool:
    """Running in a Jupyter kernel (Colab, Kaggle, JupyterLab): tqdm draws the bar there as a widget or a line."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Shell: Colab's kernel


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced stream without isatty, or a closed one
        return False


def format_epoch_line(row: dict, epochs: int, eta_seconds: float) -> str:
    """epoch 3/24  lr 1.23e-03  train loss 1.2345 acc 56.78%  [val ...]  test loss ... acc ...  12.3 s  ETA 4 min 36 s"""
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}", f"lr {row['lr']:.3e}"]
    for split in ("train", "val", "test"):
        if f"{split}_loss" in row:  # val_* only with --val-split
            parts.append(f"{split} loss {row[f'{split}_loss']:.4f} acc {row[f'{split}_accuracy']:.2%}")
    parts += [format_duration(row["seconds"]), f"ETA {format_duration(eta_seconds)}"]
    return "  ".join(parts)


class EpochLines:
    """After each epoch, one line from the metric history's newest row; the ETA is the mean epoch time so far
    (epochs run by this process: a resumed run's earlier epochs may have run on another machine) times the
    epochs left."""

    def __init__(self, history, epochs: int, stream: TextIO | None = None):
        self.history, self.epochs, self.stream = history, epochs, stream
        self._seconds: list[float] = []

    def attach(self, trainer: Engine) -> "EpochLines":
        """Attach after the MetricHistory, so the epoch's row exists when the line is printed."""
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._print)
        return self

    def _print(self, trainer: Engine) -> None:
        row = self.history.rows[-1]
        self._seconds.append(row["seconds"])
        eta = sum(self._seconds) / len(self._seconds) * max(0, self.epochs - row["epoch"])
        print(format_epoch_line(row, self.epochs, eta), file=self.stream or sys.stdout, flush=True)


def attach_console(trainer: Engine, history, epochs: int, progress: bool) -> None:
    """The bar on a terminal (as ignite draws it), else a line per epoch. Rank 0 only: the caller checks."""
    if wants_bar(progress):
        ProgressBar(persist=False, desc="train").attach(trainer)
    else:
        EpochLines(history, epochs).attach(trainer)
