"""Faults and bad input, end to end through run.py: one-line refusals, nothing saved is damaged, no lost work.

Cases already covered elsewhere: bad flags and a missing CIFAR-10 copy (test_run_cli), folder datasets
(test_data), bad --handler (test_custom_handlers), truncated / foreign checkpoints (test_resume).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from run_folder.checkpoint_files import training_checkpoints
from tests.conftest import FAST, ITERS_PER_EPOCH, LR, REPO, read_summary, train
from tests.report_page import page


def error_line(capsys, label: str = "error") -> str:
    """The one line a failed command printed (stderr holds nothing else: no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{label}: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert train(out, "--epochs", "1", "--checkpoint-every", "2", *LR) == 0
    assert read_summary(out)["completed"] is True
    return out


# ---- bad input: one line, exit 2, and the finished run in --output-dir is byte-identical afterwards

BAD_COMMANDS = [
    ([], "already holds a finished run: pass --overwrite"),
    (["--lr-find-only"], "already holds a finished run"),
    (["--overwrite", "--resume", "auto"], "pass only one"),
    (["--overwrite", "--epochs", "0"], "--epochs"),
    (["--overwrite", "--lr-min", "1", "--lr-max", "0.1"], "--lr-min"),
    (["--overwrite", "--handler", "tests.no_such_module:attach"], "cannot import"),
    (["--overwrite", "--dataset", "folder", "--data-dir", "/nonexistent/x"], "/nonexistent/x/train"),
]
if not torch.cuda.is_available():
    BAD_COMMANDS.append((["--overwrite", "--device", "cuda"], "--device cuda: torch sees no CUDA GPU"))


@pytest.mark.parametrize("args, expected", BAD_COMMANDS, ids=[" ".join(a) or "new run" for a, _ in BAD_COMMANDS])
def test_bad_command_leaves_the_finished_run_untouched(finished_run, capsys, args, expected):
    before = snapshot(finished_run)
    assert train(finished_run, "--epochs", "1", *LR, *args) == 2
    assert expected in error_line(capsys)
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("how", ["auto", "path"])
def test_a_restart_of_a_finished_run_reports_it_and_exits_0_changing_nothing(finished_run, capsys, how):
    """The restart loop of a preemptible machine ("rerun with --resume auto until it exits 0") ends here."""
    before = snapshot(finished_run)
    last = training_checkpoints(finished_run)[-1]
    assert train(finished_run, "--epochs", "1", *LR, "--resume", "auto" if how == "auto" else last) == 0
    out = capsys.readouterr().out
    summary = read_summary(finished_run)
    assert "already complete" in out and f"{summary['final_test_accuracy']:.2%}" in out
    assert snapshot(finished_run) == before


def test_debug_shows_the_traceback_and_the_cause(tmp_path, capsys):
    damaged = tmp_path / "checkpoint_4.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    assert train(tmp_path / "out", "--epochs", "1", "--resume", damaged, "--debug") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "torch.load" in err  # the hidden cause is shown too
    assert err.strip().splitlines()[-1].startswith(f"error: cannot read checkpoint {damaged}")


def test_overwrite_replaces_only_the_earlier_runs_outputs(finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    stale = out / "checkpoints" / "checkpoint_999.pt"  # e.g. from an earlier, longer run
    shutil.copy(out / "checkpoints" / f"checkpoint_{ITERS_PER_EPOCH}.pt", stale)
    (out / "notes.txt").write_text("mine")
    old_summary = (out / "summary.json").read_bytes()
    assert train(out, "--epochs", "2", *LR, "--overwrite") == 0
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "summary.json").read_bytes() != old_summary
    summary = read_summary(out)
    assert summary["completed"] is True and summary["epochs_completed"] == 2


@pytest.mark.parametrize("make_path, expected", [
    (lambda tmp: _file(tmp / "a_file") / "out", "is a file, not a folder"),
    (lambda tmp: _file(tmp / "a_file"), "is a file, not a folder"),
    (lambda tmp: tmp / ("x" * 300), "cannot write to --output-dir"),  # the OS refuses the name
])
def test_output_dir_that_cannot_be_written(tmp_path, capsys, make_path, expected):
    out = make_path(tmp_path)
    assert train(out, "--epochs", "1", *LR) == 2
    assert expected in error_line(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_output_dir(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert train(out, "--epochs", "1", *LR) == 2
        assert "cannot write to --output-dir" in error_line(capsys)
    finally:
        out.chmod(0o700)


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


def test_corrupt_cifar10_copy_is_named_and_nothing_is_downloaded(tmp_path, capsys, monkeypatch):
    extracted = tmp_path / "data" / "cifar-10-batches-py"
    extracted.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"):
        (extracted / name).write_bytes(b"\x80\x04truncated")
    before = snapshot(extracted)
    attempts = []

    def offline(*args, **kwargs):  # stands in for the network: the test never downloads
        attempts.append(args)
        raise urllib.error.URLError("no network (test)")

    import torchvision.datasets.cifar as cifar
    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    assert run_main("--dataset", "cifar10", "--data-dir", extracted.parent, "--output-dir", tmp_path / "out") == 2
    line = error_line(capsys)
    assert f"{extracted} is truncated or corrupt" in line and f"delete {extracted}" in line and "--data-dir" in line
    assert len(attempts) == 1  # torchvision's md5 check failed, so it tried (our stand-in for) a download
    assert snapshot(extracted) == before


def run_main(*args) -> int:
    import run
    return run.main([*map(str, args), "--device", "cpu", "--workers", "0", "--width", "8", "--no-progress",
                     "--subset", "64", "--epochs", "1", *LR])


class Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(finished_run, tmp_path, capsys):
    control, marker = tmp_path / "control_ran", tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload(control)}, evil)
    torch.load(evil, weights_only=False)  # the control: loaded unsafely, the payload does run
    assert control.exists()
    torch.save({"model": Payload(marker), "optimizer": {}, "scheduler": {}, "trainer": {}, "run_state": {}}, evil)

    assert train(tmp_path / "out", "--epochs", "1", *LR, "--resume", evil) == 2
    line = error_line(capsys)
    assert f"refused to load {evil}" in line and "posix.system" in line and "nothing in it was run" in line

    # The same file as the newest checkpoint of an unfinished run, found by --resume auto.
    out = tmp_path / "unfinished"
    shutil.copytree(finished_run, out)
    (out / "summary.json").unlink()
    shutil.copy(evil, out / "checkpoints" / "checkpoint_99.pt")
    assert train(out, "--epochs", "1", *LR, "--resume", "auto") == 2
    assert "refused to load" in error_line(capsys)
    assert not marker.exists()


# ---- faults

def test_nan_weights_stop_the_run_and_the_good_checkpoints_are_kept(tmp_path, capsys):
    out = tmp_path / "out"
    code = train(out, "--epochs", "2", *LR, "--checkpoint-every", "1", "--handler",
                 "tests.handlers_for_tests:explode_lr_in_epoch_2")
    assert code == 2
    line = error_line(capsys)
    assert "NaN/inf by epoch 2, iteration 5" in line and "--lr-max" in line
    # Epoch 1's last two checkpoints, not pushed out by NaN ones; every kept file holds finite weights.
    assert [p.name for p in training_checkpoints(out)] == ["checkpoint_3.pt", "checkpoint_4.pt"]
    for path in (out / "checkpoints").iterdir():
        state = torch.load(path, weights_only=True)
        weights = state.get("model", state)
        assert all(torch.isfinite(w).all() for w in weights.values()), path
    assert read_summary(out)["epochs_completed"] == 1
    # The kept checkpoint is usable: the run resumes (without the fault) to its end.
    assert train(out, "--epochs", "2", "--checkpoint-every", "1", "--resume", "auto") == 0
    assert read_summary(out)["completed"] is True


def test_nan_loss_from_a_huge_lr_is_one_line_naming_epoch_and_iteration(tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, "--epochs", "2", "--lr-min", "1e30", "--lr-max", "1e35") == 2
    assert "the training loss became nan at epoch 1, iteration 2" in error_line(capsys)
    assert training_checkpoints(out) == [] and not (out / "summary.json").exists()


def test_range_test_that_never_diverges_warns_and_falls_back(tmp_path):
    out = tmp_path / "out"
    assert train(out, "--epochs", "1", "--lr-find-start", "1e-9", "--lr-find-end", "1e-8",
                 "--lr-find-iters", "6") == 0
    finder = json.loads((out / "lr_finder.json").read_text())
    assert any("never diverged" in w for w in finder["warnings"])
    summary = read_summary(out)
    assert 1e-9 / 100 < summary["lr_min"] < summary["lr_max"] <= 1e-8 and summary["completed"] is True


@pytest.mark.parametrize("start, end", [("1e3", "1e4"), ("1e30", "1e35")], ids=["huge-loss", "nan-loss"])
def test_range_test_that_diverges_at_once_falls_back_and_leaves_the_model_untouched(tmp_path, start, end):
    # The loss blows up (or turns NaN) after one step; --lr-max is given, so LRMIN comes from the fallback.
    poisoned = tmp_path / "poisoned"
    assert train(poisoned, "--epochs", "1", "--lr-find-start", start, "--lr-find-end", end,
                 "--lr-find-iters", "6", "--lr-max", "1e-2") == 0
    finder = json.loads((poisoned / "lr_finder.json").read_text())
    assert any("found no fall" in w for w in finder["warnings"])  # the rule that sets LRMAX (warm80x16 by default)
    assert len(finder["loss"]) <= 3 or not all(np.isfinite(finder["loss"]))
    assert not any("never diverged" in w for w in finder["warnings"])
    lr_min = read_summary(poisoned)["lr_min"]
    assert lr_min == pytest.approx(1e-2 / 25)
    if start != "1e30":
        return
    # The same run without a range test: identical numbers only if the model and optimizer were restored.
    clean = tmp_path / "clean"
    assert train(clean, "--epochs", "1", "--lr-min", repr(lr_min), "--lr-max", "1e-2") == 0
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(read_summary(poisoned)["history"]) == drop(read_summary(clean)["history"])


# ---- signals, in a subprocess as a user's run would get them

# 8 iterations per epoch, 16 in all; OUTPUT/progress.txt records each finished iteration.
SIGNAL_FLAGS = ["--batch-size", "32", *LR, "--epochs", "2", "--handler", "tests.handlers_for_tests:record_iterations"]


def start(out: Path, *extra: str, signal_at: int = 0, signal_name: str = "KILL",
          delay: float = 0.0) -> subprocess.Popen:
    """run.py in a child process. With signal_at, the run sends itself SIG<signal_name> once that iteration has
    finished, `delay` times that iteration's duration later (tests.handlers_for_tests:signal_self)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if signal_at:
        env.update(ERA_TEST_SIGNAL=signal_name, ERA_TEST_SIGNAL_AT=str(signal_at), ERA_TEST_SIGNAL_DELAY=str(delay))
        extra = (*extra, "--handler", "tests.handlers_for_tests:signal_self")
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *FAST, *SIGNAL_FLAGS, "--output-dir", str(out),
                             *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def progress(out: Path) -> int:
    """The last iteration the run recorded as finished (0 if none)."""
    path = out / "progress.txt"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # a line cut by a kill has no newline
    return int(lines[-1]) if lines else 0


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "out"
    proc = start(out, signal_at=3, signal_name="INT")  # mid-epoch 1, no checkpoint yet
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: training stopped by Ctrl-C at epoch 1, iteration ")
    assert f"--resume auto --output-dir {out}" in line and "Traceback" not in err
    saved = training_checkpoints(out)
    assert len(saved) == 1 and f"saved {saved[0]}" in line
    assert torch.load(saved[0], weights_only=True)["trainer"]["iteration"] == progress(out)
    report = page(out / "report.html")
    assert report.say("state").startswith(f"Stopped early at epoch 1 of 2 (iteration {progress(out)}, "
                                          f"0 epochs complete): Ctrl-C; a checkpoint was saved")
    assert not report.refresh

    assert train(out, *SIGNAL_FLAGS, "--resume", "auto") == 0
    summary = read_summary(out)
    assert summary["completed"] is True and [r["epoch"] for r in summary["history"]] == [1, 2]
    assert page(out / "report.html").say("state") == "Finished: 2 of 2 epochs"


def test_sigkill_at_random_moments_loses_at_most_checkpoint_every_iterations(tmp_path):
    """Kill -9 five times (after a random iteration, at a random moment of what follows it), resume each time."""
    out, every, rng = tmp_path / "out", 2, np.random.default_rng(6)
    flags, total = ("--epochs", "3", "--checkpoint-every", str(every)), 3 * 8  # 8 iterations an epoch
    resume: tuple[str, ...] = ()
    for kill in range(5):
        at = min(progress(out) + int(rng.integers(1, 4)), total - 1)
        proc = start(out, *flags, *resume, signal_at=at, delay=float(rng.uniform(0, 1.5)))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"kill {kill}: the run was not killed: {err}"
        assert progress(out) >= at, f"kill {kill}: killed before iteration {at}"
        saved = training_checkpoints(out)
        for path in (out / "checkpoints").iterdir():  # every file there is complete
            torch.load(path, weights_only=True)
        newest = torch.load(saved[-1], weights_only=True)["trainer"]["iteration"] if saved else 0
        assert progress(out) - newest <= every, f"kill {kill}: lost more than {every} iterations"
        resume = ("--resume", "auto")
    assert train(out, *SIGNAL_FLAGS, *flags, "--resume", "auto") == 0
    summary = read_summary(out)
    assert summary["completed"] is True and [r["epoch"] for r in summary["history"]] == [1, 2, 3]
