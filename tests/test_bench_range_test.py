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


def test_candidates_measure_the_fall_from_a_uniform_guess():
    # A curve that starts at 4.0 (above ln 10), comes down to ln 10 = 2.303 by 1e-4, then falls linearly in
    # log LR to 1.303 at 1e-2 and rises after it: the fall from ln 10 is 1.0, from 1e-4 to 1e-2.
    lrs = [10 ** (-6 + i / 10) for i in range(51)]  # 1e-6 .. 1e-1
    top = math.log(10)
    losses = [4.0 - (4.0 - top) * (i / 20) if i <= 20 else top - (i - 20) / 20 if i <= 40 else top - 1 + (i - 40) / 10
              for i in range(51)]
    found = bench_range_test.candidates(lrs, losses, 10)
    assert found["guess50"] == pytest.approx(1e-3)  # half of the fall from ln 10, half way in log LR
    assert found["guess65"] == pytest.approx(10 ** -2.7)
    # where the fall from ln 10 starts (5% of it: 1e-4 * 10 ** 0.1) to the lowest loss (1e-2), two thirds of the way
    start = 10 ** -3.9
    assert found["guess_two_thirds"] == pytest.approx(start * (1e-2 / start) ** (2 / 3))


def test_a_design_with_repeats_reads_the_median_of_its_repeats(tmp_path):
    out, found = curves(tmp_path, "1e-5:1:6:own:3")
    curve = found["1e-5_1_6_own_3-seed0"]
    assert len(curve["repeats"]) == 3
    # the table's readings are the medians of each repeat's, as run.py --lr-find-repeats takes them
    row = next(r for r in json.loads((out / "readings.json").read_text()) if r["design"] == "1e-5_1_6_own_3")
    for name in ("guess80", "fall80", "guess50"):
        each = [bench_range_test.readings_of({**r, "num_classes": 10})[name] for r in curve["repeats"]]
        values = sorted(v for v in each if v is not None)
        assert row[name] == (values[1] if len(values) == 3 else pytest.approx(math.sqrt(values[0] * values[1]))
                             if len(values) == 2 else None), name
    assert row["guess80"] == curve["suggestions"]["guess80"]  # the bench and run.py agree


@pytest.mark.parametrize("design", ["1e-5:1:6:own:0", "1e-5:1:6:own:two", "1e-5:1:6:own:3:4:1e-4:5",
                                    "1e-5:1:6:own:1:-2", "1e-5:1:6:own:1:2:0", "1e-5:1:6:own:1:2:fast"])
def test_a_bad_repeat_count_or_warmup_is_refused(tmp_path, capsys, design):
    with pytest.raises(SystemExit):
        bench_range_test.main(["--designs", design, "--out", str(tmp_path)])
    assert "REPEATS a whole number >= 1, WARMUP one >= 0, WARMUP_LR > 0" in capsys.readouterr().err


def test_a_design_with_a_warmup_runs_it_before_the_test(tmp_path):
    design = bench_range_test.parse_design("1e-5:1:6:own:1:3:2e-3")
    assert (design["repeats"], design["warmup"], design["warmup_lr"]) == (1, 3, 2e-3)
    assert bench_range_test.parse_design("1e-5:1:6:own")["warmup"] == 0  # the designs stored before it
    out, found = curves(tmp_path, "1e-5:1:6:own:1:3")
    curve = found["1e-5_1_6_own_1_3-seed0"]
    assert curve["warmup"]["steps"] == 3 and len(curve["warmup"]["loss_raw"]) == 3
