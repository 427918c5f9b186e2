"""Load a dataset as uint8 arrays (N, 32, 32, 3) plus labels, class names and channel statistics.

Everything downstream (the albumentations CPU path and the GPU-resident path) starts from
the same arrays, so both see the same pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.folder import read_image_folder
from data.sampling import stratified_indices, stratified_split
from data.stats import channel_stats
from core.errors import UserError

DATASETS = ("cifar10", "folder", "fake")
IMAGE_SIZE = 32
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageData:
    train_x: np.ndarray  # (N, 32, 32, 3) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    mean: tuple[float, float, float]  # per channel, in [0, 1], from the training split (validation images excluded)
    std: tuple[float, float, float]
    val_x: np.ndarray | None = None  # the --val-split hold-out of the training split, or None
    val_y: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_val(self) -> bool:
        return self.val_x is not None and len(self.val_x) > 0


def default_data_dir() -> Path:
    """Where CIFAR-10 is cached: $ERA_S10_DATA, else ~/.cache/era_s10 (never the repo's data/ package)."""
    return Path(os.environ.get("ERA_S10_DATA", Path.home() / ".cache" / "era_s10"))


def test_subset_size(subset: int) -> int:
    """--subset N keeps N training and N//5 test images (at least one)."""
    return max(1, subset // 5)


def load_dataset(name: str, data_dir: str | Path | None = None, subset: int | None = None,
                 seed: int = 0, fake_size: tuple[int, int] = (50_000, 10_000), *, val_split: float = 0.0,
                 split_seed: int = 0, resize: bool = False, cache_dir: str | Path | None = None,
                 use_cache: bool = True) -> ImageData:
    """Load `name` ("cifar10", "folder" or "fake") as uint8 arrays.

    subset: a class-stratified sample of N training and N//5 test images, drawn with `split_seed`.
    val_split: that share of the (sampled) training split held out as a stratified validation set,
    also drawn with `split_seed`, so every `seed` of a run is tuned on the same images.
    seed: the images and labels of `fake`. resize/cache_dir/use_cache: `folder` only (data/folder.py).
    """
    if name == "cifar10":
        train_x, train_y, test_x, test_y, classes = _load_cifar10(Path(data_dir or default_data_dir()))
    elif name == "folder":
        if data_dir is None:
            raise UserError("--dataset folder needs --data-dir DIR with DIR/train/<class>/ and DIR/test/<class>/ images")
        train_x, train_y, test_x, test_y, classes = _load_folder(Path(data_dir), resize, cache_dir, use_cache)
    elif name == "fake":
        n_train, n_test = fake_size if subset is None else (subset, test_subset_size(subset))
        train_x, train_y, test_x, test_y, classes = _make_fake(n_train, n_test, seed)
    else:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if subset is not None:
        keep = stratified_indices(train_y, subset, split_seed)
        keep_test = stratified_indices(test_y, test_subset_size(subset), split_seed)
        train_x, train_y, test_x, test_y = train_x[keep], train_y[keep], test_x[keep_test], test_y[keep_test]
    val_x = val_y = None
    if val_split:
        kept, held = stratified_split(train_y, val_split, split_seed)
        if len(held) == 0 or len(kept) == 0:
            raise UserError(f"--val-split {val_split:g} of {len(train_y)} training images leaves "
                            f"{len(kept)} to train on and {len(held)} to validate: choose a share that keeps "
                            f"at least one image on each side")
        val_x, val_y = train_x[held], train_y[held].astype(np.int64)
        train_x, train_y = train_x[kept], train_y[kept]
    mean, std = channel_stats(train_x)
    return ImageData(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64), list(classes), mean, std,
                     val_x, val_y)


def _load_cifar10(root: Path):
    from torchvision.datasets import CIFAR10

    def both(download: bool):
        return (CIFAR10(str(root), train=True, download=download),
                CIFAR10(str(root), train=False, download=download))

    try:
        train, test = both(download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (its md5 check of every file)
        extracted = root / CIFAR10.base_folder
        try:
            root.mkdir(parents=True, exist_ok=True)
            train, test = both(download=True)
        except Exception as e:  # offline, disk full, corrupt archive: all have the same fix
            cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}"
            if extracted.exists():
                raise UserError(
                    f"the CIFAR-10 copy in {extracted} is truncated or corrupt (its files fail torchvision's md5 "
                    f"check) and a fresh copy could not be downloaded ({cause}): delete {extracted} (and "
                    f"{root / CIFAR10.filename} if present) and run again online, or pass --data-dir DIR where "
                    f"DIR/{CIFAR10.base_folder} holds a good copy") from None
            raise UserError(
                f"CIFAR-10 is not in {root} and could not be downloaded ({cause}): connect to the internet, or "
                f"pass --data-dir DIR where DIR/{CIFAR10.base_folder} holds the extracted python version") from None
    return train.data, np.asarray(train.targets), test.data, np.asarray(test.targets), train.classes


def _load_folder(root: Path, resize: bool = False, cache_dir=None, use_cache: bool = True):
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"{root / split} is not a directory: a folder dataset needs {root}/train/<class>/*.png "
                            f"and {root}/test/<class>/*.png")
    options = dict(resize=resize, cache_dir=cache_dir, use_cache=use_cache)
    train_x, train_y, train_classes = read_image_folder(root / "train", **options)
    test_x, test_y, test_classes = read_image_folder(root / "test", **options)
    if train_classes != test_classes:
        raise UserError(f"the classes of {root}/train ({', '.join(train_classes)}) differ from those of "
                        f"{root}/test ({', '.join(test_classes)}): give both splits the same class folders")
    return train_x, train_y, test_x, test_y, train_classes


def _make_fake(n_train: int, n_test: int, seed: int):
    """Random CIFAR-shaped images and labels, the same for the same seed (smoke runs, benchmarks)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n_train + n_test, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    y = rng.integers(0, len(CIFAR10_CLASSES), size=n_train + n_test)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], CIFAR10_CLASSES
