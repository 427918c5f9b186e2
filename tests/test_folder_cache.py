"""Folder datasets: parallel decoding, the decoded-image cache and its invalidation, --resize."""
import os

import numpy as np
import pytest
from PIL import Image

import data.folder as folder
from data.datasets import load_dataset
from core.errors import UserError


def write_folder(root, n=6, size=32):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (i * 30, 100 if c == "cat" else 200, 7)).save(root / split / c / f"{i}.png")
    return root


def no_decoding(*args, **kwargs):
    raise AssertionError("decoded although the cache is valid")


def touch_with_new_pixels(path, colour):
    Image.new("RGB", (32, 32), colour).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on a coarse clock


@pytest.fixture
def dataset(tmp_path):
    return write_folder(tmp_path / "images"), tmp_path / "cache"


def test_second_load_comes_from_the_cache_and_equals_the_first(dataset, monkeypatch):
    root, cache = dataset
    first = load_dataset("folder", root, cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and all(f.endswith(".npy") for f in files)  # one per split
    assert not [p for p in root.rglob("*") if p.suffix == ".npy"]  # nothing written into the dataset
    monkeypatch.setattr(folder, "decode_in_parallel", no_decoding)
    second = load_dataset("folder", root, cache_dir=cache)
    assert np.array_equal(first.train_x, second.train_x) and np.array_equal(first.test_y, second.test_y)


@pytest.mark.parametrize("change", ["modify", "add", "remove"])
def test_a_changed_added_or_removed_file_invalidates_the_cache(dataset, change):
    root, cache = dataset
    before = load_dataset("folder", root, cache_dir=cache)
    target = root / "train" / "cat" / "0.png"
    if change == "modify":
        touch_with_new_pixels(target, (1, 2, 3))
    elif change == "add":
        touch_with_new_pixels(root / "train" / "cat" / "new.png", (1, 2, 3))
    else:
        target.unlink()
    after = load_dataset("folder", root, cache_dir=cache)
    expected = {"modify": 12, "add": 13, "remove": 11}[change]
    assert len(after.train_y) == expected
    if change != "remove":
        assert any((img == (1, 2, 3)).all() for img in after.train_x)
    assert not np.array_equal(before.mean, after.mean) or change == "remove"
    assert len(list(cache.glob("*.npy"))) == 2  # the old train cache was replaced, not kept beside


def test_no_cache_writes_nothing(dataset):
    root, cache = dataset
    load_dataset("folder", root, cache_dir=cache, use_cache=False)
    assert not cache.exists()


def test_a_damaged_cache_file_is_decoded_again(dataset):
    root, cache = dataset
    good = load_dataset("folder", root, cache_dir=cache)
    for f in cache.glob("*.npy"):
        f.write_bytes(b"garbage")
    again = load_dataset("folder", root, cache_dir=cache)
    assert np.array_equal(good.train_x, again.train_x)


def test_default_cache_folder_is_the_users_and_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.setenv("ERA_S10_CACHE", str(tmp_path / "elsewhere"))
    assert folder.default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("ERA_S10_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert folder.default_cache_dir() == tmp_path / "xdg" / "era_s10" / "folders"


def test_parallel_decoding_equals_decoding_in_one_process(dataset, monkeypatch):
    root, _ = dataset
    paths = [str(p) for p in sorted((root / "train").rglob("*.png"))]
    serial, problems = folder.decode_images(paths, resize=False)
    monkeypatch.setattr(folder, "PARALLEL_FROM", 1)
    monkeypatch.setattr(folder, "CHUNK", 5)  # several chunks, several processes
    assert not problems and np.array_equal(folder.decode_in_parallel(paths, False, processes=2), serial)


def test_other_sizes_are_refused_or_resized_on_request(tmp_path):
    root = write_folder(tmp_path / "big", n=2, size=40)
    with pytest.raises(UserError, match=r"is 40x40; images must be 32x32 .*--resize"):
        load_dataset("folder", root, cache_dir=tmp_path / "cache")
    data = load_dataset("folder", root, resize=True, cache_dir=tmp_path / "cache")
    assert data.train_x.shape == (4, 32, 32, 3)
    # a flat colour stays that colour through the resize
    assert np.array_equal(data.train_x[0, 16, 16], np.array(Image.open(root / "train" / "cat" / "0.png"))[20, 20])
