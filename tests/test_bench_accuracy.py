"""bench/bench_accuracy.py's tables: per-run rows, and one summary row per configuration over its seeds."""
from __future__ import annotations

import json

from bench.bench_accuracy import device_cell, held_from, summarise, write_report


def result(pipeline, tag, seed, accuracies):
    return {"pipeline": pipeline, "tag": tag, "seed": seed, "lr_min": 1e-5, "lr_max": 1e-3, "test_accuracy": accuracies,
            "val_accuracy": None, "wall_s": 60.0, "device": "cpu", "torch": "x", "date": "d", "data": "test data",
            "width": 8}


def test_held_from_is_the_epoch_from_which_the_target_holds_to_the_end():
    assert held_from([0.91, 0.89, 0.90, 0.95], 0.90) == 3
    assert held_from([0.91, 0.92, 0.89], 0.90) is None
    assert held_from([0.95], 0.90) == 1


def test_summary_has_the_median_and_range_per_configuration(tmp_path):
    ramp = [0.5 + 0.02 * e for e in range(24)]  # 0.86 at epoch 19, 0.96 at 24; >= 0.90 from epoch 21
    runs = {"ours-new-seed0": result("ours", "new", 0, ramp),
            "ours-new-seed1": result("ours", "new", 1, [a - 0.03 for a in ramp]),
            "ours-new-seed2": result("ours", "new", 2, [a - 0.01 for a in ramp]),
            "plain-base-seed0": result("plain", "base", 0, [0.80] * 24)}
    for name, r in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    summarised = write_report(tmp_path, 0.90)
    assert [r["held_from"] for r in summarised] == [21, 23, 22, None]
    md = (tmp_path / "results.md").read_text()
    # ours: finals 0.96, 0.93, 0.95 -> median 95.00, range 93.00-96.00; @19: 0.86, 0.83, 0.85
    assert "| ours | new | 0, 1, 2 | 85.00 (83.00-86.00) | 95.00 (93.00-96.00) | 0 of 3 |" in md
    assert "| plain | base | 0 | 80.00 | 80.00 | 0 of 1 |" in md
    assert "| ours | new | 1 | cpu |" in md  # the per-run table is still there
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_a_seed_that_holds_the_target_from_epoch_19_is_counted(tmp_path):
    good = [0.5] * 18 + [0.9] * 6
    for seed, acc in enumerate([good, [0.5] * 19 + [0.9] * 5]):
        (tmp_path / f"ours-t-seed{seed}.json").write_text(json.dumps(result("ours", "t", seed, acc)))
    assert summarise(result("ours", "t", 0, good), 0.9)["held_from"] == 19
    write_report(tmp_path, 0.90)
    assert "| 1 of 2 |" in (tmp_path / "results.md").read_text()


def test_a_row_names_the_cpu_and_numerics_where_the_run_recorded_them(tmp_path):
    new = {**result("ours", "t", 0, [0.5] * 24), "cpu": "AMD EPYC 9R14", "speed": "bf16 autocast, channels_last"}
    assert device_cell(new) == "cpu (AMD EPYC 9R14; bf16 autocast, channels_last)"
    assert device_cell(result("ours", "t", 1, [0.5] * 24)) == "cpu"  # a run from before they were recorded
    gpu = {**new, "device": "NVIDIA H100 80GB HBM3"}
    assert device_cell(gpu) == "NVIDIA H100 80GB HBM3 (bf16 autocast, channels_last)"  # the GPU, not the host CPU
    for seed, run in enumerate([new, result("ours", "t", 1, [0.5] * 24)]):
        (tmp_path / f"ours-t-seed{seed}.json").write_text(json.dumps(run))
    write_report(tmp_path, 0.90)
    assert "| ours | t | 0 | cpu (AMD EPYC 9R14; bf16 autocast, channels_last) |" in (tmp_path / "results.md").read_text()


def test_the_plain_loop_reads_its_max_lr_with_torch_lr_finder(digits_dir):
    import argparse
    import math

    from bench.bench_accuracy import run_plain

    args = argparse.Namespace(width=4, epochs=1, subset=None, workers=0, device="cpu", plain_lr_from="torch-lr-finder",
                              plain_finder_iters=20)
    r = run_plain(args, digits_dir, seed=0, lr_max=None, weight_decay=1e-2)
    assert 1e-7 < r["lr_max"] < 10 and math.isfinite(r["lr_max"]) and r["lr_from"] == "torch-lr-finder"
    assert r["lr_min"] == r["lr_max"] / 100 and len(r["test_accuracy"]) == 1
    assert r["cpu"] and r["speed"] == "fp32, channels_last"  # the plain loop's numerics, named in its row
