"""One Cycle: LRMIN at iteration 0, LRMAX at the peak, LRMIN at the last iteration, never below LRMIN."""
import csv

import pytest

from core.errors import UserError
from engine.schedule import one_cycle_milestones
from tests.conftest import QUICK, read_summary, run_cli


def test_milestones_for_the_recipe():
    # 50,000 images / 512 = 98 iterations per epoch (last batch kept), 24 epochs, peak at epoch 5.
    m = one_cycle_milestones(1e-4, 1e-3, 98, 24, 5)
    assert m == [(0, 1e-4), (5 * 98 - 1, 1e-3), (24 * 98 - 1, 1e-4)]


def test_fractional_peak_and_too_short_runs():
    assert one_cycle_milestones(1, 2, 10, 3, 0.55)[1][0] == 5  # round(5.5) = 6th iteration, index 5
    with pytest.raises(UserError):
        one_cycle_milestones(1, 2, 1, 2, 0.5)


def test_recorded_schedule_of_a_real_run(tmp_path):
    out = tmp_path / "run"
    # 256 images / 32 = 8 iterations per epoch, 3 epochs, peak at the end of epoch 1.5.
    proc = run_cli("--dataset", "fake", "--subset", 256, "--batch-size", 32, "--epochs", 3,
                   "--peak-epoch", 1.5, "--lr-min", 1e-4, "--lr-max", 2e-3, "--output-dir", out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    with open(out / "lr_schedule.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr"]) for r in rows]
    assert [int(r["iteration"]) for r in rows] == list(range(24))
    peak = 12 - 1
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[peak] == pytest.approx(2e-3) and max(lrs) == lrs[peak]
    assert lrs[-1] == pytest.approx(1e-4)
    assert min(lrs) >= 1e-4 * (1 - 1e-9)  # no annihilation
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # linear up ...
    assert all(a > b for a, b in zip(lrs[peak:-1], lrs[peak + 1:]))  # ... and linear down
    summary = read_summary(out)
    assert summary["lr_min"] == 1e-4 and summary["lr_max"] == 2e-3
    assert [r["lr"] for r in summary["history"]] == pytest.approx([lrs[7], lrs[15], lrs[23]])
