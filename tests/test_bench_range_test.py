"""bench/bench_range_test.py: each design's classifier initialisation, and the readings table over seeds."""
from __future__ import annotations

import json
import math

import pytest

from bench import bench_range_test


def curves(tmp_path, *designs):
    out = tmp_path / "out"
    bench_range_test.main(["--dataset", "fake", "--subset", "64", "--width", "4", "--batch-size", "16",
                           "--device", "cpu", "--workers", "0", "--seeds", "0", "--out", str(out),
                           "--designs", *designs])
    return out, {p.stem: json.loads(p.read_text()) for p in (out / "curves").glob("*.json")}


def test_zero_starts_at_ln10_and_own_is_the_model_as_built(tmp_path):
    out, found = curves(tmp_path, "1e-5:1:6:zero", "1e-5:1:6:own")
    # A zeroed classifier gives every class the same logit: the first loss is ln 10 whatever the input.
    assert found["1e-5_1_6_zero-seed0"]["loss_raw"][0] == pytest.approx(math.log(10), abs=1e-4)
    # nn.Linear's default initialisation on the model's features: confidently wrong logits, a higher start.
    assert found["1e-5_1_6_own-seed0"]["loss_raw"][0] > math.log(10) + 0.01
    table = (out / "readings.md").read_text()
    assert "| 1e-5_1_6_zero | 0 | 2.303 |" in table and "| 1e-5_1_6_own | max/min |" in table


def test_an_unknown_initialisation_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_range_test.main(["--designs", "1e-5:1:6:xavier", "--out", str(tmp_path)])
    assert "the initialisation is one of own, torch, zero" in capsys.readouterr().err
