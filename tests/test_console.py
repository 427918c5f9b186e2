"""What a run prints: a progress bar only on a terminal; one line per epoch in a pipe, a log file or with --no-progress."""
from __future__ import annotations

import io
import re

import pytest

import run as run_module
from handlers.console import format_epoch_line, wants_bar
from run_folder.summary import format_duration
from tests.conftest import LR, run_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


EPOCH_LINE = re.compile(r"^epoch (\d)/2  lr \d\.\d{3}e[-+]\d\d  train loss \d+\.\d{4} acc \d+\.\d\d%  "
                        r"val loss \d+\.\d{4} acc \d+\.\d\d%  test loss \d+\.\d{4} acc \d+\.\d\d%  "
                        r"\d+\.\d s  ETA \S.*$")


def test_a_run_piped_to_a_log_prints_one_line_per_epoch_and_no_carriage_return(tmp_path):
    # No --no-progress: a pipe is not a terminal, which alone must turn the bar into lines.
    proc = run_cli("--dataset", "fake", "--subset", 320, "--batch-size", 64, "--val-split", 0.2, "--epochs", 2,
                   "--device", "cpu", "--workers", 0, "--width", 8, *LR, "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if re.match(r"epoch \d", line)]  # not the final table
    assert [EPOCH_LINE.match(line).group(1) for line in lines] == ["1", "2"], proc.stdout
    assert lines[-1].endswith("ETA 0.0 s")
    assert "\r" not in proc.stdout and "\r" not in proc.stderr


@pytest.mark.parametrize("progress, stdout, stderr, bar", [
    (True, Terminal(), Terminal(), True),
    (False, Terminal(), Terminal(), False),       # --no-progress on a terminal: lines
    (True, io.StringIO(), Terminal(), False),     # python run.py > log
    (True, Terminal(), io.StringIO(), False),     # python run.py 2> err.log: the bar would fill the file
])
def test_bar_only_on_a_terminal(progress, stdout, stderr, bar):
    assert wants_bar(progress, stdout, stderr) is bar


def test_epoch_line_without_validation_and_durations():
    row = {"epoch": 3, "lr": 1.234e-3, "train_loss": 1.5, "train_accuracy": 0.5, "test_loss": 1.25,
           "test_accuracy": 0.625, "seconds": 12.34}
    assert format_epoch_line(row, 24, 276) == ("epoch  3/24  lr 1.234e-03  train loss 1.5000 acc 50.00%  "
                                               "test loss 1.2500 acc 62.50%  12.3 s  ETA 4 min 36 s")
    assert [format_duration(s) for s in (0, 59.94, 60, 3599.4, 3600, 7325)] == [
        "0.0 s", "59.9 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "2 h 02 min"]


def test_help_shows_no_default_for_switches(capsys):
    with pytest.raises(SystemExit):
        run_module.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--no-progress print one line per epoch instead of a progress bar" in text
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    assert "--workers N DataLoader worker processes of the albumentations data path (--augment) (default: 2)" in text  # other defaults still shown
    assert "(default: [])" not in text
