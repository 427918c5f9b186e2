"""Finding, validating and loading a resume point (`--resume auto|PATH`); the saving side is handlers/checkpoint.py.

A resume loads a training checkpoint with torch.load(weights_only=True) and checks it against this
run's settings before anything is built from it. A run whose checkpoint is already at its last
iteration is complete: `finished_run` says so, and run.py reports it and exits 0 (a restart loop
that reruns `--resume auto` until success ends there). A kill between saving a new checkpoint and
deleting the oldest leaves one extra complete file; resuming in that folder removes it.
"""
from __future__ import annotations

import itertools
import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import Checkpoint

from core.errors import UserError
from handlers.checkpoint import CHECKPOINT_DIR, training_checkpoints

log = logging.getLogger(__name__)

# Settings that fix the One Cycle schedule and the data order: a resume must use the saved ones.
SCHEDULE_SETTINGS = ("dataset", "subset", "val_split", "data_seed", "epochs", "batch_size", "peak_epoch", "seed")
# What a checkpoint saved before a setting existed ran with (its value then).
SETTINGS_BEFORE_THEY_EXISTED = {"val_split": 0.0, "data_seed": 0}
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "trainer", "run_state")


@dataclass
class ResumePoint:
    """A loaded training checkpoint: read LRMIN/LRMAX from it before building, load the rest after."""
    path: Path
    state: dict

    @property
    def lr_min(self) -> float:
        return float(self.state["run_state"]["lr_min"])

    @property
    def lr_max(self) -> float:
        return float(self.state["run_state"]["lr_max"])

    @property
    def iteration(self) -> int:
        return int(self.state["trainer"]["iteration"])


def find_resume_point(config, output_dir: Path) -> ResumePoint | None:
    """The checkpoint --resume names (None for a new run); refuses to start a new run over old checkpoints."""
    existing = training_checkpoints(output_dir)
    if config.resume is None:
        if existing and not getattr(config, "overwrite", False):
            raise UserError(f"{output_dir / CHECKPOINT_DIR} already holds checkpoints of an earlier run: "
                            f"pass --resume auto to continue it, --overwrite to replace it, or choose a new "
                            f"--output-dir")
        return None
    point = named_resume_point(config, output_dir)
    if point is None:
        log.info("--resume auto: no checkpoint in %s yet; starting a new run", output_dir / CHECKPOINT_DIR)
        return None
    if is_complete(point, config.epochs):  # run.py reports this case before building (finished_run)
        raise UserError(f"{point.path} is from the end of the run (all {config.epochs} epochs done): nothing "
                        f"to resume; start a new run with another --output-dir")
    return point


def load_checkpoint_file(path: Path) -> dict:
    """torch.load(weights_only=True) onto the CPU (load_state_dict moves tensors to the model's device)."""
    def damaged(e: BaseException) -> UserError:
        return UserError(f"cannot read checkpoint {path} ({_first_line(e)}): the file is damaged or not a "
                         f"torch checkpoint; pass another --resume file, or delete it to use the previous one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise damaged(e) from None
        # weights_only=True met a Python global it does not allow, and stopped before calling anything.
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise UserError(f"refused to load {path}: it holds Python objects that could run code when loaded "
                        f"({unsafe.group(1) if unsafe else 'not tensors or plain values'}), which no checkpoint "
                        f"of this trainer does; nothing in it was run: resume only from checkpoints this "
                        f"trainer wrote") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise damaged(e) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} is not a training checkpoint of this trainer (no {', '.join(missing)}): "
                        f"resume from OUTPUT/{CHECKPOINT_DIR}/checkpoint_<iteration>.pt, not a best_model file")
    return state


def _check_resumable(point: ResumePoint, config) -> None:
    saved = point.state["run_state"]["config"]
    saved = {**SETTINGS_BEFORE_THEY_EXISTED, **saved}
    differ = [k for k in SCHEDULE_SETTINGS if saved.get(k) != getattr(config, k)]
    if differ:
        def flags(values):
            return " ".join(f"--{k.replace('_', '-')} {values[k]}" for k in differ)
        raise UserError(f"{point.path} was saved by a run with {flags(saved)}; this run has "
                        f"{flags(config.to_dict())}: pass the same flags to resume, or use a new --output-dir")


def is_complete(point: ResumePoint, epochs: int) -> bool:
    """The checkpoint was saved at the run's last iteration: there is nothing left to train."""
    trainer = point.state["trainer"]
    return trainer["iteration"] >= trainer["epoch_length"] * epochs


def finished_run(config) -> ResumePoint | None:
    """The checkpoint --resume would continue from, if that run has already trained all its epochs.

    Read-only: the restart loop's last call (`--resume auto` after the run finished) must change
    nothing. A damaged checkpoint or other settings raise UserError, as the resume itself would.
    """
    point = named_resume_point(config, Path(config.output_dir)) if config.resume is not None else None
    return point if point is not None and is_complete(point, config.epochs) else None


def named_resume_point(config, output_dir: Path) -> ResumePoint | None:
    """The checkpoint `--resume` names, loaded and checked against this run's settings; None for
    `--resume auto` in a folder without one. UserError for a damaged file or other settings."""
    if config.resume == "auto":
        existing = training_checkpoints(output_dir)
        if not existing:
            return None
        path = existing[-1]
    else:
        path = Path(config.resume)
    point = ResumePoint(path, load_checkpoint_file(path))
    _check_resumable(point, config)
    return point


def finish_complete_run(point: ResumePoint, output_dir: Path) -> list[str]:
    """Tidy a run whose last checkpoint is its end; returns what was done (nothing for a cleanly finished run).

    A kill during the final epoch-end save can leave an extra old checkpoint, a half-written one in
    .checkpoints.partial, and a summary.json not yet marked completed (it is marked at COMPLETED, after
    that save). Each is put right here, and said so; a run that finished cleanly is left byte for byte.
    """
    from handlers.checkpoint import PARTIAL_SUFFIX
    from handlers.outputs import write_run_files
    from handlers.plots import save_curves_plot, save_one_cycle_plot

    done = []
    folder = Path(output_dir) / CHECKPOINT_DIR
    tracked = {item[1] for item in point.state.get("checkpointer", {}).get("_saved", [])}
    done += [f"removed {p}" for p in remove_stale_checkpoints(point, folder, tracked)]
    partial = Path(output_dir) / f".{CHECKPOINT_DIR}{PARTIAL_SUFFIX}"
    if partial.is_dir():
        for leftover in partial.iterdir():
            leftover.unlink()
            done.append(f"removed {leftover} (never finished writing)")
        partial.rmdir()
    summary_path = Path(output_dir) / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = None
    rows = point.state["history"]["rows"]
    if summary is None or summary.get("completed") is not True or len(summary.get("history", [])) != len(rows):
        from handlers.outputs import build_summary

        saved = point.state["run_state"]
        kept = {k: v for k, v in (summary or {}).items() if k not in ("history", "completed", "epochs_completed")}
        summary = build_summary(config=saved["config"], rows=rows, lr_min=saved["lr_min"], lr_max=saved["lr_max"],
                                params=kept.get("params", 0), device=kept.get("device", ""),
                                train_seconds=saved["train_seconds"], completed=True,
                                extra={k: v for k, v in kept.items() if k not in ("params", "device")})
        lrs = point.state["lr_recorder"]["lrs"]
        write_run_files(Path(output_dir), summary, lrs)
        save_one_cycle_plot(Path(output_dir) / "plots" / "one_cycle.png", lrs, saved["lr_max"])
        save_curves_plot(Path(output_dir) / "plots" / "curves.png", rows)
        done.append(f"marked {summary_path} completed (the run was stopped while saving its last checkpoint)")
    for line in done:
        log.warning(line)
    return done


def remove_stale_checkpoints(point: ResumePoint, folder: Path, tracked: set[str]) -> list[Path]:
    """Delete training checkpoints in `folder` older than `point` that its checkpointer no longer tracks.

    They exist when a run was killed between saving a new checkpoint and deleting the oldest
    (SafeDiskSaver deletes only once the new file is in place): nothing would ever remove them.
    Only when resuming in the checkpoint's own folder; files newer than the resume point are kept.
    """
    if Path(point.path).parent.resolve() != Path(folder).resolve():
        return []
    stale = [p for p in training_checkpoints(Path(folder).parent)
             if p.name not in tracked and p.name != Path(point.path).name and _iteration(p) < point.iteration]
    for path in stale:
        path.unlink()
        log.warning("removed %s: an extra checkpoint left by a run stopped between saving a newer one and "
                    "deleting it", path)
    return stale


def _iteration(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _first_line(e: BaseException) -> str:
    text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    # load_state_dict's first line is only a header ("Error(s) in loading ..."); the cause is on the next.
    first = " ".join(text[:2]) if len(text) > 1 and text[0].endswith(":") else (text[0] if text else "")
    return f"{type(e).__name__}: {first[:200]}".strip()


def load_resume_point(objects: dict[str, Any], point: ResumePoint, folder: Path) -> None:
    """Load every object a checkpoint has state for; a different model is a one-line error.

    The checkpointers' file lists keep only files present in `folder`: resumed into a new --output-dir,
    they would otherwise try to delete the old run's files there.
    """
    state = dict(point.state)
    for key in ("checkpointer", "best_checkpointer"):
        if key in state:
            state[key] = {"_saved": [item for item in state[key]["_saved"] if (Path(folder) / item[1]).is_file()]}
    to_load = {k: v for k, v in objects.items() if k in state}
    try:
        Checkpoint.load_objects(to_load, state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"{point.path} does not fit this run ({_first_line(e)}): it is a checkpoint of "
                        f"another model; resume with the flags it was saved with (e.g. --width), or use a new "
                        f"--output-dir") from None
    if "checkpointer" in state:  # only once the checkpoint has proved good: a failed command deletes nothing
        remove_stale_checkpoints(point, Path(folder), {item[1] for item in state["checkpointer"]["_saved"]})
    log.info("resumed from %s at iteration %d", point.path, point.iteration)


class SkipFirstBatches:
    """The train loader, except that its next iterator starts `skip` batches into the epoch.

    Resumed mid-epoch, ignite runs only the epoch's remaining iterations but takes them from the
    start of the data; skipping the batches already trained on gives the batches a straight run sees
    (they are still loaded, which keeps the augmentation RNG streams in step).
    """

    def __init__(self, loader, skip: int):
        self.loader, self.skip = loader, skip

    def __iter__(self):
        iterator = iter(self.loader)
        skip, self.skip = self.skip, 0
        return itertools.islice(iterator, skip, None) if skip else iterator

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


def align_train_loader(run, point: ResumePoint) -> None:
    """After a mid-epoch resume, make run.fit() continue with the batches after the checkpoint's."""
    done_in_epoch = point.iteration % len(run.train_loader)
    if done_in_epoch:
        run.train_loader = SkipFirstBatches(run.train_loader, done_in_epoch)
