"""TensorBoard event files, read back the way TensorBoard reads them."""
from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import ITERS_PER_EPOCH, read_summary

EPOCHS = 2


def load(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    return acc.Reload()


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def test_scalars_per_iteration_and_per_epoch(full_run):
    acc = load(full_run / "tensorboard")
    iterations = list(range(1, EPOCHS * ITERS_PER_EPOCH + 1))
    assert steps(acc, "train/loss_iter") == iterations
    assert steps(acc, "train/lr") == iterations
    assert steps(acc, "train/grad_norm") == iterations  # from examples/grad_norm_tensorboard.py
    with open(full_run / "lr_schedule.csv") as f:
        scheduled = [float(row["lr"]) for row in csv.DictReader(f)]
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx(scheduled, rel=1e-6)
    history = read_summary(full_run)["history"]
    # Equal batches (256 = 4 x 64): each epoch's train loss is the mean of its iterations' losses.
    losses = [e.value for e in acc.Scalars("train/loss_iter")]
    for row in history:
        epoch_losses = losses[(row["epoch"] - 1) * ITERS_PER_EPOCH: row["epoch"] * ITERS_PER_EPOCH]
        assert sum(epoch_losses) / ITERS_PER_EPOCH == pytest.approx(row["train_loss"], rel=1e-5)
    for split in ("train", "test"):
        for metric in ("loss", "accuracy"):
            points = acc.Scalars(f"{split}/{metric}")
            assert [e.step for e in points] == [1, 2]
            assert [e.value for e in points] == pytest.approx([r[f"{split}_{metric}"] for r in history], rel=1e-6)


def test_per_class_accuracy_and_images(full_run):
    acc = load(full_run / "tensorboard")
    summary = read_summary(full_run)
    per_class = [t for t in acc.Tags()["scalars"] if t.startswith("test_per_class_accuracy/")]
    present = [c for c, v in summary["per_class_accuracy"].items() if v is not None]
    assert sorted(per_class) == sorted(f"test_per_class_accuracy/{c}" for c in present)
    assert all(steps(acc, tag) == [1, 2] for tag in per_class)
    images = {tag: len(acc.Images(tag)) for tag in acc.Tags()["images"]}
    from handlers.gradcam import gradcam_available
    gradcam = {"test/misclassified_gradcam": EPOCHS} if gradcam_available() else {}  # the explain extra
    assert images == {"lr_finder/range_test": 1, "lr/one_cycle": 1,
                      "test/confusion_matrix": EPOCHS, "test/misclassified": EPOCHS, **gradcam}
    grid = acc.Images("test/misclassified")[-1]
    assert grid.width > 300 and grid.height > 300


def test_hparams_hold_settings_and_final_metrics(full_run):
    acc = load(full_run / "tensorboard" / "hparams")
    summary = read_summary(full_run)
    assert acc.Scalars("hparam/final_test_accuracy")[0].value == pytest.approx(summary["final_test_accuracy"])
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["width"].number_value == 8
    assert info.hparams["lr_max"].number_value == pytest.approx(summary["lr_max"])
    assert info.hparams["dataset"].string_value == "fake"
