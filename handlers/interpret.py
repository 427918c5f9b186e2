"""What the mistakes are: the most confused class pairs and per-class precision, recall and F1.

Computed from the test confusion matrix the run already has (handlers/confusion.py) once per
evaluation: no extra metric, pass or sync. Written to summary.json (`most_confused`,
`per_class_metrics`, `macro_avg`) and to TensorBoard as text (test/interpretation).
"""
from __future__ import annotations

import numpy as np
from ignite.engine import Events

TOP_PAIRS = 10


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def per_class_metrics(matrix: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """precision, recall, f1, support per class (rows of `matrix` = true class, columns = predicted).

    Undefined values (a class never predicted has no precision; one with no test image has no recall)
    are None, not 0. F1 = 2 TP / (2 TP + FP + FN): the harmonic mean of precision and recall where
    both exist, 0 for a class that has images or predictions but no hit (as scikit-learn computes it).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    return {c: {"precision": _ratio(tp[i], predicted[i]), "recall": _ratio(tp[i], support[i]),
                "f1": _ratio(2 * tp[i], predicted[i] + support[i]), "support": int(support[i])}
            for i, c in enumerate(classes)}


def macro_average(metrics: dict[str, dict]) -> dict[str, float | None]:
    """The unweighted mean over classes of each metric, over the classes where it is defined."""
    out = {}
    for key in ("precision", "recall", "f1"):
        values = [m[key] for m in metrics.values() if m[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def most_confused(matrix: np.ndarray, classes: list[str], top: int = TOP_PAIRS) -> list[dict]:
    """The off-diagonal cells with the most images, largest first: true -> predicted, count, share of the true class."""
    matrix = np.asarray(matrix, dtype=np.int64)
    support = matrix.sum(axis=1)
    cells = [(int(matrix[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
             if i != j and matrix[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))  # ties in class order: the same list every time
    return [{"true": classes[i], "predicted": classes[j], "count": n, "share_of_true": float(n / support[i])}
            for n, i, j in cells[:top]]


def interpretation_markdown(pairs: list[dict], metrics: dict[str, dict], macro: dict) -> str:
    """The same as a Markdown text (TensorBoard's text tab renders tables)."""
    def fmt(v):
        return "-" if v is None else f"{v:.3f}"
    lines = ["**Most confused (true -> predicted)**", "", "| true | predicted | count | share of true |",
             "|---|---|---|---|"]
    lines += [f"| {p['true']} | {p['predicted']} | {p['count']} | {p['share_of_true']:.1%} |" for p in pairs]
    lines += ["", "**Per class**", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {fmt(m['precision'])} | {fmt(m['recall'])} | {fmt(m['f1'])} | {m['support']} |"
              for c, m in metrics.items()]
    lines.append(f"| macro avg | {fmt(macro['precision'])} | {fmt(macro['recall'])} | {fmt(macro['f1'])} | |")
    return "\n".join(lines)


class Interpretation:
    """After each test evaluation (attached after ConfusionTracker, rank 0): summary keys and a TensorBoard text."""

    def __init__(self, run, tracker, tb_logger=None):
        self.run, self.tracker, self.tb_logger = run, tracker, tb_logger

    def attach(self) -> "Interpretation":
        self.run.evaluator.add_event_handler(Events.COMPLETED, self._record)
        return self

    def _record(self, _) -> None:
        matrix, classes = self.tracker.matrix, self.tracker.classes
        if matrix is None:
            return
        metrics = per_class_metrics(matrix, classes)
        pairs, macro = most_confused(matrix, classes), macro_average(metrics)
        self.run.summary_extra.update(most_confused=pairs, per_class_metrics=metrics, macro_avg=macro)
        if self.tb_logger is not None:
            self.tb_logger.writer.add_text("test/interpretation", interpretation_markdown(pairs, metrics, macro),
                                           self.run.trainer.state.epoch)
