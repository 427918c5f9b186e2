"""Wire a run together: data, model, optimizer, range test, trainer, schedule, evaluator, outputs.

`build_run(config)` is the one function `run.py` uses; a custom run calls it too, attaches its
own handlers to `run.trainer` / `run.evaluator`, and calls `run.fit()`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from torch import nn

from core.device import machine_facts
from core.distributed import broadcast_buffers_from_rank0, is_main_process, unwrap
from core.errors import UserError
from engine.config import Config
from engine.lr_finder import RangeTest
from engine.schedule import attach_one_cycle, one_cycle_milestones
from engine.trainer import attach_train_metrics, create_evaluator, create_trainer
from handlers.console import attach_console
from handlers.ema import attach_ema
from handlers.history import LRRecorder, MetricHistory
from handlers.interrupt import SigintStop
from handlers.nonfinite import NonFiniteLossCheck
from models import count_parameters
from run_folder.checkpoint_files import ResumePoint, find_resume_point
from run_folder.output_dir import check_output_dir, prepare_output_dir
from run_folder.plots import save_final_plots
from run_folder.summary import RunRecord, build_summary, write_run_files
from training.components import Components, build_components, find_lr_bounds
from training.defaults import attach_default_handlers

FIND = "find"  # build_run's resume argument: look for the checkpoint --resume names


@dataclass(kw_only=True, slots=True)
class Run(Components):
    """Everything a run holds: its Components (config, device, data, model, optimizer, loss, loaders) and the
    Engines, schedule and outputs. Attach handlers to `trainer` / `evaluator`, then call `fit()`.

    Slotted: a handler keeps its own state on itself, not on the run. What a handler may set here:
    `summary_extra` (keys added to summary.json) and `stop_reason` (why it terminated the trainer).
    """
    trainer: Engine
    evaluator: Engine
    val_evaluator: Engine | None  # with --val-split: runs after the test evaluator every epoch
    scheduler: Any
    history: MetricHistory
    lr_recorder: LRRecorder
    lr_min: float
    lr_max: float
    range_test: RangeTest | None  # None when both LRs were given, or the run was resumed
    output_dir: Path
    interrupt: SigintStop
    train_seconds: float = 0.0
    summary_extra: dict = field(default_factory=dict)  # handlers may add keys to summary.json
    stop_reason: str | None = None  # a handler that terminates the trainer may say why (shown in report.html)
    ema: Any = None  # --ema: ignite's EMAHandler; its ema_model is what the evaluators score and the best file keeps
    raw_evaluators: dict = field(default_factory=dict)  # --ema: {"test"[, "val"]}: the trained weights' own scores
    tensorboard: Any = None  # handlers.tensorboard.TensorBoardWriter (rank 0): `.writer` is a tensorboardX writer
    report: Any = None  # handlers.report.RunReport (rank 0): OUTPUT/report.html
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
    def eval_module(self) -> nn.Module:
        """The weights that are evaluated, chosen, saved as the best model and explained: the --ema average, or
        the trained model itself."""
        return self.ema.ema_model if self.ema is not None else self.module

    @property
    def params(self) -> int:
        return count_parameters(self.module)

    @property
    def all_epochs_ran(self) -> bool:
        return len(self.history.rows) >= self.config.epochs

    def record(self, completed: bool) -> RunRecord:
        """The run as summary.json describes it (and as its checkpoints keep it: handlers.checkpoint.RunState)."""
        # [dist] world_size / backend say how the run was made; test_examples is the evaluator's count
        # summed over ranks, the size of the whole test set when sharding is exact.
        extra = {"world_size": idist.get_world_size(), "backend": idist.backend(),
                 "test_examples": self.evaluator.state.metrics.get("examples"),
                 "speed": self.speed.describe(), "machine": machine_facts(self.device), **self.summary_extra}
        if self.range_test is not None:  # (a resumed run ran none: its lr_finder.json has them)
            test = self.range_test
            extra.update(lr_rule=test.rule, lr_suggestions=test.suggestions,
                         lr_finder={"lr": test.lrs, "loss_raw": test.raw_losses, "loss": test.losses})
        return RunRecord(config=self.config.to_dict(), rows=self.history.rows, lr_min=self.lr_min,
                         lr_max=self.lr_max, train_seconds=self.train_seconds, completed=completed,
                         params=self.params, device=str(self.device), extra=extra)

    def write_outputs(self, completed: bool) -> dict:
        summary = build_summary(self.record(completed))
        write_run_files(self.output_dir, summary, self.lr_recorder.lrs)
        self.last_summary = summary
        return summary

    def fit(self) -> dict:
        """Train for config.epochs (continuing from trainer.state if resumed); returns the summary."""
        error = None
        try:
            with self.interrupt.active():  # Ctrl-C: checkpoint, then RunInterrupted with the resume command
                self.trainer.run(self.train_loader, max_epochs=self.config.epochs)
        except BaseException as e:  # noqa: BLE001 - re-raised; the report only says how the run ended
            error = e
            raise
        finally:
            if self.tensorboard is not None:  # a run that stops early must end the writer's thread too
                self.tensorboard.close()
            if self.report is not None:  # the final page, also when COMPLETED never fired
                self.report.run_ended(error)
        return build_summary(self.record(completed=self.all_epochs_ran))


def build_run(config: Config, resume: ResumePoint | None | str = FIND) -> Run:
    """Build a run with the recipe's handlers; the range test runs first, before anything is attached.

    resume: the checkpoint to continue (run.py passes the one it read; None for a new run); by default it is
    looked up as --resume says. Resumed, LRMIN/LRMAX come from the checkpoint (no range test) and every
    stateful object is loaded from it once built. [dist] Every rank calls this; rank 0 alone attaches the
    progress bar (or epoch lines) and writes files.
    """
    config = config.resolved()
    check_output_dir(config, Path(config.output_dir))  # a folder; an earlier run there needs --resume or --overwrite
    if resume == FIND:
        resume = find_resume_point(config)
    if resume is not None and resume.complete:
        raise UserError(f"{resume.path} is from the end of the run (all {config.epochs} epochs done): nothing "
                        f"to resume; start a new run with another --output-dir")
    c = build_components(config)
    output_dir = Path(c.config.output_dir)  # [dist] rank 0's folder: build_components shared it
    if is_main_process():  # [dist] one process creates the folder (and, with --overwrite, clears it)
        prepare_output_dir(c.config, output_dir)  # --overwrite removes the earlier run's outputs only here
    if resume is not None:
        range_test, lr_min, lr_max = None, resume.lr_min, resume.lr_max
    else:
        range_test, lr_min, lr_max = find_lr_bounds(c, output_dir)
    run = Run(**{f.name: getattr(c, f.name) for f in fields(Components)}, **_engines(c, lr_min, lr_max),
              lr_min=lr_min, lr_max=lr_max, range_test=range_test, output_dir=output_dir)
    if is_main_process():  # a bar on a terminal, else one line per epoch (handlers/console.py)
        attach_console(run.trainer, run.history, c.config.epochs, c.config.progress)
        _attach_outputs(run)  # [dist] summary.json, CSVs and plots come from rank 0 alone
    attach_default_handlers(run, resume)
    return run


def _engines(c: Components, lr_min: float, lr_max: float) -> dict:
    """The trainer (One Cycle, train metrics, NaN check), the evaluators run at each epoch end, the history."""
    cfg = c.config
    trainer = create_trainer(c.model, c.optimizer, c.loss_fn, c.device, c.speed)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: c.train_loader.set_epoch(e.state.epoch - 1))
    milestones = one_cycle_milestones(lr_min, lr_max, len(c.train_loader), cfg.epochs, cfg.resolved_peak_epoch)
    scheduler = attach_one_cycle(trainer, c.optimizer, milestones)
    lr_recorder = LRRecorder(c.optimizer).attach(trainer)
    attach_train_metrics(trainer, nn.CrossEntropyLoss(), c.device)  # plain CE, comparable with the test loss
    NonFiniteLossCheck(cfg.nan_check_every).attach(trainer)  # before the evaluation and the outputs
    ema = None
    if cfg.ema > 0:  # updated at every ITERATION_COMPLETED, so the average is current when the epoch ends
        ema = attach_ema(trainer, c.model, cfg.ema)
    scored = ema.ema_model if ema is not None else unwrap(c.model)
    evaluator = _epoch_evaluator(c, trainer, scored, c.test_loader, tta=cfg.tta)
    val_evaluator = _epoch_evaluator(c, trainer, scored, c.val_loader) if c.val_loader is not None else None
    raw = {}
    if ema is not None:  # the trained weights scored too, on the same images: what the average adds
        raw["test"] = _epoch_evaluator(c, trainer, unwrap(c.model), c.test_loader)
        if c.val_loader is not None:
            raw["val"] = _epoch_evaluator(c, trainer, unwrap(c.model), c.val_loader)
    history = MetricHistory(c.optimizer).attach(trainer, evaluator, val_evaluator, raw)
    return dict(trainer=trainer, evaluator=evaluator, val_evaluator=val_evaluator, scheduler=scheduler,
                history=history, lr_recorder=lr_recorder, interrupt=SigintStop(trainer, cfg.output_dir), ema=ema,
                raw_evaluators=raw)


def _epoch_evaluator(c: Components, trainer: Engine, model: nn.Module, loader, tta: bool = False) -> Engine:
    """An evaluator of `model` (the plain model, or the --ema average) run over `loader` at every epoch end.

    [dist] Each rank evaluates its own unpadded shard with rank 0's BatchNorm buffers: no collective per
    batch (shards may differ by one batch), and the all-reduced metrics are those of rank 0's model over
    the whole set. (The EMA average is the same on every rank: DDP keeps the weights equal.)
    """
    evaluator = create_evaluator(model, nn.CrossEntropyLoss(), c.device, c.speed, tta=tta)
    evaluator.add_event_handler(Events.STARTED, lambda: broadcast_buffers_from_rank0(model))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(loader))
    return evaluator


def _attach_outputs(run: Run) -> None:
    """summary.json and the CSVs after every epoch; the final plots when the run completes."""
    started = {}

    def on_start(_):
        started["t"] = time.perf_counter() - run.train_seconds

    def on_epoch(_):
        run.train_seconds = time.perf_counter() - started["t"]
        run.write_outputs(completed=False)

    def on_complete(_):
        # COMPLETED also follows a handler's trainer.terminate() (early stopping): not every epoch ran then
        run.write_outputs(completed=run.all_epochs_ran)
        save_final_plots(run.output_dir, run.lr_recorder.lrs, run.lr_max, run.history.rows)

    run.trainer.add_event_handler(Events.STARTED, on_start)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, on_epoch)
    run.trainer.add_event_handler(Events.COMPLETED, on_complete)
