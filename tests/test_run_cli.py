"""run.py end to end, as a user runs it: outputs, determinism, and one-line errors for bad input."""
import csv
import json

import pytest
import torch

from tests.conftest import QUICK, read_summary, run_cli

SUMMARY_KEYS = {"lr_min", "lr_max", "params", "epochs", "batch_size", "dataset", "device", "target",
                "target_epoch", "final_test_accuracy", "best_test_accuracy", "first_epoch_at_target",
                "target_held_from_target_epoch", "train_seconds", "history"}
ROW_KEYS = {"epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fake") / "out"
    proc = run_cli("--dataset", "fake", "--subset", 512, "--epochs", 2, "--batch-size", 64,
                   "--lr-find-iters", 20, "--output-dir", out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_summary_has_every_field_in_range(fake_run):
    out, _ = fake_run
    s = read_summary(out)
    assert SUMMARY_KEYS <= s.keys()
    assert 0 < s["lr_min"] < s["lr_max"]
    assert (s["epochs"], s["batch_size"], s["dataset"], s["device"]) == (2, 64, "fake", "cpu")
    assert (s["target"], s["target_epoch"]) == (0.90, 19)
    from models import CustomResNet, count_parameters
    assert s["params"] == count_parameters(CustomResNet(width=8))
    assert len(s["history"]) == 2
    for i, row in enumerate(s["history"], 1):
        raw = {"raw_test_loss", "raw_test_accuracy"} if s["config"]["ema"] else set()  # --ema
        assert set(row) == ROW_KEYS | raw and row["epoch"] == i
        for key in ("train_accuracy", "test_accuracy"):
            assert 0 <= row[key] <= 1
        assert row["train_loss"] > 0 and row["test_loss"] > 0 and row["seconds"] > 0
    accs = [r["test_accuracy"] for r in s["history"]]
    assert s["final_test_accuracy"] == accs[-1] and s["best_test_accuracy"] == max(accs)
    # Random labels: 10% is chance, 90% is out of reach in 2 epochs.
    assert s["first_epoch_at_target"] is None and s["target_held_from_target_epoch"] is None
    assert s["train_seconds"] > 0


def test_summary_names_the_numerics_and_the_machine(fake_run):
    """A figure read from summary.json can name what made it: benchmarks land on CPUs with native bf16 (where
    the default is bf16 autocast) and without (fp32), in different sessions."""
    from core.device import cpu_name
    from engine.trainer import StepSpeed

    s = read_summary(fake_run[0])
    assert s["speed"] == StepSpeed.for_device(torch.device("cpu")).describe()  # the default this CPU gets
    machine = s["machine"]
    assert machine["cpu"] == cpu_name() != ""
    assert machine["gpu"] is None and machine["torch"] == torch.__version__ and machine["threads"] >= 1


def test_csv_files_match_the_summary(fake_run):
    out, _ = fake_run
    s = read_summary(out)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["test_accuracy"]) for r in rows] == pytest.approx([r["test_accuracy"] for r in s["history"]])
    with open(out / "lr_schedule.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert len(lrs) == 2 * 512 // 64
    assert lrs[0] == pytest.approx(s["lr_min"]) and max(lrs) == pytest.approx(s["lr_max"])


def test_plots_and_range_test_are_written(fake_run):
    out, proc = fake_run
    for name in ("lr_finder.png", "one_cycle.png", "curves.png"):
        assert is_png(out / "plots" / name), name
    finder = json.loads((out / "lr_finder.json").read_text())
    assert len(finder["lr"]) == len(finder["loss"]) >= 5
    assert finder["lr_min"] == read_summary(out)["lr_min"]


def test_console_reports_table_and_verdict(fake_run):
    _, proc = fake_run
    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["2"] for line in lines)  # the table's last epoch row
    assert lines[-1] == "target 90% never reached; held from epoch 19: not applicable (the run ended before it)"


def test_fixed_seed_gives_the_same_numbers(tmp_path):
    args = ["--dataset", "fake", "--subset", 128, "--epochs", 2, "--batch-size", 32,
            "--lr-min", 1e-4, "--lr-max", 1e-3, *QUICK]
    a = run_cli(*args, "--output-dir", tmp_path / "a")
    b = run_cli(*args, "--output-dir", tmp_path / "b")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_summary(tmp_path / "a")["history"]) == strip(read_summary(tmp_path / "b")["history"])


def test_lr_find_only_prints_both_bounds_and_exits(tmp_path):
    proc = run_cli("--dataset", "fake", "--subset", 128, "--batch-size", 32, "--lr-find-only",
                   "--lr-find-iters", 12, "--output-dir", tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "LRMIN" in proc.stdout and "LRMAX" in proc.stdout
    assert is_png(tmp_path / "plots" / "lr_finder.png")
    assert not (tmp_path / "summary.json").exists()


def test_lr_find_repeats_reads_the_median_of_its_repeats(tmp_path):
    proc = run_cli("--dataset", "fake", "--subset", 128, "--batch-size", 32, "--lr-find-only", "--lr-find-iters", 8,
                   "--lr-find-repeats", 3, "--output-dir", tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr
    found = json.loads((tmp_path / "lr_finder.json").read_text())
    repeats = found["repeats"]
    assert len(repeats) == 3 and "3 repeats: LRMAX" in proc.stdout
    assert repeats[0]["loss_raw"] == found["loss_raw"] and repeats[1]["loss_raw"] != repeats[2]["loss_raw"]
    for name, median in found["suggestions"].items():  # each reading: the median of the repeats' (None: none had one)
        values = sorted(r["suggestions"][name] for r in repeats if r["suggestions"][name] is not None)
        expected = None if 2 * len(values) <= len(repeats) else values[len(values) // 2] if len(values) % 2 else \
            (values[len(values) // 2 - 1] * values[len(values) // 2]) ** 0.5
        assert median == pytest.approx(expected), name
    assert is_png(tmp_path / "plots" / "lr_finder.png")


def test_lr_find_warmup_runs_before_the_test_and_is_kept(tmp_path):
    proc = run_cli("--dataset", "fake", "--subset", 128, "--batch-size", 32, "--lr-find-only", "--lr-find-iters", 8,
                   "--lr-find-warmup", 3, "--lr-find-warmup-lr", 1e-3, "--output-dir", tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr
    warmup = json.loads((tmp_path / "lr_finder.json").read_text())["warmup"]
    assert warmup["steps"] == 3 and warmup["lr"] == 1e-3 and len(warmup["loss_raw"]) == 3
    assert "warm-up before the test: 3 steps at LR 0.001" in proc.stdout


def test_the_default_rule_brings_its_own_warmup_and_an_explicit_zero_warns(tmp_path):
    proc = run_cli("--dataset", "fake", "--subset", 128, "--batch-size", 32, "--lr-find-only", "--lr-find-iters", 8,
                   "--output-dir", tmp_path / "own", *QUICK)
    assert proc.returncode == 0, proc.stderr
    finder = json.loads((tmp_path / "own" / "lr_finder.json").read_text())
    assert finder["warmup"]["steps"] == 20 and len(finder["warmup"]["loss_raw"]) == 20 and finder["rule"] == "warm80x16"
    proc = run_cli("--dataset", "fake", "--subset", 128, "--batch-size", 32, "--lr-find-only", "--lr-find-iters", 8,
                   "--lr-rule", "warm80x12", "--lr-find-warmup", 0, "--output-dir", tmp_path / "none", *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "none" / "lr_finder.json").read_text())["warmup"]["steps"] == 0
    assert "add --lr-find-warmup 20" in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--peak-epoch", "24"], "--peak-epoch"),
    (["--peak-epoch", "0"], "--peak-epoch"),
    (["--lr-max", "-1"], "--lr-max"),
    (["--lr-find-repeats", "0"], "--lr-find-repeats"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--lr-find-warmup", "-1"], "--lr-find-warmup"),
    (["--lr-find-warmup", "5", "--lr-find-warmup-lr", "0"], "--lr-find-warmup-lr"),
    (["--lr-min", "0.01", "--lr-max", "0.001"], "--lr-min"),
    (["--device", "tpu"], "--device"),
    (["--bogus-flag"], "unrecognized arguments"),
    (["--epochs", "three"], "--epochs"),
    (["--dataset", "folder", "--data-dir", "/nonexistent/x"], "/nonexistent/x/train"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/empty"], "could not be downloaded"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_cli(*args, "--output-dir", tmp_path / "out", "--no-progress", timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_and_a_bad_flag_are_answered_without_loading_torch():
    # torch, ignite and albumentations take seconds to import: --help and a flag no run can use need none of them
    import subprocess
    import sys

    from tests.conftest import REPO
    probe = ("import sys, contextlib, io, run\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             "    codes = [run.main(['--epochs', '0'])]\n"
             "    try:\n"
             "        run.main(['--help'])\n"
             "    except SystemExit as e:\n"
             "        codes.append(e.code)\n"
             "print(codes, sorted(m for m in ('torch', 'ignite', 'albumentations') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[2, 0] []", proc.stdout + proc.stderr
