"""The albumentations recipe: pad 4 + crop 32, flip 0.5, one mean-filled 8x8 hole, then Normalize."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from data import transforms
from data.transforms import mean_fill, train_transform

PAD, CUTOUT = 4, 8  # the recipe, written here so a changed constant in data/ fails the test

FILL = 10
MEAN = (FILL / 255,) * 3
STD = (0.2, 0.25, 0.3)
N = 3000


def coded_image() -> np.ndarray:
    """Every pixel names its own (row, col); no pixel equals the mean fill."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([20 + 6 * rows, 20 + 6 * cols, np.full_like(rows, 250)], -1).astype(np.uint8)


def denormalise(t) -> np.ndarray:
    return t.numpy().transpose(1, 2, 0) * np.array(STD) * 255 + np.array(MEAN) * 255


def decode(pixels: np.ndarray):
    """(dy, dx, flipped, fill mask, padding mask) of one augmented coded image."""
    fill = np.all(np.abs(pixels - FILL) < 0.5, axis=-1)
    src_r = np.round((pixels[..., 0] - 20) / 6)
    src_c = np.round((pixels[..., 1] - 20) / 6)
    i, j = np.nonzero(~fill)
    # Along a row, source columns run backwards when the image was flipped.
    row = i[0]
    cols = j[i == row]
    flipped = src_c[row, cols[-1]] < src_c[row, cols[0]] if len(cols) > 1 else False
    j_unflipped = 31 - j if flipped else j
    dy = {int(v) for v in src_r[i, j] - i + PAD}
    dx = {int(v) for v in src_c[i, j] - j_unflipped + PAD}
    assert len(dy) == 1 and len(dx) == 1, "a crop is one rigid shift"
    dy, dx = dy.pop(), dx.pop()
    out_r = np.arange(32)[:, None] + dy - PAD
    out_c = np.arange(32)[None, :]
    out_c = (31 - out_c if flipped else out_c) + dx - PAD
    padding = (out_r < 0) | (out_r > 31) | (out_c < 0) | (out_c > 31)
    return dy, dx, flipped, fill, padding


@pytest.fixture(scope="module")
def samples():
    transform = train_transform(MEAN, STD, seed=123)
    image = coded_image()
    outs = [transform(image=image)["image"] for _ in range(N)]
    return outs, [decode(denormalise(t)) for t in outs]


def chi_square_uniform(values, k):
    counts = np.bincount(values, minlength=k)
    expected = len(values) / k
    return ((counts - expected) ** 2 / expected).sum(), counts


def test_crop_offsets_are_uniform_over_0_to_8(samples):
    _, decoded = samples
    for axis in (0, 1):
        offsets = np.array([d[axis] for d in decoded])
        assert offsets.min() == 0 and offsets.max() == 2 * PAD  # shifts of up to 4 pixels each way
        chi2, counts = chi_square_uniform(offsets, 2 * PAD + 1)
        assert chi2 < 26.1, counts  # chi-square, 8 dof, p = 0.001


def test_flip_rate_is_one_half(samples):
    _, decoded = samples
    rate = np.mean([d[2] for d in decoded])
    assert abs(rate - 0.5) < 0.04


def test_hole_is_exactly_8x8_mean_filled_and_inside_the_image(samples):
    outs, decoded = samples
    full_holes, tops, lefts = 0, [], []
    for t, (_, _, _, fill, padding) in zip(outs, decoded):
        hole = fill & ~padding
        # Some 8x8 square lies wholly in the filled pixels and contains every hole pixel.
        filled_windows = sliding_window_view(fill, (CUTOUT, CUTOUT)).all(axis=(-1, -2))
        hole_in_window = sliding_window_view(hole, (CUTOUT, CUTOUT)).sum(axis=(-1, -2)) == hole.sum()
        assert (filled_windows & hole_in_window).any()
        if hole.sum() == CUTOUT * CUTOUT:
            full_holes += 1
            r, c = np.nonzero(hole)
            assert r.max() - r.min() == c.max() - c.min() == CUTOUT - 1
            tops.append(r.min())
            lefts.append(c.min())
        # Mean-filled before Normalize, so the hole is zero after it (up to the mean's uint8 rounding).
        values = t.numpy()[:, fill]
        assert np.all(np.abs(values) <= 0.5 / (255 * np.array(STD))[:, None] + 1e-6)
    assert full_holes > N // 2
    assert min(tops) <= 1 and max(tops) >= 32 - CUTOUT - 1
    assert min(lefts) <= 1 and max(lefts) >= 32 - CUTOUT - 1


def test_unmasked_pixels_are_the_source_pixels_normalised(samples):
    outs, decoded = samples
    image = coded_image().astype(float)
    t, (dy, dx, flipped, fill) = outs[0], decoded[0][:4]
    pixels = denormalise(t)
    src = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))[dy:dy + 32, dx:dx + 32]
    if flipped:
        src = src[:, ::-1]
    keep = ~fill
    assert np.allclose(pixels[keep], src[keep], atol=1e-3)


def test_mean_fill_is_the_rounded_mean():
    assert mean_fill((0.4914, 0.4822, 0.4465)) == (125, 123, 114)


def test_test_transform_only_normalises():
    image = coded_image()
    out = transforms.test_transform(MEAN, STD)(image=image)["image"]
    assert out.shape == (3, 32, 32)
    expected = (image / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(out.numpy().transpose(1, 2, 0), expected, atol=1e-5)
