"""Wire a run together: data, model, optimizer, range test, trainer, schedule, evaluator, outputs.

`build_run(config)` is the one function `run.py` uses; a custom run calls it too, attaches its
own handlers to `run.trainer` / `run.evaluator`, and calls `run.fit()`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from torch import nn

from core.distributed import broadcast_buffers_from_rank0, is_main_process, unwrap
from engine.config import Config
from engine.lr_finder import RangeTest
from engine.schedule import attach_one_cycle, one_cycle_milestones
from engine.trainer import attach_train_metrics, create_evaluator, create_trainer
from handlers.resume import find_resume_point
from handlers.console import attach_console
from handlers.defaults import attach_default_handlers
from handlers.history import LRRecorder, MetricHistory
from handlers.interrupt import stop_on_sigint
from handlers.nonfinite import NonFiniteLossCheck
from handlers.outputs import build_summary, write_run_files
from handlers.run_dir import check_output_dir, prepare_output_dir
from handlers.plots import save_curves_plot, save_one_cycle_plot
from models import count_parameters
from training.components import Components, build_components, find_lr_bounds

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Run(Components):
    """Everything a run holds: its Components (config, device, data, model, optimizer, loss, loaders)
    and the Engines, schedule and outputs; attach handlers to `trainer` / `evaluator`, then call `fit()`."""
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

    run = Run(**{f.name: getattr(c, f.name) for f in fields(Components)}, trainer=trainer, evaluator=evaluator,
              scheduler=scheduler, history=history, lr_recorder=lr_recorder, lr_min=lr_min, lr_max=lr_max,
              range_test=range_test, output_dir=output_dir, val_evaluator=val_evaluator)
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
