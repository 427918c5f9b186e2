"""Single image files for prediction: find them (files, or folders searched recursively) and read them.

Unlike a folder dataset (data/folder.py), where one bad file stops the load, each file here
stands alone: a problem is one line for that file, and the caller skips it and goes on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# What a folder is searched for (torchvision's ImageFolder extensions); a file named directly is tried anyway.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageProblem(Exception):
    """One file that cannot be used; the message is one line naming the file and, if there is one, the fix."""


def find_images(paths) -> tuple[list[Path], list[str]]:
    """(image files in the order given, folders expanded recursively and sorted; one problem line per bad path)."""
    files, problems = [], []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{given}: a folder with no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
            files += found
        elif given.is_file():
            files.append(given)
        else:
            problems.append(f"{given}: no such file or folder")
    return files, problems


def read_image(path: Path, size: int = 32, resize: bool = False) -> np.ndarray:
    """(size, size, 3) uint8 RGB; ImageProblem if it is not a readable image, or not size x size without `resize`.

    Resized as a `--dataset folder --resize` run resizes its images (RGB, then bicubic), so the model
    sees the same pixels it would have been trained on.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.size != (size, size):
                if not resize:
                    raise ImageProblem(f"{path} is {img.size[0]}x{img.size[1]}, not {size}x{size}: pass --resize "
                                       f"to resize it to {size}x{size}")
                return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ImageProblem(f"{path} is not a readable image ({reason})") from None
