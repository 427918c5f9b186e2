"""--label-smoothing: the training objective is CrossEntropyLoss(label_smoothing=F); every reported loss stays plain CE."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from data.datasets import load_dataset
from data.loaders import cpu_eval_loader
from engine.config import Config
from engine.trainer import create_evaluator
from models import load_trained
from tests.conftest import LR, read_summary, train
from training.components import build_components


def test_the_objective_is_smoothed_cross_entropy(tmp_path):
    c = build_components(Config(dataset="fake", subset=64, batch_size=16, device="cpu", width=8, workers=0,
                                amp=False, label_smoothing=0.2, output_dir=str(tmp_path)))
    logits, y = torch.randn(16, 10) * 3, torch.randint(0, 10, (16,))
    assert c.loss_fn(logits, y).item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.2).item())
    assert c.loss_fn(logits, y).item() != pytest.approx(F.cross_entropy(logits, y).item())
    plain = build_components(Config(dataset="fake", subset=64, batch_size=16, device="cpu", width=8, workers=0,
                                    amp=False, output_dir=str(tmp_path / "plain")))
    assert plain.loss_fn(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_reported_losses_are_plain_cross_entropy(tmp_path):
    assert train(tmp_path, "--label-smoothing", "0.3", "--epochs", 2, *LR) == 0
    s = read_summary(tmp_path)
    assert s["config"]["label_smoothing"] == 0.3
    saved = list((tmp_path / "checkpoints").glob("best_model_*.pt"))
    assert len(saved) == 1
    model, meta = load_trained(saved[0])
    row = next(r for r in s["history"] if r["epoch"] == meta["epoch"])
    data = load_dataset("fake", subset=256, seed=0)
    evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    evaluator.run(cpu_eval_loader(data.test_x, data.test_y, data.mean, data.std, 64, 0))
    assert evaluator.state.metrics["loss"] == pytest.approx(row["test_loss"], rel=1e-4)
    smoothed = create_evaluator(model, torch.nn.CrossEntropyLoss(label_smoothing=0.3), torch.device("cpu"))
    smoothed.run(cpu_eval_loader(data.test_x, data.test_y, data.mean, data.std, 64, 0))
    assert smoothed.state.metrics["loss"] != pytest.approx(row["test_loss"], rel=1e-4)
