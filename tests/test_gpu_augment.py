"""The GPU data path draws the same augmentations as the albumentations path (on the same images).

Every image is a "code image": channel 0 holds 64 + row, channel 1 holds 64 + column, so from any
output pixel that is not the fill we can read back where it came from, and so recover each
sample's crop offsets, flip and hole exactly. The mean is chosen so that the fill pixel is 26,
which no code equals. Seeds are fixed, so the chi-square tests give the same p-values every run;
the bounds are loose enough for a correct transform and fail for a wrong one (see the last test).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

import data.gpu_loader as gpu_loader
from data.gpu_loader import GpuTrainLoader
from data.transforms import train_transform

N = 4000
FILL = 26
MEAN = (FILL / 255,) * 3
STD = (0.25, 0.2, 0.3)
P_MIN = 1e-3
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def code_image() -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([64 + rows, 64 + cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def cpu_outputs(n: int) -> torch.Tensor:
    transform = train_transform(MEAN, STD, seed=1)
    image = code_image()
    return torch.stack([transform(image=image)["image"] for _ in range(n)])


def gpu_outputs(n: int, device: str = "cpu") -> torch.Tensor:
    images = np.repeat(code_image()[None], n, axis=0)
    loader = GpuTrainLoader(images, np.zeros(n), MEAN, STD, batch_size=1000, seed=1, device=torch.device(device))
    return torch.cat([x for x, _ in loader]).cpu()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return torch.round(x.float() * std + mean).to(torch.int64).numpy()


def constant_or_nan(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per sample: the value if it is the same at every valid pixel, else NaN."""
    v = np.where(valid, values, np.nan).reshape(len(values), -1)
    lo, hi = np.nanmin(v, axis=1), np.nanmax(v, axis=1)
    return np.where(lo == hi, lo, np.nan)


def recover(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Crop offsets, flip and hole of each sample, checking the output is exactly such an image."""
    u8 = to_uint8(x)
    n = len(u8)
    i = np.arange(32)[None, :, None]
    j = np.arange(32)[None, None, :]
    is_fill = (u8 == FILL).all(axis=1)
    code = ~is_fill
    assert (is_fill | ((u8[:, 0] >= 64) & (u8[:, 0] < 96))).all(), "a pixel is neither fill nor a code"
    row, col = u8[:, 0] - 64, u8[:, 1] - 64
    top = constant_or_nan(row + 4 - i + 0 * j, code)
    left_plain = constant_or_nan(col + 4 - j + 0 * i, code)
    left_flipped = constant_or_nan(col + 4 - (31 - j) + 0 * i, code)
    assert not np.isnan(top).any(), "rows do not come from one vertical crop offset"
    flip = np.isnan(left_plain)
    assert (flip != np.isnan(left_flipped)).all(), "columns are neither a plain nor a mirrored crop"
    top, left = top.astype(int), np.where(flip, left_flipped, left_plain).astype(int)

    # The image region (not padding) in output coordinates; fill inside it is the hole.
    r0, r1 = np.maximum(0, 4 - top), np.minimum(32, 36 - top)
    c0_plain, c1_plain = np.maximum(0, 4 - left), np.minimum(32, 36 - left)
    c0 = np.where(flip, 32 - c1_plain, c0_plain)
    c1 = np.where(flip, 32 - c0_plain, c1_plain)
    ii, jj = np.arange(32)[None, :], np.arange(32)[None, :]
    in_rows = (ii >= r0[:, None]) & (ii < r1[:, None])
    in_cols = (jj >= c0[:, None]) & (jj < c1[:, None])
    region = in_rows[:, :, None] & in_cols[:, None, :]
    hole_seen = is_fill & region
    assert hole_seen.any(axis=(1, 2)).all(), "a sample has no hole"
    rows_seen, cols_seen = hole_seen.any(axis=2), hole_seen.any(axis=1)
    first_r, last_r = rows_seen.argmax(1), 31 - rows_seen[:, ::-1].argmax(1)
    first_c, last_c = cols_seen.argmax(1), 31 - cols_seen[:, ::-1].argmax(1)
    # The region is >= 28 pixels high, so a hole is clipped on one side at most: the other side places it.
    hole_top = np.where(first_r > r0, first_r, last_r + 1 - 8)
    hole_left = np.where(first_c > c0, first_c, last_c + 1 - 8)
    hole = ((ii >= hole_top[:, None]) & (ii < hole_top[:, None] + 8))[:, :, None] & \
           ((jj >= hole_left[:, None]) & (jj < hole_left[:, None] + 8))[:, None, :]
    assert (hole_seen == (hole & region)).all(), "the fill inside the image is not one 8x8 hole"
    inside = (hole_top >= r0) & (hole_top + 8 <= r1) & (hole_left >= c0) & (hole_left + 8 <= c1)
    assert inside.sum() > n // 4 and (hole_seen[inside].reshape(-1, 1024).sum(1) == 64).all()
    return {"top": top, "left": left, "flip": flip, "hole_top": hole_top, "hole_left": hole_left,
            "fill_values": x.float().permute(0, 2, 3, 1).numpy()[is_fill]}


def assert_same_distributions(gpu: dict, cpu: dict) -> None:
    for key, bins in (("top", 9), ("left", 9), ("hole_top", 25), ("hole_left", 25)):
        counts = {name: np.bincount(d[key], minlength=bins) for name, d in (("gpu", gpu), ("cpu", cpu))}
        for name, c in counts.items():
            assert len(c) == bins and c.min() > 0, f"{name} {key}: values outside 0..{bins - 1} or missing: {c}"
            p = chisquare(c).pvalue
            assert p > P_MIN, f"{name} {key} is not uniform over 0..{bins - 1} (p={p:.2g}): {c}"
        p = chi2_contingency(np.stack([counts["gpu"], counts["cpu"]])).pvalue
        assert p > P_MIN, f"{key}: the paths' histograms differ (p={p:.2g})"
    for d in (gpu, cpu):
        assert abs(d["flip"].mean() - 0.5) < 0.04, f"flip rate {d['flip'].mean():.3f}"
        assert np.abs(d["fill_values"]).max() < 1e-5, "the mean fill does not normalise to zero"


@pytest.fixture(scope="module")
def cpu_stats():
    return recover(cpu_outputs(N))


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_path_matches_albumentations_statistics(cpu_stats, device):
    assert_same_distributions(recover(gpu_outputs(N, device)), cpu_stats)


@pytest.mark.parametrize("pad, cutout", [(2, 8), (4, 7)])
def test_the_comparison_fails_for_a_wrong_pad_or_hole(cpu_stats, monkeypatch, pad, cutout):
    monkeypatch.setattr(gpu_loader, "PAD", pad)
    monkeypatch.setattr(gpu_loader, "CUTOUT", cutout)
    with pytest.raises(AssertionError):
        assert_same_distributions(recover(gpu_outputs(N)), cpu_stats)
