"""Shared fixtures: tiny CPU runs through run.py's own main()."""
from __future__ import annotations

import json

import pytest

import run as run_cli

# 256 fake train images in batches of 64: 4 iterations per epoch; 51 test images.
FAST = ["--dataset", "fake", "--subset", "256", "--batch-size", "64", "--device", "cpu", "--width", "8",
        "--workers", "0", "--no-progress"]
LR = ["--lr-min", "1e-3", "--lr-max", "1e-2"]
ITERS_PER_EPOCH = 4


def train(output_dir, *flags) -> int:
    """run.py's main() in this process; returns its exit code."""
    return run_cli.main([*FAST, "--output-dir", str(output_dir), *map(str, flags)])


def read_summary(output_dir) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """Range test (6 iterations) + 2 epochs with every default handler, the examples and a counting handler."""
    out = tmp_path_factory.mktemp("full_run")
    code = train(out, "--epochs", "2", "--lr-find-iters", "6",
                 "--handler", "tests.handlers_for_tests:count_events",
                 "--handler", "examples.early_stopping:attach",
                 "--handler", "examples.grad_norm_tensorboard:attach")
    assert code == 0
    return out
