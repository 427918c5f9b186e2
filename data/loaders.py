"""The CPU data path: albumentations per image in a torch DataLoader (ignite's auto_dataloader)."""
from __future__ import annotations

import random

import ignite.distributed as idist
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from data.datasets import ImageData
from data.transforms import test_transform, train_transform


class AugmentedArrayDataset(Dataset):
    """(image, label) pairs from uint8 arrays, each image passed through an albumentations transform.

    Each image's random draws come from a generator of its own, seeded by (epoch seed, index): an image is
    augmented the same way whichever DataLoader worker (and however many) loads it, so a seed gives the
    same batches with --workers 0, 1 or 2. All the transforms of one image share that generator
    (albumentations' set_random_state), so their draws are independent of each other.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, seed: int | None = None):
        self.images, self.labels, self.transform = images, labels, transform
        self.seed = seed  # None: the transform's own stream (the evaluation transform draws nothing)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.seed is not None:
            entropy = (self.seed, int(i))
            self.transform.set_random_state(np.random.default_rng(entropy), random.Random(hash(entropy)))
        return self.transform(image=self.images[i])["image"], int(self.labels[i])

    def reseed(self, seed: int) -> None:
        self.seed = seed


class SeedableLoader:
    """A train DataLoader whose shuffle order and augmentations are a function of (seed, epoch) alone.

    `set_epoch(e)` before each epoch makes a resumed run see the same batches as a straight one. Neither
    the number of DataLoader workers nor [dist] the rank changes how an image is augmented (its draws
    are seeded by the epoch and its index); the shuffle is DistributedSampler's under several processes,
    one permutation of (seed, epoch) shared by all ranks.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, generator: torch.Generator, seed: int):
        self.loader, self.generator, self.seed = loader, generator, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler
            sampler.set_epoch(epoch)

    def __iter__(self):
        # Reseed here, not in set_epoch: after EPOCH_STARTED ignite calls next() once more on the previous
        # epoch's iterator, and that call draws from the generator (RandomSampler's remainder randperm).
        # Seeded in set_epoch, the new epoch's shuffle would depend on it, and a resumed run (no previous
        # iterator) would see other batches than a straight run.
        epoch_seed = self.seed * 100_003 + self.epoch
        self.generator.manual_seed(epoch_seed)
        self.loader.dataset.reseed(epoch_seed)
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class UnpaddedShardSampler(DistributedSampler):
    """[dist] Indices rank, rank + world_size, ...: every test image on exactly one rank, none twice.

    DistributedSampler pads the shards to equal length with repeated images, which would count them
    twice in the test metrics; evaluation needs no equal shards (no collective runs per batch).
    A DistributedSampler subclass, so idist.auto_dataloader uses it as it is.
    """

    def __init__(self, dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def cpu_eval_loader(images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int, workers: int):
    """Normalised batches in order (no augmentation); [dist] this rank's unpadded shard (UnpaddedShardSampler)."""
    world_size, rank = idist.get_world_size(), idist.get_rank()
    dataset = AugmentedArrayDataset(images, labels, test_transform(mean, std))
    sampler = UnpaddedShardSampler(dataset, world_size, rank) if world_size > 1 else None
    return idist.auto_dataloader(dataset, sampler=sampler, shuffle=False, drop_last=False,
                                 batch_size=batch_size, num_workers=workers, persistent_workers=False)


def cpu_loaders(data: ImageData, batch_size: int, workers: int, seed: int):
    """Train loader (shuffled, augmented, last partial batch kept) and test loader (normalised only).

    [dist] `batch_size` is the global batch: with W processes idist.auto_dataloader gives each
    batch_size // W, and W-way shards (train: DistributedSampler seeded with `seed`, padded to equal
    length so every rank runs the same number of steps; test: unpadded, see UnpaddedShardSampler).
    """
    test = cpu_eval_loader(data.test_x, data.test_y, data.mean, data.std, batch_size, workers)
    return cpu_train_loader(data, batch_size, workers, seed), test


def cpu_train_loader(data: ImageData, batch_size: int, workers: int, seed: int) -> SeedableLoader:
    """The shuffled, augmented train loader; [dist] this rank's shard, batch_size // world_size per batch."""
    train_ds = AugmentedArrayDataset(data.train_x, data.train_y, train_transform(data.mean, data.std), seed)
    generator = torch.Generator().manual_seed(seed)
    common = dict(batch_size=batch_size, num_workers=workers, persistent_workers=False, drop_last=False,
                  generator=generator)
    world_size, rank = idist.get_world_size(), idist.get_rank()
    if world_size > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        loader = idist.auto_dataloader(train_ds, sampler=sampler, **common)
    else:
        loader = idist.auto_dataloader(train_ds, shuffle=True, **common)
    return SeedableLoader(loader, generator, seed)
