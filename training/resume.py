"""Loading a resume point into a built run: ignite's Checkpoint.load_objects into every stateful object, then the
train loader set to continue after the checkpoint's batch. Finding and checking the checkpoint file is
run_folder/checkpoint_files.py; saving is handlers/checkpoint.py."""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from ignite.handlers import Checkpoint

from core.errors import UserError
from run_folder.checkpoint_files import ResumePoint, first_line, remove_stale_checkpoints

log = logging.getLogger(__name__)


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
        raise UserError(f"{point.path} does not fit this run ({first_line(e)}): it is a checkpoint of "
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
