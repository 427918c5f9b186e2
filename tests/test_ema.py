"""--ema: ignite's EMAHandler keeps an average of the weights; it is what is evaluated, chosen and saved, and the
trained weights' own scores are kept beside it (raw_* columns). A stopped and resumed run goes on with the same
average."""
from __future__ import annotations

import csv

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data.datasets import load_dataset
from data.loaders import cpu_eval_loader
from engine.trainer import create_evaluator
from models import CustomResNet, load_trained
from tests.conftest import LR, read_summary, run_cli, train

EMA = ("--ema", "0.3")
STOP = ("--handler", "tests.handlers_for_tests:stop_after_first_epoch")


def _score(model, x, y, data) -> dict:
    evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    evaluator.run(cpu_eval_loader(x, y, data.mean, data.std, 64, 0))
    return evaluator.state.metrics


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema")
    assert train(out, *EMA, "--val-split", "0.25", "--epochs", 3, *LR) == 0
    return out


def test_the_average_is_scored_chosen_and_saved_and_the_trained_weights_are_scored_beside_it(ema_run):
    s = read_summary(ema_run)
    rows = s["history"]
    assert all({"raw_test_loss", "raw_test_accuracy", "raw_val_accuracy"} <= set(r) for r in rows)
    with open(ema_run / "history.csv") as f:
        assert {"raw_test_accuracy", "raw_val_accuracy"} <= set(next(csv.reader(f)))
    board = EventAccumulator(str(ema_run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [e.value for e in board.Scalars("test/accuracy_raw")] == pytest.approx([r["raw_test_accuracy"] for r in rows])
    assert [e.value for e in board.Scalars("val/accuracy_raw")] == pytest.approx([r["raw_val_accuracy"] for r in rows])
    data = load_dataset("fake", subset=256, seed=0, val_split=0.25)
    # The last training checkpoint holds both: the trained weights score raw_*, the average the reported columns.
    last = torch.load(sorted((ema_run / "checkpoints").glob("checkpoint_*.pt"),
                             key=lambda p: int(p.stem.split("_")[1]))[-1], weights_only=True)
    trained, average = CustomResNet(num_classes=10, width=8), CustomResNet(num_classes=10, width=8)
    trained.load_state_dict(last["model"])
    average.load_state_dict(last["ema_model"])
    assert any(not torch.equal(last["model"][k], last["ema_model"][k]) for k in last["model"])
    raw = _score(trained, data.test_x, data.test_y, data)
    assert raw["accuracy"] == pytest.approx(rows[-1]["raw_test_accuracy"])
    assert raw["loss"] == pytest.approx(rows[-1]["raw_test_loss"], rel=1e-4)
    assert _score(average, data.test_x, data.test_y, data)["loss"] == pytest.approx(rows[-1]["test_loss"], rel=1e-4)
    assert _score(trained, data.val_x, data.val_y, data)["accuracy"] == pytest.approx(rows[-1]["raw_val_accuracy"])
    # The best-model file keeps the average of the epoch chosen on validation.
    saved = list((ema_run / "checkpoints").glob("best_model_*.pt"))
    model, meta = load_trained(saved[0])
    assert meta["epoch"] == s["best_val_epoch"]
    assert _score(model, data.val_x, data.val_y, data)["accuracy"] == pytest.approx(s["best_val_accuracy"])
    if meta["epoch"] == len(rows):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, last["ema_model"][key])


def test_without_ema_there_are_no_raw_columns(tmp_path):
    assert train(tmp_path, "--ema", "0", "--epochs", 1, *LR) == 0
    assert not any(k.startswith("raw_") for k in read_summary(tmp_path)["history"][0])
    assert "ema_model" not in torch.load(next((tmp_path / "checkpoints").glob("checkpoint_*.pt")), weights_only=True)


def test_a_resumed_run_goes_on_with_the_same_average(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, *EMA, "--epochs", 3, *LR) == 0
    assert train(resumed, *EMA, "--epochs", 3, *LR, *STOP) == 0
    assert train(resumed, *EMA, "--epochs", 3, "--resume", "auto") == 0
    for a, b in zip(read_summary(straight)["history"], read_summary(resumed)["history"]):
        for key in ("test_accuracy", "test_loss", "raw_test_accuracy", "raw_test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_a_momentum_outside_0_1_is_one_line(tmp_path):
    proc = run_cli("--ema", "1", "--output-dir", tmp_path / "o")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: --ema:") and "Traceback" not in proc.stderr


def test_the_momentum_warms_up_so_the_average_follows_a_short_run():
    from handlers.ema import warmed_up_momentum
    assert [warmed_up_momentum(0.01, i) for i in (1, 91, 891, 5000)] == pytest.approx([0.9, 0.09, 0.01, 0.01])
    assert warmed_up_momentum(0.5, 1) == 0.9 and warmed_up_momentum(0.5, 30) == 0.5


def test_the_average_is_the_warmed_up_exponential_average_of_the_steps():
    from ignite.engine import Engine

    from handlers.ema import attach_ema, warmed_up_momentum
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    steps = [torch.randn(2, 3) for _ in range(5)]

    def step(engine, batch):  # each "training step" sets the weights to the next value
        with torch.no_grad():
            model.weight.copy_(steps[engine.state.iteration - 1])

    trainer = Engine(step)
    ema = attach_ema(trainer, model, 0.2)
    expected = model.weight.detach().clone()  # the average starts as the model
    for i, w in enumerate(steps, 1):
        m = warmed_up_momentum(0.2, i)
        expected = (1 - m) * expected + m * w
    trainer.run([0] * len(steps), max_epochs=1)
    torch.testing.assert_close(ema.ema_model.weight, expected)
    assert trainer.state.ema_momentum == pytest.approx(warmed_up_momentum(0.2, 5))
