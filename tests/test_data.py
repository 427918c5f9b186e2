"""Datasets: statistics from the training split, folder loading and its errors, deterministic fake data."""
import numpy as np
import pytest
from PIL import Image

from data.datasets import load_dataset
from data.stats import channel_stats
from core.errors import UserError


def test_channel_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    as_float = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, as_float.mean(0), atol=1e-9)
    np.testing.assert_allclose(std, as_float.std(0), atol=1e-9)


def test_loaded_statistics_are_the_training_splits(digits_dir):
    data = load_dataset("folder", digits_dir)
    expected_mean = data.train_x.reshape(-1, 3).mean(0) / 255
    expected_std = data.train_x.reshape(-1, 3).std(0) / 255
    np.testing.assert_allclose(data.mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(data.std, expected_std, rtol=1e-6)
    # Not the test split's: the two differ on real data.
    assert not np.allclose(data.mean, data.test_x.reshape(-1, 3).mean(0) / 255, rtol=1e-6, atol=0)


def test_folder_dataset_reads_every_image_and_class(digits_dir):
    data = load_dataset("folder", digits_dir)
    assert data.classes == [str(d) for d in range(10)]
    assert len(data.train_x) + len(data.test_x) == 1797
    assert data.train_x.shape[1:] == (32, 32, 3) and data.train_x.dtype == np.uint8
    assert set(np.unique(data.train_y)) == set(range(10))


def test_subset_is_a_sample_of_the_full_dataset(digits_dir):
    full = load_dataset("folder", digits_dir)
    sub = load_dataset("folder", digits_dir, subset=100)
    assert len(sub.train_x) == 100 and len(sub.test_x) == 20
    # every kept image is one of the full split's, with its own label
    lookup = {img.tobytes(): label for img, label in zip(full.train_x, full.train_y)}
    assert all(lookup[img.tobytes()] == label for img, label in zip(sub.train_x, sub.train_y))


def test_fake_is_deterministic_by_seed():
    a, b, c = (load_dataset("fake", subset=50, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.train_y, b.train_y)
    assert not np.array_equal(a.train_x, c.train_x)
    assert a.train_x.shape == (50, 32, 32, 3) and a.test_x.shape == (10, 32, 32, 3)


def make_folder(root, size=(32, 32), classes=("a", "b"), test_classes=None):
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for name in names:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", size, (10, 20, 30)).save(root / split / name / "0.png")
    return root


def test_wrong_image_size_names_the_file(tmp_path):
    make_folder(tmp_path, size=(28, 28))
    with pytest.raises(UserError, match=r"0\.png is 28x28.*32x32"):
        load_dataset("folder", tmp_path)


def test_train_and_test_classes_must_agree(tmp_path):
    make_folder(tmp_path, test_classes=("a", "c"))
    with pytest.raises(UserError, match="differ"):
        load_dataset("folder", tmp_path)


def test_unreadable_image_names_the_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png is not a readable image"):
        load_dataset("folder", tmp_path)


def test_empty_class_is_refused(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        load_dataset("folder", tmp_path)
