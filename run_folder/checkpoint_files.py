"""The checkpoint files of a run folder: writing them safely (SafeDiskSaver), listing them, and reading and checking
the one `--resume auto|PATH` names. Saving is attached by handlers/checkpoint.py; loading a checkpoint's state
into a built run is training/resume.py.

A resume loads a training checkpoint with torch.load(weights_only=True) and checks it against this
run's settings before anything is built from it. A run whose checkpoint is already at its last
iteration is complete: `finished_run` says so, and run.py reports it and exits 0 (a restart loop
that reruns `--resume auto` until success ends there). A kill between saving a new checkpoint and
deleting the oldest leaves one extra complete file; resuming in that folder removes it.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from ignite.handlers import DiskSaver

from core.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PARTIAL_SUFFIX = ".partial"  # checkpoints being written go to OUTPUT/.checkpoints.partial/, then move in
TRAINING_FILE = re.compile(r"^checkpoint_(\d+)\.pt$")


def training_checkpoints(output_dir: Path) -> list[Path]:
    """Training checkpoints in OUTPUT/checkpoints, oldest first by trainer iteration (not file time)."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint_*.pt") if (m := TRAINING_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


class SafeDiskSaver(DiskSaver):
    """ignite's DiskSaver, made safe against a kill at any moment.

    A checkpoint is written into a sibling folder `.<dirname>.partial`, flushed to disk (fsync), then
    renamed into `dirname`, so every file in `dirname` is complete. ignite's Checkpoint removes the
    oldest file *before* it writes the new one; here removals wait until the new file is in place, so a
    kill in between never leaves fewer complete checkpoints than before (with --keep-checkpoints 1: none).
    """

    def __init__(self, dirname, **kwargs):
        super().__init__(dirname, atomic=True, **kwargs)
        self.partial_dir = self.dirname.parent / f".{self.dirname.name}{PARTIAL_SUFFIX}"
        self._pending_removals: list[str] = []
        if self.partial_dir.is_dir():  # left by a killed run: never complete, never loaded
            for leftover in self.partial_dir.iterdir():
                leftover.unlink()
                log.warning("removed %s: a checkpoint a stopped run had not finished writing", leftover)

    def _save_func(self, checkpoint, path: Path, func) -> None:
        path = Path(path)
        self.partial_dir.mkdir(exist_ok=True)
        partial = self.partial_dir / path.name
        with open(partial, "wb") as f:
            func(checkpoint, f, **self.kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_dir(path.parent)
        try:
            self.partial_dir.rmdir()
        except OSError:  # another save under way (other ranks' savers do not write)
            pass
        removals, self._pending_removals = self._pending_removals, []
        for name in removals:
            if name != path.name:
                super().remove(name)

    def remove(self, filename: str) -> None:
        self._pending_removals.append(filename)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    @property
    def complete(self) -> bool:
        """Saved at the run's last iteration: there is nothing left to train."""
        trainer, epochs = self.state["trainer"], self.state["run_state"]["config"]["epochs"]
        return trainer["iteration"] >= trainer["epoch_length"] * epochs

    def record(self, previous_summary: dict | None = None):
        """The run as summary.json describes it, complete (run_folder.summary.RunRecord)."""
        from run_folder.summary import record_from_state

        return record_from_state(self.state["run_state"], self.state["history"]["rows"], completed=True,
                                 previous=previous_summary)


def find_resume_point(config) -> ResumePoint | None:
    """The checkpoint `--resume` names, read once and checked against this run's settings.

    None for a new run, and for `--resume auto` in a folder with no checkpoint yet. UserError for a damaged
    file or a checkpoint saved with other settings. A run that has trained every epoch is returned too:
    `point.complete` says so (run.py then reports it and exits 0, changing nothing).
    """
    if config.resume is None:
        return None
    if config.resume == "auto":
        existing = training_checkpoints(Path(config.output_dir))
        if not existing:
            log.info("--resume auto: no checkpoint in %s yet; starting a new run",
                     Path(config.output_dir) / CHECKPOINT_DIR)
            return None
        path = existing[-1]
    else:
        path = Path(config.resume)
    point = ResumePoint(path, load_checkpoint_file(path))
    _check_resumable(point, config)
    return point


def load_checkpoint_file(path: Path) -> dict:
    """torch.load(weights_only=True) onto the CPU (load_state_dict moves tensors to the model's device)."""
    def damaged(e: BaseException) -> UserError:
        return UserError(f"cannot read checkpoint {path} ({first_line(e)}): the file is damaged or not a "
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


def finish_complete_run(point: ResumePoint, output_dir: Path) -> list[str]:
    """Tidy a run whose last checkpoint is its end; returns what was done (nothing for a cleanly finished run).

    A kill during the final epoch-end save can leave an extra old checkpoint, a half-written one in
    .checkpoints.partial, and a summary.json not yet marked completed (it is marked at COMPLETED, after
    that save). Each is put right here, and said so; a run that finished cleanly is left byte for byte.
    """
    from run_folder.plots import save_final_plots
    from run_folder.summary import build_summary, write_run_files

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
    previous = _read_summary(summary_path)
    rows = point.state["history"]["rows"]
    if previous is None or previous.get("completed") is not True or len(previous.get("history", [])) != len(rows):
        summary = build_summary(point.record(previous))
        lrs = point.state["lr_recorder"]["lrs"]
        write_run_files(Path(output_dir), summary, lrs)
        save_final_plots(Path(output_dir), lrs, summary["lr_max"], rows)
        done.append(f"marked {summary_path} completed (the run was stopped while saving its last checkpoint)")
    for line in done:
        log.warning(line)
    return done


def complete_run_message(point: ResumePoint, tidied: list[str]) -> str:
    """What `--resume` on a run that already trained every epoch prints: its result, and that nothing was done."""
    from run_folder.summary import build_summary, verdict_line

    summary = build_summary(point.record())
    rows = summary["history"]
    return (f"already complete: {point.path} is the end of the run (all {len(rows)} epochs trained); final test "
            f"accuracy {summary['final_test_accuracy']:.2%}, best {summary['best_test_accuracy']:.2%}; "
            f"{verdict_line(summary)}. " + ("Nothing to do: no file was changed." if not tidied else
                                            "Nothing to train; the folder was tidied (see the warnings above)."))


def _read_summary(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def first_line(e: BaseException) -> str:
    text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    # load_state_dict's first line is only a header ("Error(s) in loading ..."); the cause is on the next.
    first = " ".join(text[:2]) if len(text) > 1 and text[0].endswith(":") else (text[0] if text else "")
    return f"{type(e).__name__}: {first[:200]}".strip()


