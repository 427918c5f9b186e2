"""Per-channel statistics of a uint8 image array."""
import numpy as np

# CIFAR-10's training split, for reference (the loader computes them from the data it loads):
# the std is over all pixels of the split, not the mean of per-image stds (0.2023, ...).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def channel_stats(images: np.ndarray, chunk: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel, in [0, 1], of (N, H, W, C) uint8 images; chunked to bound memory."""
    c = images.shape[-1]
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, c).astype(np.float64) / 255.0
        total += block.sum(0)
        total_sq += (block ** 2).sum(0)
    n = images.size // c
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
