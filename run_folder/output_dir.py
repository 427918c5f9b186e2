"""The output directory: refuse one that cannot be written or that holds an earlier run; --overwrite.

`check_output_dir` only reads (it runs before anything is built); `prepare_output_dir` runs once every
input check has passed, just before the new run writes its first file: it creates the folder, proves
it writable, and with --overwrite removes the earlier run's outputs (RUN_OUTPUTS, nothing else).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from core.errors import UserError
from engine.config import config_yaml
from run_folder.files import write_atomic
from run_folder.checkpoint_files import CHECKPOINT_DIR, PARTIAL_SUFFIX, training_checkpoints

# Everything a run writes into --output-dir: what --overwrite replaces. Other files are left alone.
RUN_OUTPUTS = (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}{PARTIAL_SUFFIX}", "tensorboard", "misclassified", "plots",
               "summary.json", "history.csv", "lr_schedule.csv", "lr_finder.json", "config.yaml", "report.html",
               "model_summary.txt")


def earlier_run(output_dir: Path) -> str | None:
    """'finished', 'unfinished' or None: what summary.json and the training checkpoints in `output_dir` say."""
    summary = output_dir / "summary.json"
    if summary.is_file():
        try:
            return "finished" if json.loads(summary.read_text()).get("completed") is True else "unfinished"
        except (OSError, ValueError, AttributeError):
            return "unfinished"
    return "unfinished" if output_dir.is_dir() and training_checkpoints(output_dir) else None


def check_output_dir(config, output_dir: Path) -> None:
    """Raise UserError for an output path that is not a folder, or that holds a run this command must not touch."""
    output_dir = Path(output_dir)
    try:
        for parent in (output_dir, *output_dir.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"--output-dir {output_dir}: {parent} is a file, not a folder: choose another "
                                    f"--output-dir")
                break
        if getattr(config, "overwrite", False) or config.resume is not None:
            return  # --resume checks its checkpoint itself (a finished run has nothing to resume)
        state = earlier_run(output_dir)
    except OSError as e:  # e.g. a name too long for the file system
        raise _cannot_write(output_dir, e) from None
    if state == "finished":
        raise UserError(f"{output_dir} already holds a finished run: pass --overwrite to replace its outputs "
                        f"(the earlier run's checkpoints, summary and plots are deleted), or choose a new "
                        f"--output-dir")
    if state == "unfinished":
        raise UserError(f"{output_dir} already holds an unfinished run: pass --resume auto to continue it, "
                        f"--overwrite to replace it, or choose a new --output-dir")


def prepare_output_dir(config, output_dir: Path) -> None:
    """Create `output_dir` and prove it writable; with --overwrite, remove the earlier run's outputs; then
    write the run's resolved settings to config.yaml (`python run.py --config` repeats the run)."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise _cannot_write(output_dir, e) from None
    if getattr(config, "overwrite", False):
        for name in RUN_OUTPUTS:
            path = output_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                os.remove(path)
    header = (f"Settings of the run in {output_dir}, written {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"
              f"Repeat it (in a new folder): python run.py --config {output_dir / 'config.yaml'}")
    write_atomic(output_dir / "config.yaml", config_yaml(config, header))


def _cannot_write(output_dir: Path, e: OSError) -> UserError:
    return UserError(f"cannot write to --output-dir {output_dir} ({type(e).__name__}: {e.strerror or e}): "
                     f"choose a folder you can write to")
