"""The recipe's CPU augmentation, in albumentations (the reference the GPU path is tested against)."""
from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

PAD = 4        # 32 -> 40 before the 32x32 random crop: offsets 0..8 per axis
CUTOUT = 8     # one 8x8 hole


def mean_fill(mean) -> tuple[int, int, int]:
    """The dataset mean as a uint8 pixel: it normalises to (almost exactly) zero."""
    return tuple(int(round(m * 255)) for m in mean)


def train_transform(mean, std, seed: int | None = None) -> A.Compose:
    """Pad 4 (mean fill) >> RandomCrop 32 >> HorizontalFlip 0.5 >> CoarseDropout 8x8 (mean fill) >> Normalize >> tensor.

    The hole is cut before Normalize, filled with the mean, so it becomes zero after it.
    """
    fill = mean_fill(mean)
    return A.Compose([
        A.PadIfNeeded(min_height=32 + 2 * PAD, min_width=32 + 2 * PAD, border_mode=cv2.BORDER_CONSTANT, fill=fill),
        A.RandomCrop(height=32, width=32),
        A.HorizontalFlip(p=0.5),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(CUTOUT, CUTOUT),
                        hole_width_range=(CUTOUT, CUTOUT), fill=fill, p=1.0),
        A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
        ToTensorV2(),
    ], seed=seed)


def test_transform(mean, std) -> A.Compose:
    """Normalize >> tensor."""
    return A.Compose([A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])
