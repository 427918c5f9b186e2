"""--tta: test accuracy of the softmax averaged over each image and its mirror, reported beside the plain one."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data.datasets import load_dataset
from data.loaders import cpu_eval_loader
from engine.trainer import create_evaluator
from models import CustomResNet, load_trained
from tests.conftest import LR, read_summary, train


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta")
    # --ema 0: the trained weights, whose flipped images change some predictions; an 8-step average of a model
    # of random images is near-uniform (every image one class), which would leave nothing for the mirror to change.
    assert train(out, "--epochs", "2", "--tta", "--ema", "0", *LR) == 0
    return out


def test_tta_accuracy_is_that_of_the_saved_models_flip_averaged_predictions(tta_run):
    summary = read_summary(tta_run)
    (best,) = (tta_run / "checkpoints").glob("best_model_*.pt")
    assert "_test_accuracy=" in best.name  # chosen on the plain test accuracy, as without --tta
    model, meta = load_trained(best)
    row = summary["history"][meta["epoch"] - 1]
    data = load_dataset("fake", subset=256, seed=0)
    x = torch.from_numpy(data.test_x).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        plain = model(x).softmax(1)
        averaged = (plain + model(torch.flip(x, dims=[3])).softmax(1)) / 2
    y = torch.from_numpy(data.test_y)
    assert (averaged.argmax(1) != plain.argmax(1)).any()  # the mirror changes some predictions: not a no-op
    assert row["test_accuracy_tta"] == pytest.approx((averaged.argmax(1) == y).float().mean().item())
    assert row["test_accuracy"] == pytest.approx((plain.argmax(1) == y).float().mean().item())
    rows = summary["history"]
    assert summary["final_test_accuracy_tta"] == rows[-1]["test_accuracy_tta"]
    assert summary["best_test_accuracy_tta"] == max(r["test_accuracy_tta"] for r in rows)
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in rows)  # the plain ones, unchanged


def test_tta_is_in_the_csv_and_tensorboard(tta_run):
    with open(tta_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert "test_accuracy_tta" in rows[0] and "test_accuracy" in rows[0]
    acc = EventAccumulator(str(tta_run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [e.value for e in acc.Scalars("test/accuracy_tta")] == pytest.approx(
        [float(r["test_accuracy_tta"]) for r in rows])


def test_without_tta_the_evaluator_runs_one_forward_pass_per_batch():
    data = load_dataset("fake", subset=100, seed=0)
    model = CustomResNet(width=4).eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    loader = cpu_eval_loader(data.test_x, data.test_y, data.mean, data.std, 8, 0)  # 20 images: 3 batches
    metrics = {}
    for tta in (False, True):
        calls.clear()
        evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), torch.device("cpu"), tta=tta)
        evaluator.run(loader)
        metrics[tta] = evaluator.state.metrics
        assert len(calls) == (2 if tta else 1) * len(loader)
    assert "accuracy_tta" not in metrics[False] and "accuracy_tta" in metrics[True]
    for key in ("accuracy", "loss", "examples"):  # the plain metrics are the same with --tta
        assert metrics[True][key] == metrics[False][key]
    assert np.isfinite(metrics[True]["accuracy_tta"])
