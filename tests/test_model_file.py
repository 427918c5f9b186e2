"""The best-model file describes itself: weights plus what inference needs, read back by models.load_trained."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from core.errors import UserError
from data.datasets import load_dataset
from data.loaders import cpu_eval_loader
from engine.trainer import create_evaluator
from models import CustomResNet, load_trained
from tests.conftest import read_summary

PLAIN = (dict, list, str, int, float, bool, type(None))


def best_file(run_dir):
    (path,) = (run_dir / "checkpoints").glob("best_model_*.pt")  # exactly one, under its usual name
    return path


def all_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and all_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_plain(v) for v in value)
    return isinstance(value, PLAIN)


def test_the_best_model_file_carries_what_inference_needs(full_run):
    path = best_file(full_run)
    epoch, score = re.fullmatch(r"best_model_(\d+)_test_accuracy=([\d.]+)\.pt", path.name).groups()
    saved = torch.load(path, weights_only=True)  # plain types and tensors only
    assert set(saved) == {"model", "meta"} and all_plain(saved["meta"])
    meta = saved["meta"]
    data = load_dataset("fake", subset=256, seed=0)
    assert meta["classes"] == data.classes and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(list(data.mean)) and meta["std"] == pytest.approx(list(data.std))
    assert (meta["width"], meta["input_size"], meta["chosen_on"]) == (8, 32, "test_accuracy")
    assert meta["epoch"] == int(epoch) and f"{meta['score']:.4f}" == score
    summary = read_summary(full_run)
    assert meta["score"] == pytest.approx(summary["history"][meta["epoch"] - 1]["test_accuracy"])
    assert meta["config"]["width"] == 8 and meta["config"]["dataset"] == "fake"


def test_load_trained_gives_the_model_that_scored_it(full_run):
    model, meta = load_trained(best_file(full_run))
    assert isinstance(model, CustomResNet) and not model.training
    data = load_dataset("fake", subset=256, seed=0)
    evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    evaluator.run(cpu_eval_loader(data.test_x, data.test_y, meta["mean"], meta["std"], 64, 0))
    assert evaluator.state.metrics["accuracy"] == pytest.approx(meta["score"])


def test_a_bare_state_dict_still_loads_and_says_what_it_lacks(tmp_path, caplog):
    model = CustomResNet(num_classes=7, width=4)
    torch.save(model.state_dict(), tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING):
        loaded, meta = load_trained(tmp_path / "old.pt")
    assert "weights only" in caplog.text
    assert (meta["complete"], meta["width"], meta["num_classes"], meta["classes"]) == (False, 4, 7, None)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(UserError, match="weights only .* retrain"):
        load_trained(tmp_path / "old.pt", require_meta=True)


@pytest.mark.parametrize("kind", ["training checkpoint", "damaged", "missing", "not a model"])
def test_files_that_are_not_a_model_are_one_line(full_run, tmp_path, kind):
    if kind == "training checkpoint":
        path, match = sorted((full_run / "checkpoints").glob("checkpoint_*.pt"))[-1], "training checkpoint"
    elif kind == "damaged":
        path, match = tmp_path / "cut.pt", "cannot read"
        path.write_bytes(best_file(full_run).read_bytes()[:5000])
    elif kind == "missing":
        path, match = tmp_path / "none.pt", "not a file"
    else:
        path, match = tmp_path / "other.pt", "no CustomResNet weights"
        torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match=match) as error:
        load_trained(path)
    assert "\n" not in str(error.value)

