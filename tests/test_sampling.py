"""--subset and --val-split: class-stratified, seeded samples (checked against scikit-learn's allocation)."""
import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import StratifiedShuffleSplit

from data.datasets import load_dataset
from data.sampling import class_allocation, stratified_indices, stratified_split


def class_sorted_folder(root, per_class, size=32):
    """A folder dataset sorted by class as ImageFolder lists it: the first images are all of class c0."""
    for split, n in (("train", per_class), ("test", per_class)):
        for c, count in enumerate(n if isinstance(n, (list, tuple)) else [n] * 10):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (size, size), (c * 20, i % 256, 0)).save(folder / f"{i:04d}.png")
    return root


def test_subset_of_a_class_sorted_folder_keeps_every_class(tmp_path):
    root = class_sorted_folder(tmp_path, per_class=30)
    data = load_dataset("folder", root, subset=100, cache_dir=tmp_path / "cache")
    # The first 100 files are c0..c3 only; the stratified sample holds all ten classes, 10 each.
    assert np.bincount(data.train_y, minlength=10).tolist() == [10] * 10
    assert np.bincount(data.test_y, minlength=10).tolist() == [2] * 10  # N//5 = 20 test images


def test_unequal_shares_differ_by_at_most_one():
    labels = np.repeat(np.arange(10), 50)
    for n in (7, 23, 101, 499):
        counts = np.bincount(labels[stratified_indices(labels, n, seed=3)], minlength=10)
        assert counts.sum() == n and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("counts, n", [([500, 300, 150, 50], 100), ([90, 9, 2], 37), ([5000] * 10, 1234),
                                       ([7, 3], 5)])
def test_allocation_matches_scikit_learn(counts, n):
    labels = np.repeat(np.arange(len(counts)), counts)
    ours = class_allocation(labels, n)
    # sklearn's StratifiedShuffleSplit: the same largest-remainder allocation (its ties are broken at random).
    split = StratifiedShuffleSplit(n_splits=1, train_size=n, test_size=len(labels) - n, random_state=0)
    train, _ = next(split.split(np.zeros(len(labels)), labels))
    theirs = np.bincount(labels[train], minlength=len(counts))
    assert sum(ours.values()) == n
    assert all(abs(ours[c] - theirs[c]) <= 1 for c in range(len(counts))), (ours, theirs.tolist())
    exact = np.asarray(counts) * n / sum(counts)
    assert all(abs(ours[c] - exact[c]) < 1 for c in range(len(counts)))


def test_samples_are_seeded():
    labels = np.repeat(np.arange(10), 100)
    a, b, c = (stratified_indices(labels, 200, seed) for seed in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == 200 and np.all(np.diff(a) > 0)  # distinct, in dataset order


def test_validation_split_is_disjoint_stratified_and_complete():
    labels = np.repeat(np.arange(10), 100)
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert len(held) == 100 and np.bincount(labels[held]).tolist() == [10] * 10
    assert not set(kept) & set(held) and len(kept) + len(held) == len(labels)


def test_val_split_leaves_test_alone_and_stats_come_from_training_images(digits_dir):
    full = load_dataset("folder", digits_dir)
    data = load_dataset("folder", digits_dir, val_split=0.2)
    assert len(data.val_y) == round(len(full.train_y) * 0.2)
    assert len(data.train_y) + len(data.val_y) == len(full.train_y)
    assert np.array_equal(data.test_x, full.test_x)
    np.testing.assert_allclose(data.mean, data.train_x.reshape(-1, 3).mean(0) / 255, rtol=1e-9)
    # the same validation images whatever the run's --seed (only split_seed draws them)
    again = load_dataset("folder", digits_dir, val_split=0.2, seed=5)
    assert np.array_equal(again.val_x, data.val_x)
    other = load_dataset("folder", digits_dir, val_split=0.2, split_seed=1)
    assert not np.array_equal(other.val_x, data.val_x)


def test_fake_subset_and_split_work_too():
    data = load_dataset("fake", subset=200, val_split=0.25)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (150, 50, 40)
