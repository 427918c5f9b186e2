"""Checkpoints and --resume: a run stopped after epoch 1 of 3 and resumed ends where a straight run does."""
from __future__ import annotations

import shutil

import pytest
import torch

from run_folder.checkpoint_files import training_checkpoints
from tests.conftest import FAST, ITERS_PER_EPOCH, LR, read_summary, run_cli, train



STOP = ("--handler", "tests.handlers_for_tests:stop_after_first_epoch")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """--epochs 3 interrupted after epoch 1 (a checkpoint every 3 iterations too)."""
    out = tmp_path_factory.mktemp("stopped")
    assert train(out, "--epochs", "3", "--checkpoint-every", "3", *LR, *STOP) == 0
    return out


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The same --epochs 3 run, done straight through."""
    out = tmp_path_factory.mktemp("straight")
    assert train(out, "--epochs", "3", *LR) == 0
    return out


def metrics(summary: dict) -> dict:
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in summary["history"]]
    keep = ("final_test_accuracy", "best_test_accuracy", "epochs_completed", "completed", "lr_min", "lr_max",
            "confusion_matrix", "per_class_accuracy")
    return {"history": rows, **{k: summary[k] for k in keep}}


def test_stopped_run_keeps_the_last_checkpoints(stopped_run):
    # Iteration 3 (every 3) and 4 (end of epoch 1); the one at 3 is mid-epoch.
    assert [p.name for p in training_checkpoints(stopped_run)] == ["checkpoint_3.pt", "checkpoint_4.pt"]
    assert len(list((stopped_run / "checkpoints").glob("best_model_1_test_accuracy=*.pt"))) == 1
    assert read_summary(stopped_run)["completed"] is False


def test_resumed_run_matches_straight_run(stopped_run, straight_run, tmp_path):
    straight, resumed = straight_run, tmp_path / "resumed"
    shutil.copytree(stopped_run, resumed)
    # No --lr-min/--lr-max: the bounds must come from the checkpoint, not from a range test.
    assert train(resumed, "--epochs", "3", "--checkpoint-every", "3", "--resume", "auto") == 0

    assert not (resumed / "lr_finder.json").exists(), "the resumed run ran the range test"
    a, b = read_summary(straight), read_summary(resumed)
    assert b["resumed_from"].endswith("checkpoint_4.pt")  # newest by iteration
    assert _close(metrics(a), metrics(b))
    assert (straight / "lr_schedule.csv").read_text() == (resumed / "lr_schedule.csv").read_text()
    last = 3 * ITERS_PER_EPOCH
    wa = torch.load(straight / "checkpoints" / f"checkpoint_{last}.pt", weights_only=True)["model"]
    wb = torch.load(resumed / "checkpoints" / f"checkpoint_{last}.pt", weights_only=True)["model"]
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6)
    # The checkpointers' own lists came back too: still only K=2 training checkpoints and one best model.
    assert len(training_checkpoints(resumed)) == 2
    assert len(list((resumed / "checkpoints").glob("best_model_*.pt"))) == 1


def test_resume_from_a_file_into_a_new_folder(stopped_run, straight_run, tmp_path):
    out = tmp_path / "elsewhere"
    path = stopped_run / "checkpoints" / "checkpoint_3.pt"  # mid-epoch 1
    assert train(out, "--epochs", "3", "--resume", path, "--checkpoint-every", "3", "--keep-checkpoints", "1") == 0
    summary = read_summary(out)
    assert summary["resumed_from"] == str(path) and summary["completed"] is True
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3]
    assert (out / "lr_schedule.csv").read_text() == (straight_run / "lr_schedule.csv").read_text()
    # Same batches from iteration 4 on, so the same model and test metrics; only epoch 1's train
    # metrics differ (they cover the one batch trained after the resume).
    straight = metrics(read_summary(straight_run))
    resumed = metrics(summary)
    for rows in (straight["history"], resumed["history"]):
        del rows[0]["train_loss"], rows[0]["train_accuracy"]
    assert _close(straight, resumed)
    assert [p.name for p in training_checkpoints(out)] == [f"checkpoint_{3 * ITERS_PER_EPOCH}.pt"]
    assert (stopped_run / "checkpoints" / "checkpoint_3.pt").exists()  # the old run's files are untouched


def _close(a, b) -> bool:
    """Equal structure, floats within 1e-6."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-7)
        return True
    assert a == b
    return True


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_new_run_refuses_a_folder_with_checkpoints(stopped_run, tmp_path, capsys):
    out = tmp_path / "again"
    shutil.copytree(stopped_run, out)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert train(out, "--epochs", "3", *LR) == 2
    assert "--resume auto" in one_error_line(capsys)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_checkpoint_of_another_model_is_one_line(stopped_run, tmp_path, capsys):
    path = stopped_run / "checkpoints" / "checkpoint_4.pt"
    assert train(tmp_path / "w16", "--epochs", "3", "--resume", path, "--width", "16") == 2
    line = one_error_line(capsys)
    assert str(path) in line and "another model" in line and "--width" in line

    assert train(tmp_path / "e4", "--epochs", "4", "--resume", path) == 2
    assert "--epochs 3" in one_error_line(capsys)

    plain = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.randn(3, 3)}, plain)
    assert train(tmp_path / "plain", "--epochs", "3", "--resume", plain) == 2
    assert "not a training checkpoint" in one_error_line(capsys)


def test_corrupt_checkpoint_is_one_line(stopped_run, tmp_path, capsys):
    damaged = tmp_path / "checkpoint_4.pt"
    data = (stopped_run / "checkpoints" / "checkpoint_4.pt").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    assert train(tmp_path / "out", "--epochs", "3", "--resume", damaged) == 2
    line = one_error_line(capsys)
    assert str(damaged) in line and "damaged" in line


def test_resume_of_a_finished_run_says_so_and_succeeds(straight_run, capsys):
    before = (straight_run / "summary.json").read_text()
    assert train(straight_run, "--epochs", "3", "--resume", "auto") == 0
    assert "already complete" in capsys.readouterr().out
    assert (straight_run / "summary.json").read_text() == before


def test_a_kill_between_saving_and_deleting_leaves_an_extra_that_the_next_start_removes(tmp_path):
    """Killed right after a new checkpoint is renamed into place and before the oldest is deleted."""
    out = tmp_path / "out"
    flags = [*FAST, "--output-dir", out, "--epochs", 4, *LR]
    killed = run_cli(*flags, "--handler", "tests.handlers_for_tests:die_before_deleting_a_checkpoint")
    assert killed.returncode == 9, killed.stderr
    names = sorted(p.name for p in training_checkpoints(out))
    # keep 2: the 3rd epoch-end save put checkpoint_12 in place; checkpoint_4 should have gone
    assert names == ["checkpoint_12.pt", "checkpoint_4.pt", "checkpoint_8.pt"]
    partial = out / ".checkpoints.partial"
    partial.mkdir(exist_ok=True)
    (partial / "checkpoint_16.pt").write_bytes(b"half a file")  # and one a kill left half written
    resumed = run_cli(*flags, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "removed" in resumed.stderr and "checkpoint_4.pt" in resumed.stderr and "checkpoint_16.pt" in resumed.stderr
    assert sorted(p.name for p in training_checkpoints(out)) == ["checkpoint_12.pt", "checkpoint_16.pt"]
    assert not (partial / "checkpoint_16.pt").exists() and read_summary(out)["completed"] is True


def test_a_kill_during_the_last_save_is_finished_by_the_next_start(tmp_path):
    out = tmp_path / "out"
    flags = [*FAST, "--output-dir", out, "--epochs", 3, *LR]
    assert run_cli(*flags, "--handler", "tests.handlers_for_tests:die_before_deleting_a_checkpoint").returncode == 9
    assert read_summary(out)["completed"] is False and len(training_checkpoints(out)) == 3
    again = run_cli(*flags, "--resume", "auto")
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr
    assert "checkpoint_4.pt" in again.stderr and "completed" in again.stderr
    s = read_summary(out)
    assert s["completed"] is True and s["epochs_completed"] == 3 and "confusion_matrix" in s
    assert [p.name for p in training_checkpoints(out)] == ["checkpoint_8.pt", "checkpoint_12.pt"]
    assert (out / "plots" / "curves.png").is_file()
    # and a third start changes nothing at all
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    third = run_cli(*flags, "--resume", "auto")
    assert third.returncode == 0 and "no file was changed" in third.stdout
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_gpu_data_path_resumes_like_a_straight_run(tmp_path):
    """The GPU-resident loader (run here on the CPU) also makes a stopped-and-resumed run match."""
    gpu = ("--augment", "gpu")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, "--epochs", "3", *LR, *gpu) == 0
    assert train(resumed, "--epochs", "3", *LR, *gpu, *STOP) == 0
    assert train(resumed, "--epochs", "3", *gpu, "--resume", "auto") == 0
    assert _close(metrics(read_summary(straight)), metrics(read_summary(resumed)))
    # ... and it really took the GPU path, whose batches differ from the albumentations path's.
    cpu = tmp_path / "cpu"
    assert train(cpu, "--epochs", "3", *LR, "--augment", "cpu") == 0
    assert metrics(read_summary(cpu))["history"] != metrics(read_summary(straight))["history"]
