"""The GPU data path (airbench style): the whole dataset lives on the device as uint8 and each batch
is augmented by a few batched tensor operations, with the same distributions as data/transforms.py.

Per sample, as the albumentations path: pad 4 with the mean pixel and crop 32x32 at offsets uniform
over 0..8 per axis; flip left-right with p = 0.5; cut one 8x8 hole, filled with the mean pixel, whose
top-left corner is uniform over 0..24 per axis so the hole lies fully inside the image (how
albumentations 2.0.8 CoarseDropout places it: `integers(0, height - hole_height + 1)`); normalise.
It runs on any device, CPU included, which is how the tests exercise it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from data.datasets import ImageData
from data.transforms import CUTOUT, PAD, mean_fill

IMAGE_SIZE = 32


def images_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 numpy -> (N, C, H, W) uint8 tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()


def pad_images(images: torch.Tensor, pad: int, fill: torch.Tensor) -> torch.Tensor:
    """Pad (N, C, H, W) by `pad` on every side with the per-channel `fill` (C,), like BORDER_CONSTANT."""
    n, c, h, w = images.shape
    out = fill.to(images.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    out[:, :, pad:pad + h, pad:pad + w] = images
    return out


def batch_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A size x size window per sample, at that sample's (top, left); one gather, no per-image Python."""
    n, c = images.shape[:2]
    span = torch.arange(size, device=images.device)
    rows = (top[:, None] + span)[:, None, :, None]
    cols = (left[:, None] + span)[:, None, None, :]
    samples = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(c, device=images.device)[None, :, None, None]
    return images[samples, channels, rows, cols]


def batch_flip_lr(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples where `flip` (N,) bool is True."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def batch_cutout(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int,
                 fill: torch.Tensor) -> torch.Tensor:
    """Fill one size x size hole per sample, at that sample's (top, left), with the per-channel `fill` (C,)."""
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    in_rows = (ys[None, :] >= top[:, None]) & (ys[None, :] < top[:, None] + size)
    in_cols = (xs[None, :] >= left[:, None]) & (xs[None, :] < left[:, None] + size)
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(hole, fill.to(images.dtype).view(1, -1, 1, 1), images)


class Normaliser:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std, as albumentations Normalize computes it."""

    def __init__(self, mean, std, device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.contiguous(memory_format=self.memory_format).float()
        return (x - self.mean) / self.std


def shard_positions(num_samples: int, rank: int, world_size: int, device: torch.device) -> torch.Tensor:
    """Positions rank, rank + world_size, ... of a permutation, cut to a multiple of world_size.

    Equal shard lengths keep distributed ranks in step (the same number of batches each); the cut
    (at most world_size - 1 samples an epoch) falls on different samples each epoch, since the
    permutation changes. Shards are disjoint; with one process nothing is cut.
    """
    usable = num_samples - num_samples % world_size
    return torch.arange(rank, usable, world_size, device=device)


class GpuTrainLoader:
    """Shuffled, augmented training batches (x float normalised, y int64), already on the device.

    The protocol of data.loaders.SeedableLoader: `set_epoch(e)` makes the order and every augmentation
    a function of (seed, e) alone; `__iter__` yields batches; `__len__` counts them. The draws for an
    epoch are made for the whole permutation before sharding, so a sample's augmentation does not
    depend on the number of ranks. The last partial batch is kept (drop_last=False, as the CPU
    path): every image is seen each epoch and len() matches the CPU loader, which the One Cycle
    schedule is built from. (With --compile its different shape costs one extra compilation.)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 channels_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.device = torch.device(device)
        self.fill = torch.tensor(mean_fill(mean), dtype=torch.uint8, device=self.device)
        self.padded = pad_images(images_to_device(images, self.device), PAD, self.fill)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.normalise = Normaliser(mean, std, self.device, channels_last)
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.shard = shard_positions(len(self.labels), rank, world_size, self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.shard)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_draws(self, epoch: int) -> dict[str, torch.Tensor]:
        """This rank's sample ids and augmentation parameters for `epoch`, in batch order."""
        n, dev = len(self.labels), self.device
        g = torch.Generator(device=dev)
        g.manual_seed(self.seed * 100_003 + epoch)  # the same epoch seed as the CPU path
        max_offset, max_hole = 2 * PAD, IMAGE_SIZE - CUTOUT
        draws = {
            "ids": torch.randperm(n, generator=g, device=dev),
            "crop_top": torch.randint(0, max_offset + 1, (n,), generator=g, device=dev),
            "crop_left": torch.randint(0, max_offset + 1, (n,), generator=g, device=dev),
            "flip": torch.rand(n, generator=g, device=dev) < 0.5,
            "hole_top": torch.randint(0, max_hole + 1, (n,), generator=g, device=dev),
            "hole_left": torch.randint(0, max_hole + 1, (n,), generator=g, device=dev),
        }
        return {k: v[self.shard] for k, v in draws.items()}

    def augment(self, ids, crop_top, crop_left, flip, hole_top, hole_left) -> torch.Tensor:
        """The recipe's augmentation of samples `ids`, as uint8 (before normalisation, like the CPU path)."""
        x = batch_crop(self.padded[ids], crop_top, crop_left)
        x = batch_flip_lr(x, flip)
        return batch_cutout(x, hole_top, hole_left, CUTOUT, self.fill)

    def __iter__(self):
        # A generator: nothing is drawn until the first batch is asked for, so a set_epoch() that
        # comes after iter() (ignite calls them in either order) still decides this epoch.
        draws = self.epoch_draws(self.epoch)
        for i in range(len(self)):
            part = {k: v[i * self.batch_size:(i + 1) * self.batch_size] for k, v in draws.items()}
            yield self.normalise(self.augment(**part)), self.labels[part["ids"]]


class GpuTestLoader:
    """Test batches in order (x float normalised, y int64) from the device-resident uint8 test set.

    With several ranks each takes positions rank, rank + world_size, ...: disjoint, and together
    every test image exactly once (no padding), so the all-reduced accuracy is over the true set.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, channels_last: bool = False):
        device = torch.device(device)
        self.images = images_to_device(images[rank::world_size], device)
        self.labels = torch.from_numpy(np.asarray(labels[rank::world_size], dtype=np.int64)).to(device)
        self.normalise = Normaliser(mean, std, device, channels_last)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalise(self.images[start:end]), self.labels[start:end]


def gpu_loaders(data: ImageData, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                world_size: int = 1, channels_last: bool = False) -> tuple[GpuTrainLoader, GpuTestLoader]:
    """Train loader (shuffled, augmented on the device, last partial batch kept) and test loader.

    [dist] `batch_size` is the global batch, as for data.loaders.cpu_loaders: each of the
    `world_size` ranks loads batch_size // world_size, so together they step through the batches
    one process would (and an epoch has as many steps), which the One Cycle schedule is built from.
    """
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} does not split over {world_size} ranks")
    common = dict(mean=data.mean, std=data.std, batch_size=batch_size // world_size, device=device, rank=rank,
                  world_size=world_size, channels_last=channels_last)
    return (GpuTrainLoader(data.train_x, data.train_y, seed=seed, **common),
            GpuTestLoader(data.test_x, data.test_y, **common))
