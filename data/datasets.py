"""Load a dataset as uint8 arrays (N, 32, 32, 3) plus labels, class names and channel statistics.

Everything downstream (the albumentations CPU path and the GPU-resident path) starts from
the same arrays, so both see the same pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.stats import channel_stats
from engine.errors import UserError

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
    mean: tuple[float, float, float]  # per channel, in [0, 1], from the training split
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_data_dir() -> Path:
    """Where CIFAR-10 is cached: $ERA_S10_DATA, else ~/.cache/era_s10 (never the repo's data/ package)."""
    return Path(os.environ.get("ERA_S10_DATA", Path.home() / ".cache" / "era_s10"))


def load_dataset(name: str, data_dir: str | Path | None = None, subset: int | None = None,
                 seed: int = 0, fake_size: tuple[int, int] = (50_000, 10_000)) -> ImageData:
    """Load `name` ("cifar10", "folder" or "fake"); `subset` keeps the first N train and N//5 test images."""
    if name == "cifar10":
        train_x, train_y, test_x, test_y, classes = _load_cifar10(Path(data_dir or default_data_dir()))
    elif name == "folder":
        if data_dir is None:
            raise UserError("--dataset folder needs --data-dir DIR with DIR/train/<class>/ and DIR/test/<class>/ images")
        train_x, train_y, test_x, test_y, classes = _load_folder(Path(data_dir))
    elif name == "fake":
        n_train, n_test = fake_size if subset is None else (subset, max(1, subset // 5))
        train_x, train_y, test_x, test_y, classes = _make_fake(n_train, n_test, seed)
    else:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
        test_x, test_y = test_x[: max(1, subset // 5)], test_y[: max(1, subset // 5)]
    mean, std = channel_stats(train_x)
    return ImageData(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64), list(classes), mean, std)


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


def _load_folder(root: Path):
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"{root / split} is not a directory: a folder dataset needs {root}/train/<class>/*.png "
                            f"and {root}/test/<class>/*.png")
    train_x, train_y, train_classes = _read_image_folder(root / "train")
    test_x, test_y, test_classes = _read_image_folder(root / "test")
    if train_classes != test_classes:
        raise UserError(f"the classes of {root}/train ({', '.join(train_classes)}) differ from those of "
                        f"{root}/test ({', '.join(test_classes)}): give both splits the same class folders")
    return train_x, train_y, test_x, test_y, train_classes


def _read_image_folder(split_dir: Path):
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(split_dir))
    except (FileNotFoundError, OSError) as e:  # no class folders, or a class with no image files
        raise UserError(f"{split_dir}: {e}. Fix: one subfolder per class, each with at least one image") from None
    images = np.empty((len(folder.samples), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(folder.samples):
        try:
            with Image.open(path) as img:
                if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                    raise UserError(f"{path} is {img.size[0]}x{img.size[1]}; images must be "
                                    f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB: resize the dataset first")
                images[i] = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{path} is not a readable image ({e}): remove it or replace it") from None
    return images, np.asarray(folder.targets), list(folder.classes)


def _make_fake(n_train: int, n_test: int, seed: int):
    """Random CIFAR-shaped images and labels, the same for the same seed (smoke runs, benchmarks)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n_train + n_test, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    y = rng.integers(0, len(CIFAR10_CLASSES), size=n_train + n_test)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], CIFAR10_CLASSES
