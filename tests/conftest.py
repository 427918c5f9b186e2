"""Shared fixtures: run.py in a subprocess or in-process, real images (sklearn's digits) as a folder dataset,
and the device the device-agnostic tests run on.

ERA_S10_TEST_DEVICE=cuda moves the tests whose assertions hold on any device (no bit-exact comparison
with a CPU computation) to the GPU: they take TEST_DEVICE. Unset (or cpu), everything runs on the CPU.
Tests marked @pytest.mark.cuda only make sense on a GPU: they run wherever torch sees one, whatever
the variable says, and are skipped, with the reason, where it sees none.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import run as run_module

REPO = Path(__file__).resolve().parents[1]
TEST_DEVICE_VARIABLE = "ERA_S10_TEST_DEVICE"
TEST_DEVICE = os.environ.get(TEST_DEVICE_VARIABLE) or "cpu"


def pytest_configure(config):
    if TEST_DEVICE not in ("cpu", "cuda"):
        raise pytest.UsageError(f"{TEST_DEVICE_VARIABLE}={TEST_DEVICE}: use cpu or cuda (or leave it unset: cpu)")
    if TEST_DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"{TEST_DEVICE_VARIABLE}=cuda, but torch sees no CUDA GPU here: unset it "
                                f"(the tests then run on the CPU)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none here)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def pytest_report_header(config):
    return f"device for device-agnostic tests: {TEST_DEVICE} (${TEST_DEVICE_VARIABLE})"

# Small, fast settings for runs whose point is not the model or the range test.
QUICK = ["--device", "cpu", "--workers", "0", "--width", "8", "--no-progress"]


def run_cli(*args: str, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python run.py ARGS` as a user would type it; returns the finished process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), ERA_S10_DATA=str(Path(cwd or REPO) / "no-cifar-here"))
    return subprocess.run([sys.executable, str(REPO / "run.py"), *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_summary(output_dir: Path) -> dict:
    return json.loads((Path(output_dir) / "summary.json").read_text())


def write_digits_folder(root: Path, test_share: float = 0.2, seed: int = 0) -> Path:
    """sklearn's 1,797 handwritten digits (8x8, 17 grey levels) as 32x32 RGB PNGs in train/ and test/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    n_test = int(len(order) * test_share)
    for split, idx in (("test", order[:n_test]), ("train", order[n_test:])):
        for i in idx:
            grey = (digits.images[i] * (255 / 16)).astype(np.uint8)
            img = Image.fromarray(grey).resize((32, 32), Image.BILINEAR).convert("RGB")
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits"))

# 256 fake train images in batches of 64: 4 iterations per epoch; 51 test images.
# --no-amp: fp32 on every machine. bf16 autocast is on by default only where the CPU has native bf16, so
# without it a test that compares a run with an fp32 recomputation (predictions, losses, a tiny model's argmax
# over near-uniform outputs) would pass on one CI machine and fail on the next. The bf16 path of a whole run
# is tested with the same numerics on both sides in tests/test_speed.py.
FAST = ["--dataset", "fake", "--subset", "256", "--batch-size", "64", "--device", "cpu", "--width", "8",
        "--workers", "0", "--no-progress", "--no-amp"]
LR = ["--lr-min", "1e-3", "--lr-max", "1e-2"]
ITERS_PER_EPOCH = 4


def train(output_dir, *flags) -> int:
    """run.py's main() in this process; returns its exit code."""
    return run_module.main([*FAST, "--output-dir", str(output_dir), *map(str, flags)])



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
