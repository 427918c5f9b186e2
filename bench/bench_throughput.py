#!/usr/bin/env python
"""Training throughput, in one process on `fake` CIFAR-shaped data:

  (a) the project's trainer (build_run: Ignite Engine, One Cycle, metrics, history, outputs), with run.py's
      data path and speed settings for the device unless --augment / --amp / --channels-last say otherwise
  (b) a hand-written PyTorch loop with the same math, settings and data path: model, Adam, One Cycle LRs
  (c) the seed's pipeline style: albumentations in a torch DataLoader with workers, fp32, a `.item()` per step

Images/s = train images / median train-epoch seconds, the first epoch (warm-up, compilation) left out.
(a) and (b) alternate epoch by epoch (b's epoch runs inside a handler at the end of each of a's), so
drift in the machine's speed (a shared CPU, GPU clocks) falls on both alike.
Prints a/b, a/c, peak GPU memory ((a)+(b) together, (c) alone), and (a)'s full recipe (24 epochs + a
test pass each): projected to 50,000/10,000 images from the median epochs, and measured (the whole of
(a)'s run; it is the recipe itself only with --epochs 24 at full size).
Full size on CUDA: python bench/bench_throughput.py
Small on CPU:   python bench/bench_throughput.py --device cpu --width 16 --train-size 1024 --epochs 3
Today's CPU path before the fast path: add --augment albumentations --no-amp --no-channels-last
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from ignite.utils import manual_seed
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.datasets import load_dataset  # noqa: E402
from data.gpu_loader import gpu_loaders  # noqa: E402
from data.loaders import cpu_loaders  # noqa: E402
from training.builder import build_run  # noqa: E402
from training.components import resolve_device  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.schedule import one_cycle_milestones  # noqa: E402
from engine.trainer import StepSpeed, to_device  # noqa: E402
from models import CustomResNet  # noqa: E402

RECIPE_EPOCHS, CIFAR_TRAIN, CIFAR_TEST = 24, 50_000, 10_000
LR_MIN, LR_MAX = 4e-4, 1e-2  # fixed so no range test runs; speed does not depend on them


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """The most GPU memory torch's allocator held in tensors since the last reset (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def timed_epochs(seconds: list[float]) -> list[float]:
    """The epochs after the first (warm-up); the first too if it is the only one."""
    return seconds[1:] or seconds


def run_project_trainer(cfg: Config, device: torch.device, between_epochs=None) -> dict:
    """(a): build_run as run.py does, plus timing handlers that sync only at epoch boundaries.

    between_epochs: called after each of a's epochs (its outputs written); its time is not a's.
    """
    train_s, test_s, marks, others = [], [], {}, []
    run = build_run(cfg)

    def start(_):
        sync(device)
        marks["t"] = time.perf_counter()

    def stop(store):
        sync(device)
        store.append(time.perf_counter() - marks["t"])

    run.trainer.add_event_handler(Events.EPOCH_STARTED, start)
    # The epoch's last iteration: before the epoch-end handlers (metrics read, evaluation, outputs).
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED(every=len(run.train_loader)), stop, train_s)
    run.evaluator.add_event_handler(Events.STARTED, start)
    run.evaluator.add_event_handler(Events.COMPLETED, stop, test_s)
    if between_epochs is not None:
        def other(_):
            t = time.perf_counter()
            between_epochs()
            others.append(time.perf_counter() - t)
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, other)
    sync(device)
    t0 = time.perf_counter()
    summary = run.fit()
    sync(device)
    return {"train_s": train_s, "test_s": test_s, "wall_s": time.perf_counter() - t0 - sum(others),
            "iters_per_epoch": len(run.train_loader), "last_test_accuracy": summary["history"][-1]["test_accuracy"]}


def new_model_and_optimizer(cfg: Config, data, device: torch.device, speed: StepSpeed, fused: bool):
    manual_seed(cfg.seed)
    model = CustomResNet(num_classes=data.num_classes, width=cfg.width).to(
        device, memory_format=torch.channels_last if speed.channels_last else torch.preserve_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR_MIN, weight_decay=cfg.weight_decay,
                                 fused=True if fused else None)
    return model, optimizer


def one_cycle_lrs(iters_per_epoch: int, cfg: Config) -> np.ndarray:
    milestones = one_cycle_milestones(LR_MIN, LR_MAX, iters_per_epoch, cfg.epochs, cfg.resolved_peak_epoch)
    steps, values = zip(*milestones)
    return np.interp(np.arange(iters_per_epoch * cfg.epochs), steps, values)


def same_data_path(cfg: Config, data, device: torch.device, speed: StepSpeed):
    """(train, test) loaders of the data path (a) uses: batched tensor augmentation, or albumentations workers."""
    if cfg.augment == "batched":
        return gpu_loaders(data, cfg.batch_size, cfg.seed, device, channels_last=speed.channels_last)
    return cpu_loaders(data, cfg.batch_size, cfg.workers, cfg.seed)


def raw_loop_epochs(cfg: Config, data, device: torch.device, speed: StepSpeed, result: dict):
    """(b): the trainer's math by hand, on (a)'s data path; metrics on the device, read and NaN-checked
    once per epoch. A generator that runs one epoch per next(); times go into `result`.
    """
    model, optimizer = new_model_and_optimizer(cfg, data, device, speed, fused=device.type == "cuda")
    train, test = same_data_path(cfg, data, device, speed)
    lrs, loss_fn, forward = one_cycle_lrs(len(train), cfg), nn.CrossEntropyLoss(), speed.forward_of(model)
    train_s, test_s, it = result.setdefault("train_s", []), result.setdefault("test_s", []), 0
    for epoch in range(cfg.epochs):
        train.set_epoch(epoch)
        sync(device)
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        losses = []
        for x, y in train:
            x, y = to_device((x, y), device, speed.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[it])
            it += 1
            optimizer.zero_grad(set_to_none=True)
            with speed.autocast(device):
                logits = forward(x)
                loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        sync(device)
        train_s.append(time.perf_counter() - t0)
        if not bool(torch.isfinite(torch.stack(losses)).all()):
            raise RuntimeError(f"(b) non-finite loss in epoch {epoch + 1}")
        t0 = time.perf_counter()
        model.eval()
        test_correct = torch.zeros((), dtype=torch.int64, device=device)
        with torch.no_grad(), speed.autocast(device):
            for x, y in test:
                x, y = to_device((x, y), device, speed.channels_last)
                test_correct += (forward(x).argmax(1) == y).sum()
        result["last_test_accuracy"] = int(test_correct) / len(data.test_y)
        test_s.append(time.perf_counter() - t0)
        _ = float(loss_sum), int(correct)  # read once per epoch, as the trainer does
        yield


def run_seed_style(cfg: Config, data, device: torch.device, epochs: int) -> dict:
    """(c): albumentations per image in DataLoader workers, fp32 NCHW, plain Adam, `.item()` every step."""
    speed = StepSpeed()
    model, optimizer = new_model_and_optimizer(cfg, data, device, speed, fused=False)
    train, _ = cpu_loaders(data, cfg.batch_size, cfg.workers, cfg.seed)
    lrs, loss_fn = one_cycle_lrs(len(train), cfg), nn.CrossEntropyLoss()
    train_s, it = [], 0
    for epoch in range(epochs):
        train.set_epoch(epoch)
        sync(device)
        t0 = time.perf_counter()
        model.train()
        running_loss, correct = 0.0, 0
        for x, y in train:
            x, y = x.to(device), y.to(device)
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[it])
            it += 1
            optimizer.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()  # the seed's progress-bar style: a sync every step
            correct += (logits.argmax(1) == y).sum().item()
        sync(device)
        train_s.append(time.perf_counter() - t0)
    return {"train_s": train_s}


def images_per_s(result: dict, n: int) -> float:
    return n / statistics.median(timed_epochs(result["train_s"]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--width", type=int, default=64, help="64 is the assignment's network")
    p.add_argument("--train-size", type=int, default=CIFAR_TRAIN, help="fake training images (test: 1/5 of it)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=RECIPE_EPOCHS, help="epochs of (a) and (b); the first is warm-up")
    p.add_argument("--seed-epochs", type=int, default=3, help="epochs of (c); the first is warm-up")
    p.add_argument("--workers", type=int, default=Config.workers,
                   help="DataLoader workers of (c), and of (a) and (b) on the albumentations data path")
    p.add_argument("--augment", choices=["batched", "albumentations"], default=Config.augment,
                   help="data path of (a) and (b): as run.py's --augment")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: as run.py's")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: as run.py's")
    p.add_argument("--compile", action="store_true", help="torch.compile in (a) and (b)")
    p.add_argument("--skip-seed-style", action="store_true", help="leave out (c)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as out:
        cfg = Config(dataset="fake", subset=None if args.train_size >= CIFAR_TRAIN else args.train_size,
                     width=args.width, batch_size=args.batch_size, epochs=args.epochs, lr_min=LR_MIN,
                     lr_max=LR_MAX, workers=args.workers, device=str(device), augment=args.augment, amp=args.amp,
                     channels_last=args.channels_last, compile=args.compile, progress=False,
                     output_dir=out).validate()
        speed = StepSpeed.for_device(device, cfg.amp, cfg.channels_last, cfg.compile)
        data = load_dataset("fake", subset=cfg.subset, seed=cfg.seed)
        n_train, n_test = len(data.train_y), len(data.test_y)
        print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
              f"torch {torch.__version__}, threads {torch.get_num_threads()}, width {cfg.width}, "
              f"train {n_train}, test {n_test}, batch {cfg.batch_size}, {speed.describe()}, "
              f"data path {cfg.augment}", flush=True)
        raw = {}
        # (a) and (b) run interleaved in one process, so their peak is one figure: both models,
        # optimizers and device-resident datasets are held at once.
        peak = {}
        reset_peak_memory(device)
        raw_epochs = raw_loop_epochs(cfg, data, device, speed, raw)
        results = {"a": run_project_trainer(cfg, device, between_epochs=lambda: next(raw_epochs)), "b": raw}
        peak["a_and_b"] = peak_memory_mib(device)
        for k in ("a", "b"):
            print(f"({k}) done: train epochs {[round(s, 3) for s in results[k]['train_s']]}", flush=True)
        if not args.skip_seed_style:
            raw_epochs.close()  # (b)'s model, optimizer and data go; gc frees (a)'s (engines hold cycles)
            gc.collect()
            reset_peak_memory(device)
            results["c"] = run_seed_style(cfg, data, device, args.seed_epochs)
            peak["c"] = peak_memory_mib(device)
            print(f"(c) done: train epochs {[round(s, 3) for s in results['c']['train_s']]}", flush=True)

    a, b = results["a"], results["b"]
    rate = {k: images_per_s(r, n_train) for k, r in results.items()}
    median_train = statistics.median(timed_epochs(a["train_s"]))
    median_test = statistics.median(timed_epochs(a["test_s"]))
    projected = RECIPE_EPOCHS * (median_train * CIFAR_TRAIN / n_train + median_test * CIFAR_TEST / n_test)
    warmup = a["train_s"][0] - median_train if len(a["train_s"]) > 1 else float("nan")
    is_recipe = args.epochs == RECIPE_EPOCHS and n_train == CIFAR_TRAIN and args.width == 64
    report = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "width": cfg.width, "train_size": n_train, "test_size": n_test,
        "batch_size": cfg.batch_size, "epochs": args.epochs, "amp": speed.amp, "channels_last": speed.channels_last,
        "augment": cfg.augment, "workers": cfg.workers, "threads": torch.get_num_threads(),
        "compile": speed.compile, "images_per_s": rate,
        "ratio_a_b": rate["a"] / rate["b"],
        # Each of a's epochs against the b epoch run right after it: steadier on a machine whose speed drifts.
        "ratio_a_b_paired_median": statistics.median(
            tb / ta for ta, tb in zip(timed_epochs(a["train_s"]), timed_epochs(b["train_s"]))), "ratio_a_c": rate["a"] / rate["c"] if "c" in rate else None,
        "a_median_train_epoch_s": median_train, "a_median_test_pass_s": median_test,
        "a_first_epoch_extra_s": warmup, "recipe_projected_s": projected,
        "a_measured_wall_s": a["wall_s"], "a_measured_is_full_recipe": is_recipe,
        "peak_gpu_memory_mib": peak, "epoch_seconds": results,
    }
    for k, label in (("a", "project trainer (Ignite)"), ("b", "raw PyTorch loop, same math and data"),
                     ("c", "seed style: albumentations + DataLoader workers, fp32")):
        if k in rate:
            print(f"({k}) {label:55s} {rate[k]:12,.0f} images/s")
    print(f"a/b = {report['ratio_a_b']:.3f} (paired per epoch: {report['ratio_a_b_paired_median']:.3f})" + (f"   a/c = {report['ratio_a_c']:.2f}" if "c" in rate else ""))
    print(f"(a) full recipe projected ({RECIPE_EPOCHS} epochs x {CIFAR_TRAIN} train + {CIFAR_TEST} test, "
          f"from median epochs): {projected:.1f} s, plus first-epoch warm-up {warmup:.2f} s")
    what = "the full recipe" if is_recipe else f"{args.epochs} epochs at width {cfg.width}, {n_train}/{n_test} images"
    print(f"(a) measured: {a['wall_s']:.1f} s for {what} (warm-up, tests and outputs included)")
    if device.type == "cuda":
        print("peak GPU memory allocated: " + ", ".join(f"{k.replace('_and_', '+')} {v:,.0f} MiB"
                                                       for k, v in peak.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
