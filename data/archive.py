"""The real CIFAR-10 copy shipped as an archive (`cifar10-jpeg.tar.gz`: train/<class>/*.jpg, test/<class>/*.jpg).

Where no download is possible the archive is the dataset: unpack it once and use it as
`--dataset folder --data-dir DIR`. Benchmarks and the real-data tests find it through
$ERA_S10_CIFAR_ARCHIVE or beside the checkout in ../shared/data/.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
COPY_NAME = "CIFAR-10, JPEG q75 copy"  # how every figure measured on it names the data


def find_cifar_archive(repo: Path | None = None) -> Path | None:
    """$ERA_S10_CIFAR_ARCHIVE if set, else REPO/../shared/data/cifar10-jpeg.tar.gz if present, else None."""
    if os.environ.get("ERA_S10_CIFAR_ARCHIVE"):
        return Path(os.environ["ERA_S10_CIFAR_ARCHIVE"])
    repo = repo or Path(__file__).resolve().parents[1]
    candidate = repo.parent / "shared" / "data" / ARCHIVE_NAME
    return candidate if candidate.is_file() else None


def unpack_cifar_archive(archive: Path, dest: Path) -> Path:
    """Unpack `archive` as `dest` (train/ and test/ inside) unless it is there already; returns dest.

    Unpacked beside it first and renamed when complete, so a killed unpack never looks finished.
    """
    dest = Path(dest)
    if (dest / "train").is_dir() and (dest / "test").is_dir():
        return dest
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")  # "data": no absolute paths, links out of it, or devices
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest
