"""What a run is made of before any Engine exists: device, data, model, optimizer, loaders, and the
LR range test that reads LRMIN and LRMAX from them. `training.builder.build_run` assembles the rest.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.utils import manual_seed
from torch import nn

from core.device import GpuStatus, gpu_status
from core.distributed import broadcast_floats, check_batch_split, is_main_process
from core.errors import UserError
from data.datasets import ImageData, load_dataset
from data.gpu_loader import GpuTestLoader, gpu_loaders
from data.loaders import cpu_eval_loader, cpu_loaders
from engine.config import Config
from engine.lr_finder import FALLBACK_DIV, RangeTest, run_range_test
from engine.trainer import StepSpeed, cpu_has_native_bf16
from run_folder.files import write_atomic
from run_folder.plots import save_lr_finder_plot
from models import CustomResNet

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when torch can use it, else the CPU (saying once why, when a GPU is there but unusable)."""
    if name == "cpu":
        return torch.device("cpu")
    status = _gpu_status()
    if name == "cuda" and not status.usable:
        raise UserError(f"--device cuda: torch sees no CUDA GPU here ({status.summary}): use --device cpu (or auto)"
                        + (f"; {status.warning}" if status.warning else ""))
    return torch.device("cuda" if status.usable else "cpu")


@functools.cache
def _gpu_status() -> GpuStatus:
    """core.device.gpu_status, once per process; its warning (a GPU torch cannot use) is logged that once."""
    status = gpu_status()
    if status.warning:
        log.warning(status.warning)
    return status


def build_loaders(config: Config, data: ImageData, device: torch.device, speed: StepSpeed):
    """(train, test, validation or None) loaders of the data path config.augment chooses."""
    rank, world_size = idist.get_rank(), idist.get_world_size()
    if config.augment == "batched":
        # [dist] --batch-size is the global batch: each rank takes its share, as idist.auto_dataloader
        # gives the CPU path, so an epoch has the one-process number of steps (the One Cycle is built
        # from it) and rank r's batch i holds the rank-r positions of the one-process batch i.
        train, test = gpu_loaders(data, config.batch_size, config.seed, device, rank, world_size,
                                  channels_last=speed.channels_last)
        # [dist] config.batch_size is the global batch: each rank loads its share (gpu_loaders does the same)
        val = GpuTestLoader(data.val_x, data.val_y, data.mean, data.std, config.batch_size // world_size, device,
                            rank, world_size, speed.channels_last) if data.has_val else None
        return train, test, val
    train, test = cpu_loaders(data, config.batch_size, config.workers, config.seed)
    val = cpu_eval_loader(data.val_x, data.val_y, data.mean, data.std, config.batch_size,
                          config.workers) if data.has_val else None
    return train, test, val


def process_device(config: Config) -> torch.device:
    """[dist] This process's device: its own GPU under nccl (idist.device()), the CPU under gloo."""
    if idist.get_world_size() == 1:
        return resolve_device(config.device)
    return idist.device() if idist.backend() == "nccl" else torch.device("cpu")


def share_output_dir(config: Config) -> Config:
    """[dist] The config with rank 0's output directory (under torchrun each process timestamped its own)."""
    if idist.get_world_size() == 1:
        return config
    mine = config.output_dir if is_main_process() else None
    return replace(config, output_dir=idist.broadcast(mine, src=0, safe_mode=True))


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """[dist] DDP through idist.auto_model with several processes; one process keeps the plain model.

    One process never becomes DataParallel (auto_model's choice when it sees several GPUs): several
    GPUs are run as several processes. A CPU model is wrapped directly where a GPU is visible, since
    auto_model would move it to the GPU.
    """
    if idist.get_world_size() == 1:
        return model
    if device.type == "cpu" and torch.cuda.is_available():
        return nn.parallel.DistributedDataParallel(model)
    return idist.auto_model(model)


@dataclass(slots=True)
class Components:
    """What a run is made of before any Engine exists (also all the range test needs)."""
    config: Config
    device: torch.device
    data: ImageData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module  # the training objective (label-smoothed with --label-smoothing); metrics use plain CE
    train_loader: Any
    test_loader: Any
    speed: StepSpeed = StepSpeed()
    val_loader: Any = None  # the --val-split hold-out, or None


def build_components(config: Config) -> Components:
    """Data, model (DDP-wrapped when distributed), optimizer, loss and this process's loaders."""
    config = share_output_dir(config.resolved())
    device = process_device(config)
    check_batch_split(config.batch_size, idist.get_world_size())
    # [dist] The same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    manual_seed(config.seed)
    # [dist] One process per node downloads/reads first; the others then find the files in place.
    with idist.one_rank_first(local=True):
        data = load_dataset(config.dataset, config.data_dir, config.subset, config.seed,
                            val_split=config.val_split, split_seed=config.data_seed, resize=config.resize,
                            cache_dir=config.cache_dir, use_cache=config.cache)
    speed = StepSpeed.for_device(device, config.amp, config.channels_last, config.compile)
    if speed.amp and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("--amp on a CPU without native bf16 (AVX-512 BF16 or AMX): bf16 is emulated there and "
                    "runs about 10x slower than fp32; leave --amp out for fp32")
    model = CustomResNet(num_classes=data.num_classes, width=config.width).to(
        device, memory_format=torch.channels_last if speed.channels_last else torch.preserve_format)
    model = wrap_model(model, device)
    # The scheduler sets the LR every iteration; this initial value is only a placeholder.
    # fused: one kernel for the whole update instead of several per parameter (CUDA only).
    optimizer = idist.auto_optim(
        torch.optim.Adam(model.parameters(), lr=config.lr_find_start, weight_decay=config.weight_decay,
                         fused=True if device.type == "cuda" else None))
    train_loader, test_loader, val_loader = build_loaders(config, data, device, speed)
    return Components(config, device, data, model, optimizer,
                      nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), train_loader, test_loader,
                      speed, val_loader)


def find_lr(c: Components, output_dir: Path) -> RangeTest:
    """Run the range test, write plots/lr_finder.png and lr_finder.json; the model and optimizer are restored.

    [dist] Every rank calls it: the DDP model steps on the global batch (each rank its share) and
    FastaiLRFinder all-reduces the loss, so all ranks see one curve and stop together. Rank 0 writes.
    """
    cfg = c.config
    result = run_range_test(c.model, c.optimizer, c.loss_fn, c.train_loader, c.device,
                            cfg.lr_find_start, cfg.lr_find_end, cfg.lr_find_iters, c.speed, rule=cfg.lr_rule,
                            repeats=cfg.lr_find_repeats, seed=cfg.seed, num_classes=c.data.num_classes,
                            warmup=cfg.lr_find_warmup, warmup_lr=cfg.lr_find_warmup_lr)
    if is_main_process():
        save_lr_finder_plot(output_dir / "plots" / "lr_finder.png", result.to_dict())
        write_atomic(output_dir / "lr_finder.json", json.dumps(result.to_dict(), indent=2))
    return result


def resolve_lr_bounds(cfg: Config, found: RangeTest | None) -> tuple[float, float]:
    """Flags win over the range test; a flag given alone is paired with the range test's other bound."""
    if found is None:
        return cfg.lr_min, cfg.lr_max
    lr_max = cfg.lr_max if cfg.lr_max is not None else found.lr_max
    lr_min = cfg.lr_min if cfg.lr_min is not None else found.lr_min
    if cfg.lr_min is None and lr_min >= lr_max:  # --lr-max alone, below the found LRMIN
        lr_min = lr_max / FALLBACK_DIV
    if lr_min >= lr_max:
        raise UserError(f"--lr-min {lr_min:g} is not below the range test's LRMAX {lr_max:g}: "
                        f"pass --lr-max too, above --lr-min")
    return lr_min, lr_max


def find_lr_bounds(c: Components, output_dir: Path) -> tuple[RangeTest | None, float, float]:
    """(range test or None, LRMIN, LRMAX); the range test runs only when a bound is missing.

    [dist] All ranks run it (see find_lr); rank 0's bounds are then broadcast, so every rank's
    schedule is the same even if a last float bit differed between processes.
    """
    cfg = c.config
    if cfg.lr_min is not None and cfg.lr_max is not None:
        return None, cfg.lr_min, cfg.lr_max
    range_test = find_lr(c, output_dir)
    bounds = resolve_lr_bounds(cfg, range_test)
    lr_min, lr_max = broadcast_floats(list(bounds) if is_main_process() else None, 2)
    return range_test, lr_min, lr_max
