"""Wire a run together: data, model, optimizer, range test, trainer, schedule, evaluator, outputs.

`build_run(config)` is the one function `run.py` uses; a custom run calls it too, attaches its
own handlers to `run.trainer` / `run.evaluator`, and calls `run.fit()`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.utils import manual_seed
from torch import nn

from data.datasets import ImageData, load_dataset
from data.gpu_loader import GpuTestLoader, gpu_loaders
from data.loaders import cpu_eval_loader, cpu_loaders
from engine.config import Config
from core.distributed import (broadcast_buffers_from_rank0, broadcast_floats, check_batch_split,
                                is_main_process, unwrap)
from core.errors import UserError
from engine.lr_finder import FALLBACK_DIV, RangeTest, run_range_test
from engine.schedule import attach_one_cycle, one_cycle_milestones
from engine.trainer import StepSpeed, attach_train_metrics, create_evaluator, create_trainer
from handlers.resume import find_resume_point
from handlers.console import attach_console
from handlers.defaults import attach_default_handlers
from handlers.history import LRRecorder, MetricHistory
from handlers.interrupt import stop_on_sigint
from handlers.nonfinite import NonFiniteLossCheck
from handlers.outputs import build_summary, write_atomic, write_run_files
from handlers.run_dir import check_output_dir, prepare_output_dir
from handlers.plots import save_curves_plot, save_lr_finder_plot, save_one_cycle_plot
from models import CustomResNet, count_parameters

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here: use --device cpu (or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_augment(name: str, device: torch.device) -> str:
    """auto -> gpu on CUDA (a per-image CPU pipeline cannot feed the GPU), cpu elsewhere."""
    if name == "auto":
        return "gpu" if device.type == "cuda" else "cpu"
    return name


def build_loaders(config: Config, data: ImageData, device: torch.device, speed: StepSpeed):
    """(train, test, validation or None) loaders of the data path config.augment chooses."""
    rank, world_size = idist.get_rank(), idist.get_world_size()
    if resolve_augment(config.augment, device) == "gpu":
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


def share_output_dir(config: Config) -> None:
    """[dist] Every rank takes rank 0's output directory (a default one is a timestamp, per process)."""
    if idist.get_world_size() > 1:
        mine = str(config.resolved_output_dir()) if is_main_process() else None
        config.output_dir = idist.broadcast(mine, src=0, safe_mode=True)


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


@dataclass
class Components:
    """What a run is made of before any Engine exists (also all the range test needs)."""
    config: Config
    device: torch.device
    data: ImageData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    train_loader: Any
    test_loader: Any
    speed: StepSpeed = StepSpeed()
    val_loader: Any = None  # the --val-split hold-out, or None


def build_components(config: Config) -> Components:
    """Data, model (DDP-wrapped when distributed), optimizer, loss and this process's loaders."""
    config.validate()
    device = process_device(config)
    check_batch_split(config.batch_size, idist.get_world_size())
    share_output_dir(config)
    # [dist] The same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    manual_seed(config.seed)
    # [dist] One process per node downloads/reads first; the others then find the files in place.
    with idist.one_rank_first(local=True):
        data = load_dataset(config.dataset, config.data_dir, config.subset, config.seed,
                            val_split=config.val_split, split_seed=config.data_seed, resize=config.resize,
                            cache_dir=config.cache_dir, use_cache=config.cache)
    speed = StepSpeed.for_device(device, config.amp, config.compile)
    model = CustomResNet(num_classes=data.num_classes, width=config.width).to(
        device, memory_format=torch.channels_last if speed.channels_last else torch.preserve_format)
    model = wrap_model(model, device)
    # The scheduler sets the LR every iteration; this initial value is only a placeholder.
    # fused: one kernel for the whole update instead of several per parameter (CUDA only).
    optimizer = idist.auto_optim(
        torch.optim.Adam(model.parameters(), lr=config.lr_find_start, weight_decay=config.weight_decay,
                         fused=True if device.type == "cuda" else None))
    train_loader, test_loader, val_loader = build_loaders(config, data, device, speed)
    return Components(config, device, data, model, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader,
                      speed, val_loader)


def find_lr(c: Components, output_dir: Path) -> RangeTest:
    """Run the range test, write plots/lr_finder.png and lr_finder.json; the model and optimizer are restored.

    [dist] Every rank calls it: the DDP model steps on the global batch (each rank its share) and
    FastaiLRFinder all-reduces the loss, so all ranks see one curve and stop together. Rank 0 writes.
    """
    cfg = c.config
    result = run_range_test(c.model, c.optimizer, c.loss_fn, c.train_loader, c.device,
                            cfg.lr_find_start, cfg.lr_find_end, cfg.lr_find_iters, c.speed, rule=cfg.lr_rule)
    if is_main_process():
        save_lr_finder_plot(output_dir / "plots" / "lr_finder.png", result.lrs, result.losses,
                            result.lr_min, result.lr_max, result.suggestions, result.rule)
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


@dataclass
class Run:
    """Everything a run holds; attach handlers to `trainer` / `evaluator`, then call `fit()`."""
    config: Config
    device: torch.device
    data: ImageData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    train_loader: Any
    test_loader: Any
    trainer: Engine
    evaluator: Engine
    scheduler: Any
    history: MetricHistory
    lr_recorder: LRRecorder
    lr_min: float
    lr_max: float
    range_test: RangeTest | None
    output_dir: Path
    train_seconds: float = 0.0
    summary_extra: dict = field(default_factory=dict)  # handlers may add keys to summary.json
    tensorboard: Any = None  # handlers.tensorboard.TensorBoardWriter (rank 0): `.writer` is a tensorboardX writer
    sigint: Any = None  # set while fit() runs: whether Ctrl-C asked the trainer to stop (handlers.interrupt)
    last_checkpoint: Path | None = None  # the checkpoint saved after a Ctrl-C
    val_loader: Any = None
    val_evaluator: Engine | None = None  # with --val-split: runs after the test evaluator every epoch
    report: Any = None  # handlers.report.RunReport (rank 0): OUTPUT/report.html
    stop_reason: str | None = None  # a handler that terminates the trainer may say why (shown in report.html)
    last_summary: dict | None = None  # what summary.json holds now (rank 0)

    @property
    def selection_evaluator(self) -> Engine:
        """The evaluator a model is chosen by: validation when there is one, else test."""
        return self.val_evaluator if self.val_evaluator is not None else self.evaluator

    @property
    def module(self) -> nn.Module:
        """The plain model (inside DDP when distributed): what to checkpoint, export or inspect."""
        return unwrap(self.model)

    @property
    def params(self) -> int:
        return count_parameters(self.module)

    def summary(self, completed: bool) -> dict:
        # [dist] world_size / backend say how the run was made; test_examples is the evaluator's count
        # summed over ranks, the size of the whole test set when sharding is exact.
        extra = {"world_size": idist.get_world_size(), "backend": idist.backend(),
                 "test_examples": self.evaluator.state.metrics.get("examples"), **self.summary_extra}
        if self.range_test is not None:  # (a resumed run ran none: its lr_finder.json has them)
            extra.update(lr_rule=self.range_test.rule, lr_suggestions=self.range_test.suggestions)
        return build_summary(config=self.config.to_dict(), rows=self.history.rows, lr_min=self.lr_min,
                             lr_max=self.lr_max, params=self.params, device=str(self.device),
                             train_seconds=self.train_seconds, completed=completed, extra=extra)

    @property
    def all_epochs_ran(self) -> bool:
        return len(self.history.rows) >= self.config.epochs

    def write_outputs(self, completed: bool) -> dict:
        summary = self.summary(completed)
        write_run_files(self.output_dir, summary, self.lr_recorder.lrs)
        self.last_summary = summary
        return summary

    def fit(self) -> dict:
        """Train for config.epochs (continuing from trainer.state if resumed); returns the summary."""
        error = None
        try:
            with stop_on_sigint(self):  # Ctrl-C: checkpoint, then RunInterrupted with the resume command
                self.trainer.run(self.train_loader, max_epochs=self.config.epochs)
        except BaseException as e:  # noqa: BLE001 - re-raised; the report only says how the run ended
            error = e
            raise
        finally:
            if self.tensorboard is not None:  # a run that stops early must end the writer's thread too
                self.tensorboard.close()
            if self.report is not None:  # the final page, also when COMPLETED never fired
                self.report.run_ended(error)
        return self.summary(completed=self.all_epochs_ran)


def build_run(config: Config) -> Run:
    """Build a run with the recipe's handlers; the range test runs first, before anything is attached.

    With --resume, LRMIN/LRMAX come from the checkpoint (no range test) and every stateful object is
    loaded from it once built. [dist] Every rank calls this; rank 0 alone attaches the progress bar (or
    epoch lines) and writes files.
    """
    output_dir = config.resolved_output_dir()
    check_output_dir(config, output_dir)  # a folder; an earlier run there needs --resume or --overwrite
    c = build_components(config)
    output_dir = config.resolved_output_dir()  # [dist] rank 0's: build_components shared it
    resume = find_resume_point(config, output_dir)
    if is_main_process():  # [dist] one process creates the folder (and, with --overwrite, clears it)
        prepare_output_dir(config, output_dir)  # --overwrite removes the earlier run's outputs only here
    if resume is not None:
        range_test, lr_min, lr_max = None, resume.lr_min, resume.lr_max
    else:
        range_test, lr_min, lr_max = find_lr_bounds(c, output_dir)

    trainer = create_trainer(c.model, c.optimizer, c.loss_fn, c.device, c.speed)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: c.train_loader.set_epoch(e.state.epoch - 1))
    milestones = one_cycle_milestones(lr_min, lr_max, len(c.train_loader), config.epochs,
                                      config.resolved_peak_epoch)
    scheduler = attach_one_cycle(trainer, c.optimizer, milestones)
    lr_recorder = LRRecorder(c.optimizer).attach(trainer)
    attach_train_metrics(trainer, c.loss_fn, c.device)
    NonFiniteLossCheck(config.nan_check_every).attach(trainer)  # before the evaluation and the outputs

    # [dist] Each rank evaluates its own unpadded test shard with the plain model and rank 0's BatchNorm
    # buffers: no collective per batch (shards may differ by one batch), and the all-reduced metrics
    # are those of rank 0's model over the whole test set.
    evaluator = create_evaluator(unwrap(c.model), c.loss_fn, c.device, c.speed, tta=config.tta)
    evaluator.add_event_handler(Events.STARTED, lambda: broadcast_buffers_from_rank0(unwrap(c.model)))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(c.test_loader))
    val_evaluator = None
    if c.val_loader is not None:
        val_evaluator = create_evaluator(unwrap(c.model), c.loss_fn, c.device, c.speed)
        val_evaluator.add_event_handler(Events.STARTED, lambda: broadcast_buffers_from_rank0(unwrap(c.model)))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: val_evaluator.run(c.val_loader))
    history = MetricHistory(c.optimizer).attach(trainer, evaluator, val_evaluator)
    if is_main_process():  # a bar on a terminal, else one line per epoch (handlers/console.py)
        attach_console(trainer, history, config.epochs, config.progress)

    run = Run(config, c.device, c.data, c.model, c.optimizer, c.loss_fn, c.train_loader, c.test_loader,
              trainer, evaluator, scheduler, history, lr_recorder, lr_min, lr_max, range_test, output_dir,
              val_loader=c.val_loader, val_evaluator=val_evaluator)
    if is_main_process():  # [dist] summary.json, CSVs and plots come from rank 0 alone
        _attach_outputs(run)
    attach_default_handlers(run, resume)
    return run


def _attach_outputs(run: Run) -> None:
    started = {}

    def on_start(_):
        started["t"] = time.perf_counter() - run.train_seconds

    def on_epoch(_):
        run.train_seconds = time.perf_counter() - started["t"]
        run.write_outputs(completed=False)

    def on_complete(_):
        # COMPLETED also follows a handler's trainer.terminate() (early stopping): not every epoch ran then
        run.write_outputs(completed=run.all_epochs_ran)
        plots = run.output_dir / "plots"
        save_one_cycle_plot(plots / "one_cycle.png", run.lr_recorder.lrs, run.lr_max)
        save_curves_plot(plots / "curves.png", run.history.rows)

    run.trainer.add_event_handler(Events.STARTED, on_start)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, on_epoch)
    run.trainer.add_event_handler(Events.COMPLETED, on_complete)
