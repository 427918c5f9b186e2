"""The GPU loader's protocol: seeded epochs, rank shards, the last batch, the test loader, and a run.

On TEST_DEVICE (ERA_S10_TEST_DEVICE, tests/conftest.py): CPU by default, the GPU with cuda.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.gpu_loader import GpuTestLoader, GpuTrainLoader, gpu_loaders
from engine.trainer import StepSpeed
from tests.conftest import TEST_DEVICE

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def train_loader(n=100, batch_size=32, seed=0, **kw) -> GpuTrainLoader:
    # Labels are the sample ids, so a batch says which images it holds.
    return GpuTrainLoader(images(n), np.arange(n), MEAN, STD, batch_size, seed, torch.device(TEST_DEVICE), **kw)


def epoch(loader, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(e)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_an_epoch_is_a_function_of_seed_and_epoch():
    x0, y0 = epoch(train_loader(), 0)
    x0_again, y0_again = epoch(train_loader(), 0)  # a fresh loader, as after a resume
    assert torch.equal(x0, x0_again) and torch.equal(y0, y0_again)
    x1, y1 = epoch(train_loader(), 1)
    assert not torch.equal(y0, y1), "epochs 0 and 1 have the same order"
    order = torch.argsort(y0), torch.argsort(y1)
    assert not torch.equal(x0[order[0]], x1[order[1]]), "epochs 0 and 1 augment alike"
    x_other_seed, _ = epoch(train_loader(seed=1), 0)
    assert not torch.equal(x0, x_other_seed)


def test_set_epoch_after_iter_still_decides_the_epoch():
    loader = train_loader()
    loader.set_epoch(0)
    it = iter(loader)
    loader.set_epoch(3)
    assert torch.equal(torch.cat([y for _, y in it]), epoch(train_loader(), 3)[1])


def test_every_image_once_per_epoch_and_the_last_partial_batch_is_kept():
    loader = train_loader(n=100, batch_size=32)
    sizes = [len(y) for _, y in loader]
    assert sizes == [32, 32, 32, 4] and len(loader) == 4
    assert sorted(epoch(loader, 0)[1].tolist()) == list(range(100))
    assert [len(y) for _, y in train_loader(n=100, batch_size=32, drop_last=True)] == [32, 32, 32]


@pytest.mark.parametrize("n", [99, 100])
def test_rank_shards_are_disjoint_equal_and_augmented_as_in_one_process(n):
    world = 3
    whole_x, whole_y = epoch(train_loader(n=n, batch_size=8), 2)
    by_id = {int(i): x for i, x in zip(whole_y, whole_x)}
    seen = []
    for rank in range(world):
        loader = train_loader(n=n, batch_size=8, rank=rank, world_size=world)
        x, y = epoch(loader, 2)
        assert len(y) == n // world and len(loader) == len(train_loader(n=n, batch_size=8, rank=0, world_size=world))
        for i, xi in zip(y.tolist(), x):
            assert torch.equal(xi, by_id[i]), "a sample is augmented differently on a rank"
        seen += y.tolist()
    assert len(seen) == len(set(seen)), "shards overlap"
    assert len(seen) == n - n % world  # covers all but the n % world samples cut to keep ranks in step
    with pytest.raises(ValueError):
        train_loader(rank=3, world_size=3)


def test_ranks_batches_of_a_share_of_the_global_batch_together_make_the_one_process_batch():
    world, global_batch = 2, 32
    whole = [y for _, y in train_loader(n=100, batch_size=global_batch)]
    ranks = [list(train_loader(n=100, batch_size=global_batch // world, rank=r, world_size=world))
             for r in range(world)]
    assert [len(r) for r in ranks] == [len(whole)] * world  # the one-process number of steps
    for i, one_process_batch in enumerate(whole):
        together = torch.cat([ranks[r][i][1] for r in range(world)])
        assert sorted(together.tolist()) == sorted(one_process_batch.tolist())


def test_several_ranks_on_the_gpu_data_path_split_the_global_batch(monkeypatch):
    import ignite.distributed as idist

    from data.datasets import load_dataset
    from engine.config import Config
    from training.components import build_loaders

    data = load_dataset("fake", subset=100)
    config = Config(dataset="fake", subset=100, batch_size=32, augment="gpu", device=TEST_DEVICE)
    device, speed = torch.device(TEST_DEVICE), StepSpeed()
    one_process, _, _ = build_loaders(config, data, device, speed)
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    train, test, _ = build_loaders(config, data, device, speed)
    assert len(train) == len(one_process) == 4  # 100 images, global batch 32
    assert [len(y) for _, y in train] == [16, 16, 16, 2] and test.batch_size == 16


def test_gpu_loaders_split_the_global_batch_over_ranks():
    """--batch-size is the global batch on this path too: the ranks' batch i together are one process's batch i."""
    from data.datasets import load_dataset

    data = load_dataset("fake", subset=100)
    data.train_y = np.arange(100)  # labels = sample ids, so a batch says which images it holds
    one, _ = gpu_loaders(data, 32, 0, torch.device("cpu"))
    ranks = [gpu_loaders(data, 32, 0, torch.device("cpu"), rank, 2)[0] for rank in range(2)]
    assert [len(r) for r in ranks] == [len(one)] * 2  # as many steps per epoch as one process
    for whole, *shares in zip(one, *ranks):
        assert [len(y) for _, y in shares] == [len(whole[1]) // 2] * 2
        assert sorted(torch.cat([y for _, y in shares]).tolist()) == sorted(whole[1].tolist())
    with pytest.raises(ValueError, match="does not split"):
        gpu_loaders(data, 33, 0, torch.device("cpu"), 0, 2)


def test_test_loader_yields_every_image_in_order_normalised():
    x_u8, y = images(70, seed=5), np.arange(70) % 10
    loader = GpuTestLoader(x_u8, y, MEAN, STD, 32, torch.device(TEST_DEVICE))
    xs, ys = zip(*loader)
    assert [len(b) for b in ys] == [32, 32, 6] and len(loader) == 3
    expected = (x_u8.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(torch.cat(xs).permute(0, 2, 3, 1).cpu().numpy(), expected, atol=1e-5)
    assert torch.cat(ys).tolist() == y.tolist()
    shards = [torch.cat([b for _, b in GpuTestLoader(x_u8, np.arange(70), MEAN, STD, 32, TEST_DEVICE, r, 3)])
              for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(70))


def test_channels_last_batches():
    from data.datasets import load_dataset

    train, test = gpu_loaders(load_dataset("fake", subset=40), 16, 0, torch.device(TEST_DEVICE), channels_last=True)
    for loader in (train, test):
        x, y = next(iter(loader))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_run_with_the_gpu_data_path(tmp_path):
    from run import main

    out = tmp_path / "run"
    rc = main(["--dataset", "fake", "--subset", "64", "--width", "8", "--batch-size", "32", "--epochs", "2",
               "--lr-min", "1e-3", "--lr-max", "1e-2", "--workers", "0", "--no-progress", "--device", TEST_DEVICE,
               "--augment", "batched", "--nan-check-every", "2", "--output-dir", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["augment"] == "batched" and len(summary["history"]) == 2
    assert all(np.isfinite(row["train_loss"]) and 0 <= row["test_accuracy"] <= 1 for row in summary["history"])


@pytest.mark.cuda
def test_bf16_channels_last_step_on_cuda():
    from torch import nn

    from data.datasets import load_dataset
    from engine.trainer import create_train_step
    from models import CustomResNet

    device = torch.device("cuda")
    speed = StepSpeed.for_device(device)
    model = CustomResNet(width=8).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    step = create_train_step(model, optimizer, nn.CrossEntropyLoss(), device, speed)
    train, _ = gpu_loaders(load_dataset("fake", subset=64), 32, 0, device, channels_last=True)
    out = step(None, next(iter(train)))
    assert out["y_pred"].dtype == torch.float32 and torch.isfinite(out["loss"])
