"""Image-folder datasets: decoded in parallel on first load, then read back from a cache.

DIR/<class>/<image> (torchvision's ImageFolder layout, whose class and file discovery is used as
it is) becomes one (N, 32, 32, 3) uint8 array. Decoding 60,000 small JPEGs one at a time takes
longer than an epoch of a small model, so the decoded arrays are cached as one .npy file per
split, keyed by every file's path, size and modification time (a changed, added or removed
file is a new key) and by the resize setting. The cache lives in the user's cache folder
(`$ERA_S10_CACHE`, else `$XDG_CACHE_HOME/era_s10` or `~/.cache/era_s10`), never in the dataset
folder unless `--cache-dir` says so; an older cache of the same folder is deleted when a new one
is written.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from core.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
CACHE_VERSION = 1           # bump when the decoded pixels would change (decoder settings, resize filter)
CHUNK = 2_000               # images per task handed to a decoding process
PARALLEL_FROM = 4_000       # below this many images, decode in this process (a pool costs ~1 s to start)


def default_cache_dir() -> Path:
    """$ERA_S10_CACHE, else $XDG_CACHE_HOME/era_s10/folders, else ~/.cache/era_s10/folders."""
    if os.environ.get("ERA_S10_CACHE"):
        return Path(os.environ["ERA_S10_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "era_s10" / "folders"


def list_image_folder(split_dir: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) of every image and the class names, as torchvision's ImageFolder finds them."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(split_dir))
    except (FileNotFoundError, OSError) as e:  # no class folders, or a class with no image files
        raise UserError(f"{split_dir}: {e}. Fix: one subfolder per class, each with at least one image") from None
    return folder.samples, list(folder.classes)


def cache_key(split_dir: Path, samples: list[tuple[str, int]], resize: bool) -> str:
    """A digest of what the decoded arrays depend on: each file's path, label, size and mtime; resize."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} resize={resize} {split_dir.resolve()}\n".encode())
    for path, label in samples:
        st = os.stat(path)
        digest.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def cache_stem(split_dir: Path) -> str:
    """The part of a cache file's name that names the folder, so a new cache can replace an old one."""
    resolved = str(split_dir.resolve())
    readable = re.sub(r"[^A-Za-z0-9]+", "-", resolved).strip("-")[-60:]
    return f"{readable}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def decode_images(paths: list[str], resize: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode `paths` to (N, 32, 32, 3) uint8; returns the array and (position, problem) per bad file."""
    from PIL import Image, UnidentifiedImageError

    images = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    problems = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                    if not resize:
                        problems.append((i, f"{path} is {img.size[0]}x{img.size[1]}; images must be "
                                            f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB: resize the dataset first, or pass "
                                            f"--resize to resize them as they load"))
                        continue
                    img = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                images[i] = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            problems.append((i, f"{path} is not a readable image ({e}): remove it or replace it"))
    return images, problems


def _decode_chunk(args):
    paths, resize = args
    return decode_images(paths, resize)


def decode_in_parallel(paths: list[str], resize: bool, processes: int | None = None) -> np.ndarray:
    """Decode every path, in `processes` worker processes (default: one per core); UserError on a bad file."""
    processes = processes or os.cpu_count() or 1
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    if processes > 1 and len(paths) >= PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
        # fork, as torch's DataLoader workers: the children use only PIL and numpy. spawn would re-run a
        # user's script that lacks an `if __name__ == "__main__"` guard; threads are slower than one
        # process (the per-image Python work holds the GIL: 20,000 images 2.9 s vs 1.9 s here).
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_decode_chunk, [(c, resize) for c in chunks]))
    else:
        results = [decode_images(c, resize) for c in chunks]
    for arrays, problems in results:
        if problems:
            raise UserError(problems[0][1])
    return np.concatenate([arrays for arrays, _ in results]) if results else np.zeros(
        (0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


def read_image_folder(split_dir: Path, resize: bool = False, cache_dir: Path | None = None,
                      use_cache: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,), class names) of DIR/<class>/<image>.

    From the cache when every file is as it was when the cache was written; else decoded (in
    parallel) and, with `use_cache`, written to the cache for the next run.
    """
    split_dir = Path(split_dir)
    samples, classes = list_image_folder(split_dir)
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    cache_file = None
    if use_cache:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_file = folder / f"{cache_stem(split_dir)}-{cache_key(split_dir, samples, resize)}.npy"
        images = _read_cache(cache_file, len(samples))
        if images is not None:
            log.info("%s: %d images from the cache %s", split_dir, len(samples), cache_file)
            return images, labels, classes
    images = decode_in_parallel([path for path, _ in samples], resize)
    if cache_file is not None:
        _write_cache(cache_file, images)
    return images, labels, classes


def _read_cache(path: Path, count: int) -> np.ndarray | None:
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # absent, or damaged (a killed write never leaves one: see _write_cache)
        return None
    if images.shape != (count, IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        return None
    return images


def _write_cache(path: Path, images: np.ndarray) -> None:
    """Write atomically (temporary file, then rename) and remove the folder's older caches; never fatal."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, images, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        stem = path.name.rsplit("-", 1)[0]
        for old in path.parent.glob(f"{stem}-*.npy"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as e:  # a read-only or full cache folder slows the next run, nothing more
        log.warning("could not write the image cache %s (%s); the next run decodes the images again", path, e)
