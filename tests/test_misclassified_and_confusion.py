"""Misclassified dumps match what the saved model predicts; confusion matrix and per-class accuracy."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from data.datasets import load_dataset
from data.loaders import cpu_loaders
from handlers.misclassified import misclassified_figure
from run_folder.plots import render_figure
from engine.trainer import StepSpeed
from models import CustomResNet
from tests.conftest import ITERS_PER_EPOCH, LR, read_summary, train

CPU = torch.device("cpu")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def saved_model_predictions(run_dir, epochs=2, speed=StepSpeed()):
    """Predicted class and probability per test image, from the last training checkpoint's scored weights, computed
    with the run's numerics (`speed`: fp32 NCHW by default, as FAST's --no-amp runs evaluate up to layout)."""
    data = load_dataset("fake", subset=256, seed=0)
    model = CustomResNet(num_classes=data.num_classes, width=8)
    state = torch.load(run_dir / "checkpoints" / f"checkpoint_{epochs * ITERS_PER_EPOCH}.pt", weights_only=True)
    model.load_state_dict(state.get("ema_model", state["model"]))  # the scored weights: with --ema, the average
    model.eval()
    layout = torch.channels_last if speed.channels_last else torch.preserve_format
    model.to(memory_format=layout)
    _, test_loader = cpu_loaders(data, 64, 0, 0)
    with torch.no_grad(), speed.autocast(CPU):
        probabilities = torch.cat([model(x.to(memory_format=layout)).float().softmax(1) for x, _ in test_loader])
    probability, predicted = probabilities.max(1)
    return data, predicted.numpy(), probability.numpy()


def test_listed_images_are_the_saved_models_mistakes(full_run):
    rows = read_csv(full_run / "misclassified" / "epoch_02.csv")
    data, predicted, probability = saved_model_predictions(full_run)
    wrong = np.flatnonzero(predicted != data.test_y)
    assert len(wrong) > 0
    assert sorted(int(r["index"]) for r in rows) == wrong.tolist()  # every mistake, and only mistakes
    for r in rows:
        i = int(r["index"])
        assert r["true"] == data.classes[data.test_y[i]]
        assert r["predicted"] == data.classes[predicted[i]] != r["true"]
        assert float(r["probability"]) == pytest.approx(float(probability[i]), abs=1e-5)
    losses = [float(r["loss"]) for r in rows]
    assert all(loss > 0 for loss in losses)
    assert (full_run / "misclassified" / "epoch_01.png").stat().st_size > 10_000
    assert (full_run / "misclassified" / "epoch_02.png").stat().st_size > 10_000


def test_a_bf16_run_lists_the_mistakes_its_own_numerics_make(tmp_path):
    """The default on a CPU with native bf16 (forced here, emulated elsewhere: width 8 keeps it quick): the list is
    the saved model's mistakes as bf16 autocast in channels_last computes them, which fp32 would not reproduce."""
    assert train(tmp_path, "--epochs", "1", "--amp", "--channels-last", *LR) == 0
    assert read_summary(tmp_path)["speed"] == "bf16 autocast, channels_last"
    rows = read_csv(tmp_path / "misclassified" / "epoch_01.csv")
    data, predicted, probability = saved_model_predictions(tmp_path, 1, StepSpeed(amp=True, channels_last=True))
    assert sorted(int(r["index"]) for r in rows) == np.flatnonzero(predicted != data.test_y).tolist()
    for r in rows:
        assert r["predicted"] == data.classes[predicted[int(r["index"])]]
        assert float(r["probability"]) == pytest.approx(float(probability[int(r["index"])]), abs=1e-5)


def test_grid_shows_images_upright_in_their_own_colours():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, :8, :, 0] = 255   # red band along the top edge
    image[0, :, :8, 2] = 255   # blue band down the left edge (a transposed grid would swap them)
    grid = render_figure(misclassified_figure(image, ["cat"], ["dog"], [0.9], "t", columns=1, scale=4))
    reddish = np.argwhere((grid[..., 0] > 200) & (grid[..., 1] < 60) & (grid[..., 2] < 60))
    bluish = np.argwhere((grid[..., 2] > 200) & (grid[..., 0] < 60) & (grid[..., 1] < 60))
    red_h = np.ptp(reddish[:, 0]) + 1
    red_w = np.ptp(reddish[:, 1]) + 1
    blue_h = np.ptp(bluish[:, 0]) + 1
    assert red_w > 2 * red_h  # the red band is wide and flat: the top edge, not the left one
    assert blue_h > 2 * (np.ptp(bluish[:, 1]) + 1)
    assert reddish[:, 0].min() < bluish[:, 0].mean()


def test_confusion_matrix_and_per_class_accuracy_in_summary(full_run):
    summary = read_summary(full_run)
    data = load_dataset("fake", subset=256, seed=0)
    matrix = np.array(summary["confusion_matrix"]["rows_true_cols_predicted"])
    assert summary["confusion_matrix"]["classes"] == data.classes
    assert matrix.sum(axis=1).tolist() == np.bincount(data.test_y, minlength=10).tolist()
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["final_test_accuracy"])
    wrong_in_csv = len(read_csv(full_run / "misclassified" / "epoch_02.csv"))
    assert matrix.sum() - np.trace(matrix) == wrong_in_csv
    for i, name in enumerate(data.classes):
        expected = matrix[i, i] / matrix[i].sum() if matrix[i].sum() else None
        assert summary["per_class_accuracy"][name] == pytest.approx(expected)
    assert (full_run / "plots" / "confusion_matrix.png").stat().st_size > 10_000


def test_sync_free_confusion_matrix_counts_as_ignites():
    from ignite.metrics import ConfusionMatrix

    from handlers.confusion import SyncFreeConfusionMatrix
    from tests.conftest import TEST_DEVICE

    device = torch.device(TEST_DEVICE)
    g = torch.Generator().manual_seed(0)
    ours, ignites = SyncFreeConfusionMatrix(10, device=device), ConfusionMatrix(10, device=device)
    for metric in (ours, ignites):
        metric.reset()
    for n in (64, 64, 17):  # a last partial batch too
        logits = torch.randn(n, 10, generator=g)
        labels = torch.randint(-1, 11, (n,), generator=g)  # -1 and 10 lie outside the classes: not counted
        for metric in (ours, ignites):
            metric.update((logits.to(device), labels.to(device)))
    counted = ours.compute()
    assert torch.equal(counted.cpu(), ignites.compute().cpu())
    assert 0 < int(counted.sum()) < 64 + 64 + 17  # some labels were out of range, the rest were counted
