"""The CUDA fast path as a whole run builds it: no host-device sync per iteration, no recompilation per epoch.

Marked `cuda`: skipped, with the reason, where torch sees no GPU (tests/conftest.py). bench/gpu_report.py
runs them on a GPU machine.
"""
from __future__ import annotations

import functools

import pytest
import torch
from ignite.engine import Events

from engine.config import Config
from training.builder import build_run

BATCH, IMAGES = 64, 224  # 4 iterations per epoch, the last one partial (32 images); 44 test images


def small_run(tmp_path, device: str, **overrides):
    """A run as run.py builds it (GPU data path, bf16 and channels_last on CUDA), without a range test."""
    settings = dict(dataset="fake", subset=IMAGES, batch_size=BATCH, width=8, epochs=2, lr_min=1e-3, lr_max=1e-2,
                    workers=0, device=device, augment="gpu", progress=False, output_dir=str(tmp_path / "run"))
    config = Config(**{**settings, **overrides})
    return build_run(config.validate())


@pytest.mark.cuda
def test_training_and_evaluation_batches_never_wait_for_the_gpu(tmp_path):
    run = small_run(tmp_path, "cuda")
    assert run.train_loader.__class__.__name__ == "GpuTrainLoader"
    per_epoch = len(run.train_loader)
    checked = {"train": 0, "eval": 0}

    def on(engine, name):
        if run.trainer.state.epoch >= 2:  # the first epoch may allocate and initialise lazily
            torch.cuda.set_sync_debug_mode("error")
            checked[name] += 1

    def off(_):
        torch.cuda.set_sync_debug_mode(0)

    # `on` runs at each ITERATION_STARTED of epoch 2, after that iteration's batch was fetched: the
    # epoch's first fetch (it makes the epoch's draws, once) and the scheduler's first call come before
    # it; from then on the step, the metric updates, every ITERATION_COMPLETED handler and the next
    # fetches and scheduler calls are checked. `off` is attached last, at the epoch's last iteration,
    # so the epoch-end handlers (they read the metrics once per epoch, on purpose) run unchecked.
    run.trainer.add_event_handler(Events.ITERATION_STARTED, on, "train")
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED(every=per_epoch), off)
    run.evaluator.add_event_handler(Events.ITERATION_STARTED, on, "eval")
    run.evaluator.add_event_handler(Events.ITERATION_COMPLETED(every=len(run.test_loader)), off)
    try:
        summary = run.fit()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert summary["completed"] and checked["train"] == per_epoch and checked["eval"] == len(run.test_loader)


def count_graphs_per_epoch(tmp_path, device: str, monkeypatch) -> list[int]:
    """Dynamo's graph count at the end of each of 3 epochs of a --compile run with a validation split.

    Recompilation is decided by Dynamo's guards, the same whatever backend then compiles the graph:
    aot_eager (forward and backward traced, not code-generated) keeps the test short.
    """
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    run = small_run(tmp_path, device, compile=True, epochs=3, val_split=0.1)
    graphs = []
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: graphs.append(counters["stats"]["unique_graphs"]))
    run.fit()
    return graphs


@pytest.mark.cuda
def test_compiled_run_compiles_in_the_first_epoch_only(tmp_path, monkeypatch):
    graphs = count_graphs_per_epoch(tmp_path, "cuda", monkeypatch)
    # train: full and last partial batch; test and validation passes: their shapes, in eval mode.
    assert graphs[0] >= 3 and graphs == [graphs[0]] * 3, graphs
