"""--val-split: a held-out validation set evaluated every epoch beside the test set, and the best model chosen on it."""
from __future__ import annotations

import csv

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data.datasets import load_dataset
from data.loaders import cpu_eval_loader
from engine.trainer import create_evaluator
from models import load_trained
from tests.conftest import LR, read_summary, train

EPOCHS = 3


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val_run")
    assert train(out, "--val-split", "0.25", "--epochs", EPOCHS, *LR) == 0
    return out


def test_every_epoch_has_validation_metrics_beside_test(val_run):
    s = read_summary(val_run)
    rows = s["history"]
    assert len(rows) == EPOCHS
    assert all(0 <= r["val_accuracy"] <= 1 and r["val_loss"] > 0 for r in rows)
    best = max(rows, key=lambda r: r["val_accuracy"])
    assert (s["best_val_accuracy"], s["best_val_epoch"]) == (best["val_accuracy"], best["epoch"])
    assert s["final_val_accuracy"] == rows[-1]["val_accuracy"]
    with open(val_run / "history.csv") as f:
        header = next(csv.reader(f))
    raw = ["raw_test_loss", "raw_test_accuracy", "raw_val_accuracy"] if s["config"]["ema"] else []  # --ema
    assert header == ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss",
                      "val_accuracy", *raw, "seconds"]
    acc = EventAccumulator(str(val_run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("val/accuracy")] == list(range(1, EPOCHS + 1))
    assert [e.value for e in acc.Scalars("val/accuracy")] == pytest.approx([r["val_accuracy"] for r in rows])


def test_the_best_model_is_chosen_on_validation_and_scores_what_the_summary_says(val_run):
    s = read_summary(val_run)
    saved = list((val_run / "checkpoints").glob("best_model_*.pt"))
    assert len(saved) == 1 and "val_accuracy" in saved[0].name
    assert saved[0].name.startswith(f"best_model_{s['best_val_epoch']}_")
    # The validation images are the 25% held out of the 256 training images, none of them trained on.
    data = load_dataset("fake", subset=256, seed=0, val_split=0.25)
    assert (len(data.train_y), len(data.val_y)) == (192, 64)
    model, meta = load_trained(saved[0])
    assert (meta["chosen_on"], meta["epoch"]) == ("val_accuracy", s["best_val_epoch"])
    assert meta["score"] == pytest.approx(s["best_val_accuracy"])
    evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    evaluator.run(cpu_eval_loader(data.val_x, data.val_y, data.mean, data.std, 64, 0))
    assert evaluator.state.metrics["accuracy"] == pytest.approx(s["best_val_accuracy"])


def test_a_split_that_leaves_nothing_is_one_line(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("--dataset", "fake", "--subset", 5, "--val-split", "0.05", "--device", "cpu",
                   "--output-dir", tmp_path / "o")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--val-split" in proc.stderr
    proc = run_cli("--val-split", "1.5", "--output-dir", tmp_path / "o")
    assert proc.returncode == 2 and "--val-split" in proc.stderr
