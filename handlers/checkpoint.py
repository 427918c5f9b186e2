"""Saving checkpoints (ignite Checkpoint + a kill-safe DiskSaver); finding one is run_folder/checkpoint_files.py, loading it training/resume.py.

OUTPUT/checkpoints/checkpoint_<iteration>.pt: the last K training checkpoints, each holding everything
a resumed run needs (model, optimizer, One Cycle scheduler, trainer state, metric history, LR record,
RNG states, LRMIN/LRMAX and the run's settings, the checkpointers' own file lists).
OUTPUT/checkpoints/best_model_<epoch>_test_accuracy=<acc>.pt: the model's state_dict and what inference needs
(class names, mean/std, width, ...: run_folder/model_file.py, read by models.load_trained), at its best
test accuracy (best_model_<epoch>_val_accuracy=<acc>.pt, chosen on validation, with --val-split). bf16
autocast needs no GradScaler, so there is none to save.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, global_step_from_engine

from core.errors import UserError
from run_folder.checkpoint_files import CHECKPOINT_DIR, SafeDiskSaver
from run_folder.model_file import BestModelMeta

log = logging.getLogger(__name__)

class RNGStates:
    """torch, CUDA, numpy and Python RNG states, as plain types that torch.load(weights_only=True) accepts."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class RunState:
    """The run's record without its rows (LRMIN/LRMAX, training seconds so far, settings, parameters, device,
    summary extras): a resume checks the settings against its own, and a finished run's summary is rebuilt
    from it (run_folder.summary.record_from_state)."""

    def __init__(self, run):
        self.run = run

    def state_dict(self) -> dict:
        return self.run.record(completed=False).state()

    def load_state_dict(self, state: dict) -> None:
        self.run.train_seconds = float(state["train_seconds"])


def training_objects(run, best: Checkpoint | None) -> dict[str, Any]:
    objects = {"model": run.model, "optimizer": run.optimizer, "scheduler": run.scheduler,
               "trainer": run.trainer, "history": run.history, "lr_recorder": run.lr_recorder,
               "rng": RNGStates(), "run_state": RunState(run)}
    if run.ema is not None:  # --ema: the average goes on from where it was
        objects["ema_model"] = run.ema.ema_model
    if best is not None:
        objects["best_checkpointer"] = best
    return objects


def refuse_non_finite_weights(model: torch.nn.Module):
    """A handler that raises UserError instead of letting a checkpoint save NaN/inf weights over good ones.

    One host-device sync per checkpoint (saving copies every tensor to the host anyway).
    """
    def check(engine: Engine) -> None:
        finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
        if not bool(finite):
            raise UserError(f"the model's weights became NaN/inf by epoch {engine.state.epoch}, iteration "
                            f"{engine.state.iteration} (not saved: the checkpoints already in "
                            f"{CHECKPOINT_DIR}/ are kept): the learning rate is probably too high: lower "
                            f"--lr-max (or --lr-min), or check the data for broken images")
    return check


def attach_checkpoints(run, keep: int, every_iterations: int, write: bool = True) -> dict[str, Any]:
    """Save at every epoch end (and every N iterations); returns the objects a resume loads.

    Attach after the evaluation and MetricHistory, so an epoch-end checkpoint holds that epoch's row.
    `write=False` (ranks other than 0) attaches nothing but still returns the objects to load.
    Each save is preceded by a check of the weights: a NaN/inf model stops the run instead of being saved.
    """
    if not write:
        return training_objects(run, None)
    folder = run.output_dir / CHECKPOINT_DIR
    saver = SafeDiskSaver(folder, create_dir=True, require_empty=False)
    # Chosen on validation accuracy when the run holds a validation split: choosing on test would tune on it.
    chooser = run.selection_evaluator
    # Two objects, one file {"model", "meta"}; the pattern keeps the name best_model_<epoch>_<metric>=<value>.pt
    # (ignite would call a file of several objects best_checkpoint_...).
    # With --ema the scored (and so the kept) weights are the average.
    best = Checkpoint({"model": run.eval_module, "meta": BestModelMeta(run)}, saver, filename_prefix="best",
                      filename_pattern="{filename_prefix}_model_{global_step}_{score_name}={score}.{ext}",
                      score_function=lambda _: float(chooser.state.metrics["accuracy"]),
                      score_name="val_accuracy" if run.val_evaluator is not None else "test_accuracy", n_saved=1,
                      global_step_transform=global_step_from_engine(run.trainer, Events.EPOCH_COMPLETED))
    objects = training_objects(run, best)
    latest = Checkpoint(objects, saver, n_saved=keep, include_self=True,
                        global_step_transform=lambda engine, _: engine.state.iteration)
    guard = refuse_non_finite_weights(run.model)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, guard)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, best)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, latest)
    if every_iterations:
        # The epoch-end checkpoint covers an epoch's last iteration, and only it holds the epoch's history row.
        def mid_epoch(engine: Engine, iteration: int) -> bool:
            return iteration % every_iterations == 0 and iteration % engine.state.epoch_length != 0
        run.trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=mid_epoch), guard)
        run.trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=mid_epoch), latest)
    return {**objects, "checkpointer": latest}


