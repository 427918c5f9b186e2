"""--handler: custom handlers fire on the real trainer only (never in the range test); bad specs are one line."""
from __future__ import annotations

import json

import pytest

from tests.conftest import ITERS_PER_EPOCH, LR, train


def test_handler_fires_once_per_iteration_and_epoch_but_not_in_the_range_test(full_run):
    assert (full_run / "lr_finder.json").exists()  # the range test did run (6 iterations)
    counts = json.loads((full_run / "handler_counts.json").read_text())
    assert counts == {"iterations": 2 * ITERS_PER_EPOCH, "epochs": 2}


@pytest.mark.parametrize("spec, expected", [
    ("tests.no_such_module:attach", "cannot import tests.no_such_module"),
    ("tests.handlers_for_tests:missing", "has no attribute 'missing'"),
    ("tests.handlers_for_tests:NOT_A_FUNCTION", "is a int, not a function"),
    ("tests.handlers_for_tests", "expected MODULE:FUNCTION"),
    ("no/such/file.py:attach", "cannot import no/such/file.py"),
])
def test_bad_handler_is_one_line_before_anything_runs(tmp_path, capsys, spec, expected):
    out = tmp_path / "out"
    assert train(out, "--epochs", "1", *LR, "--handler", spec) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err
    assert not out.exists()  # failed before building: nothing written


def test_handler_from_a_file_path(tmp_path):
    handler = tmp_path / "my_handler.py"
    handler.write_text("def attach(run):\n    (run.output_dir / 'attached.txt').write_text(str(run.trainer.state.epoch))\n")
    out = tmp_path / "out"
    assert train(out, "--epochs", "1", *LR, "--handler", f"{handler}:attach") == 0
    assert (out / "attached.txt").read_text() == "0"  # called after the build, before training
