"""Generated images whose class is decided by a bright square: fast to learn, and where the evidence is is known.

`quadrant_squares`: the class is the quadrant holding the square (0 top-left, 1 top-right, 2 bottom-left,
3 bottom-right); noise everywhere else. A model that learned it must look at the square, which is what
the Grad-CAM test checks. Left and right swap under a horizontal flip, so this set is for training
without the recipe's augmentation (tests train it in a plain loop).

`coloured_squares`: the class is the square's colour (red, green, blue, yellow), at a random place;
crops and flips keep the class, so run.py can train on it with the recipe's augmentation
(`write_folder` writes it as DIR/train/<class>/*.png and DIR/test/<class>/*.png).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE, SQUARE = 32, 10
QUADRANT_SQUARE, MARGIN = 8, 4  # the square: 8x8, at least 4 pixels from the centre lines
NOISE = 110  # background noise levels 0..109: dim, so the square stands out

COLOURS = {"red": (255, 40, 40), "green": (40, 255, 40), "blue": (40, 40, 255), "yellow": (255, 255, 40)}


def _noise(rng, n: int) -> np.ndarray:
    return rng.integers(0, NOISE, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def quadrant_squares(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 32, 32, 3), labels = the square's quadrant); the square lies wholly inside it."""
    rng = np.random.default_rng(seed)
    images, labels = _noise(rng, n), rng.integers(0, 4, size=n)
    half, side = SIZE // 2, QUADRANT_SQUARE
    for image, label in zip(images, labels):
        # At least MARGIN pixels from the image's centre lines: the quadrant is never in doubt, also at the
        # 4x4 resolution of the last convolutional map (8 pixels a cell) that Grad-CAM works on.
        top, left = (half + MARGIN + rng.integers(0, half - side - MARGIN) if inner else
                     1 + rng.integers(0, half - side - MARGIN) for inner in (label // 2, label % 2))
        image[top:top + side, left:left + side] = rng.integers(220, 256, size=3)
    return images, labels


def quadrant_mask(label: int) -> np.ndarray:
    """(32, 32) bool: the quadrant of class `label`."""
    mask = np.zeros((SIZE, SIZE), bool)
    half = SIZE // 2
    mask[(label // 2) * half:(label // 2 + 1) * half, (label % 2) * half:(label % 2 + 1) * half] = True
    return mask


def coloured_squares(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, class names): a square of the class's colour at a random place on noise."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    images, labels = _noise(rng, n), rng.integers(0, len(names), size=n)
    for image, label in zip(images, labels):
        top, left = rng.integers(0, SIZE - SQUARE + 1, size=2)
        image[top:top + SQUARE, left:left + SQUARE] = COLOURS[names[label]]
    return images, labels, names


def write_folder(root: Path, n_train: int = 480, n_test: int = 120, seed: int = 0) -> Path:
    """coloured_squares as a folder dataset of PNGs: root/train/<colour>/i.png, root/test/<colour>/i.png."""
    from PIL import Image

    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels, names = coloured_squares(n, split_seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = Path(root) / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return Path(root)


def trained_squares_model(tmp_path_factory) -> tuple[Path, Path]:
    """(coloured-squares folder dataset, best-model file of run.py trained on it: 2 epochs at width 8).

    Trained once per test session, whichever test module asks first (the others find it in the
    session's temporary folder), so predict and export tests share one model.
    """
    from tests.conftest import QUICK, run_cli

    root = tmp_path_factory.getbasetemp() / "coloured_squares_run"
    data, out = root / "data", root / "out"
    found = sorted((out / "checkpoints").glob("best_model_*.pt"))
    if found:
        return data, found[0]
    write_folder(data, n_train=320, n_test=80)
    proc = run_cli("--dataset", "folder", "--data-dir", data, "--no-cache", "--epochs", 2, "--batch-size", 32,
                   "--lr-min", "1e-3", "--lr-max", "1e-2", *QUICK, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    (model,) = (out / "checkpoints").glob("best_model_*.pt")
    return data, model
