"""Most confused pairs and per-class precision/recall/F1 from the confusion matrix, checked against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handlers.interpret import interpretation_markdown, macro_average, most_confused, per_class_metrics
from tests.conftest import read_summary

CLASSES = ["a", "b", "c", "d", "e"]


def predictions(seed: int = 0):
    """Labels and predictions where class 'd' is never predicted and class 'e' has no image (undefined cells)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=300, p=[0.4, 0.3, 0.2, 0.1])
    predicted = np.where(rng.random(300) < 0.6, y, rng.choice([0, 1, 2, 4], size=300))
    predicted[y == 3] = rng.choice([0, 1, 2, 4], size=(y == 3).sum())
    return y, predicted


def as_none(values):
    return [None if np.isnan(v) else float(v) for v in values]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_are_scikit_learns(seed):
    y, predicted = predictions(seed)
    matrix = confusion_matrix(y, predicted, labels=range(5))
    ours = per_class_metrics(matrix, CLASSES)
    # zero_division=nan: undefined values stay undefined (ours: None), and nan is left out of the macro average.
    p, r, f, support = precision_recall_fscore_support(y, predicted, labels=range(5), zero_division=np.nan)
    for key, theirs in (("precision", p), ("recall", r), ("f1", f)):
        got = [ours[c][key] for c in CLASSES]
        assert [g is None for g in got] == [np.isnan(t) for t in theirs], key
        assert [g for g in got if g is not None] == pytest.approx([t for t in theirs if not np.isnan(t)]), key
    assert [ours[c]["support"] for c in CLASSES] == support.tolist()
    assert ours["d"]["precision"] is None and ours["e"]["recall"] is None  # the cases the data was built for
    macro = macro_average(ours)
    p, r, f, _ = precision_recall_fscore_support(y, predicted, labels=range(5), average="macro", zero_division=np.nan)
    assert (macro["precision"], macro["recall"], macro["f1"]) == pytest.approx((p, r, f))


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    matrix = np.array([[50, 3, 9], [7, 40, 0], [9, 1, 30]])
    pairs = most_confused(matrix, ["cat", "dog", "fox"], top=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == \
        [("cat", "fox", 9), ("fox", "cat", 9), ("dog", "cat", 7)]  # ties in class order
    assert pairs[0]["share_of_true"] == pytest.approx(9 / 62)
    assert len(most_confused(matrix, ["cat", "dog", "fox"])) == 5  # every non-zero cell, zeros left out
    assert most_confused(np.diag([3, 4]), ["x", "y"]) == []


def test_a_run_reports_them_in_the_summary_and_tensorboard(full_run):
    summary = read_summary(full_run)
    classes = summary["confusion_matrix"]["classes"]
    matrix = np.array(summary["confusion_matrix"]["rows_true_cols_predicted"])
    assert summary["per_class_metrics"] == per_class_metrics(matrix, classes)  # JSON keeps floats exactly
    assert summary["most_confused"] == most_confused(matrix, classes)
    assert summary["macro_avg"]["recall"] == pytest.approx(np.mean([
        v["recall"] for v in summary["per_class_metrics"].values() if v["recall"] is not None]))
    acc = EventAccumulator(str(full_run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    texts = acc.Tensors("test/interpretation/text_summary")
    assert [t.step for t in texts] == [1, 2]
    last = texts[-1].tensor_proto.string_val[0].decode()
    assert last == interpretation_markdown(summary["most_confused"], summary["per_class_metrics"], summary["macro_avg"])
    assert "| macro avg |" in last and "**Most confused (true -> predicted)**" in last
