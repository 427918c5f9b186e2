"""OUTPUT/report.html: one self-contained page about the run, rewritten after every epoch and when the run ends.

Top to bottom: the verdict, the settings next to the assignment's, the range test, the LR schedule, the
learning curves, per-class results and the confusion matrix, the latest misclassified grid (and Grad-CAM
grid, when a handler wrote one), the environment, and links to the run's other files. Images are the
PNG files already in the run folder, embedded as base64; the curves and the schedule are inline SVG
(handlers/report_charts.py). While the run is in progress the page reloads itself every
REFRESH_SECONDS; the final version does not.

Only rank 0 attaches it (it reads what rank 0 writes). A failure to render is logged as a warning and
never stops training.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from data.gpu_loader import GpuTrainLoader
from handlers.interrupt import RunInterrupted
from handlers.outputs import write_atomic
from handlers.report_context import (class_table, config_rows, curve_charts, history_table, lr_source,
                                     schedule_chart, suggestion_rows, verdict)

log = logging.getLogger(__name__)

REPORT = "report.html"
TEMPLATE = "report.html.j2"
REFRESH_SECONDS = 30
EPOCH_PNG = re.compile(r"^epoch_(\d+)\.png$")
GRADCAM_PNG = re.compile(r"^gradcam_epoch_(\d+)\.png$")

_template = None


def template():
    """The Jinja2 template, loaded once (package data next to this module: setup.cfg ships it)."""
    global _template
    if _template is None:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                          autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
        _template = env.get_template(TEMPLATE)
    return _template


def stop_reason(run, error: BaseException | None) -> str:
    """Why a run ended before its last epoch, in a phrase for the verdict."""
    if isinstance(error, RunInterrupted):
        saved = getattr(run, "last_checkpoint", None)
        where = f"a checkpoint was saved ({os.path.relpath(saved, run.output_dir)})" if saved else \
            "no checkpoint could be saved"
        return (f"Ctrl-C; {where}: continue with python run.py --resume auto --output-dir {run.output_dir} "
                f"and this run's other flags")
    if isinstance(error, KeyboardInterrupt):
        return "Ctrl-C twice: stopped at once, without saving a checkpoint"
    if error is not None:
        kind = "" if type(error).__name__ == "UserError" else f"{type(error).__name__}: "
        return f"{kind}{error}"
    return getattr(run, "stop_reason", None) or "a handler stopped the trainer (trainer.terminate())"


class RunReport:
    """Writes OUTPUT/report.html at every epoch end (in progress), at COMPLETED and from Run.fit when the run
    stops otherwise (Ctrl-C, an error). Reads `run.last_summary`, the dict last written to summary.json, so
    the page shows the numbers that file holds."""

    def __init__(self, run):
        self.run = run
        self.path = Path(run.output_dir) / REPORT
        self.ended: dict | None = None
        self._images: dict[Path, tuple[tuple[int, int], str]] = {}  # path -> ((mtime_ns, size), data URI)
        self._environment: list[tuple[str, str]] | None = None

    def attach(self) -> "RunReport":
        self.run.trainer.add_event_handler(Events.STARTED, self._started)
        return self

    def _started(self, trainer: Engine) -> None:
        # Registered now, so they run after every EPOCH_COMPLETED / COMPLETED handler attached before run()
        # (outputs, dumps, checkpoints, custom handlers): the page then shows this epoch's files.
        if not trainer.has_event_handler(self._epoch_completed, Events.EPOCH_COMPLETED):
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
            trainer.add_event_handler(Events.COMPLETED, self._completed)

    def _epoch_completed(self, trainer: Engine) -> None:
        if trainer.state.epoch < trainer.state.max_epochs and not trainer.should_terminate:
            self.write()  # the last epoch's page is written at COMPLETED, final

    def _completed(self, trainer: Engine) -> None:
        self.end()  # COMPLETED also follows a handler's trainer.terminate(): end() tells the two apart

    def run_ended(self, error: BaseException | None) -> None:
        """Called by Run.fit however trainer.run returned: a run that did not reach COMPLETED still gets its
        final page (Ctrl-C, a NaN loss, a crash, trainer.terminate(skip_completed=True))."""
        if error is not None or self.ended is None:
            self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        """The final page: finished when every epoch ran without an error, else stopped early, saying why.

        Called from Run.fit's `finally` and from an event handler: nothing here may raise, or it would
        replace the run's own error (or stop a run that was ending well).
        """
        try:
            all_ran = len(self.run.history.rows) >= self.run.config.epochs
            reason = None if error is None and all_ran else stop_reason(self.run, error)
            state = self.run.trainer.state
            self.ended = {"finished": reason is None, "reason": reason, "epoch": state.epoch,
                          "iteration": state.iteration}
        except Exception as e:  # noqa: BLE001
            log.warning("could not write %s: %s: %s", self.path, type(e).__name__, e)
            return
        self.write()

    def write(self) -> Path | None:
        """Render and write atomically; on any failure log a warning and return None (training goes on)."""
        try:
            return write_atomic(self.path, template().render(**self.context()))
        except Exception as e:  # noqa: BLE001 - a report must never stop the training it reports on
            log.warning("could not write %s: %s: %s", self.path, type(e).__name__, e)
            return None

    # ---- what the page shows

    def context(self) -> dict:
        run, out = self.run, Path(self.run.output_dir)
        summary = getattr(run, "last_summary", None)
        config = run.config.to_dict()
        rows = summary["history"] if summary else []
        finder = _read_json(out / "lr_finder.json")
        data = {"train": len(run.data.train_y), "val": len(run.data.val_y) if run.data.has_val else 0,
                "test": len(run.data.test_y), "classes": run.data.num_classes}
        augment = "batched" if isinstance(run.train_loader, GpuTrainLoader) else "albumentations"
        resumed = bool(run.summary_extra.get("resumed_from"))
        planned = list(zip(getattr(run.scheduler, "milestones", []), getattr(run.scheduler, "values", [])))
        head, body = history_table(rows)
        lrs_from = lr_source(config, resumed, finder and finder.get("rule"))
        return {
            "title": out.resolve().name,
            "subtitle": f"{out}: {run.config.dataset}, {run.config.epochs} epochs, batch {run.config.batch_size}",
            "refresh": REFRESH_SECONDS if self.ended is None else None,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "verdict": verdict(summary, run.config.epochs, self.ended, run.trainer.state.epoch),
            "config_rows": config_rows(config, data, run.params, lrs_from, run.lr_min, run.lr_max, augment),
            "lr_source": lrs_from,
            "finder": finder,
            "finder_plot": self.image(out / "plots" / "lr_finder.png"),
            "suggestions": suggestion_rows(finder),
            "schedule": schedule_chart(run.lr_recorder.lrs, planned, run.lr_min, run.lr_max),
            "curves": curve_charts(rows, run.config.epochs, run.config.target, run.config.target_epoch),
            "history_head": head, "history_body": body,
            "classes": class_table(summary),
            "misclassified": self.latest_image(out / "misclassified", EPOCH_PNG),
            "gradcam": self.latest_image(out / "misclassified", GRADCAM_PNG),
            "environment": self.environment(),
            "command": ["python run.py", *changed_flags(run.config)],
            "lr_min": run.lr_min, "lr_max": run.lr_max,
            "files": run_files(out),
        }

    def image(self, path: Path) -> str | None:
        """A data: URI of a PNG in the run folder, or None; re-encoded only when the file changed."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._images.get(path)
        if cached is None or cached[0] != key:
            cached = (key, "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii"))
            self._images[path] = cached
        return cached[1]

    def latest_image(self, folder: Path, pattern: re.Pattern) -> dict | None:
        found = sorted((int(m.group(1)), p) for p in _listdir(folder) if (m := pattern.match(p.name)))
        if not found:
            return None
        epoch, path = found[-1]
        uri = self.image(path)
        return {"epoch": epoch, "src": uri, "href": path.relative_to(self.run.output_dir).as_posix()} if uri else None

    def environment(self) -> list[tuple[str, str]]:
        if self._environment is None:
            run, cfg = self.run, self.run.config
            device = str(run.device)
            if run.device.type == "cuda":
                device += f" ({torch.cuda.get_device_name(run.device)})"
            versions = ", ".join(f"{name} {_version(pkg)}" for name, pkg in (
                ("torch", "torch"), ("ignite", "pytorch-ignite"), ("albumentations", "albumentations"),
                ("numpy", "numpy")))
            self._environment = [
                ("Python", f"{platform.python_version()} ({sys.platform})"), ("Packages", versions),
                ("Device", device), ("Seeds", f"--seed {cfg.seed}, --data-seed {cfg.data_seed}"),
                ("Speed settings", f"{run.speed.describe()}, --workers {cfg.workers}"),
                ("Output folder", str(Path(run.output_dir).resolve())),
            ]
            if run.summary_extra.get("resumed_from"):
                self._environment.append(("Resumed from", run.summary_extra["resumed_from"]))
        return self._environment


def changed_flags(config) -> list[str]:
    """The flags (each with its value) that give this run's settings, beside the defaults: what to type to run
    it again."""
    defaults = type(config)().to_dict()
    flags = []
    for key, value in config.to_dict().items():
        if key in ("output_dir", "resume", "overwrite", "debug") or value == defaults[key]:
            continue
        if isinstance(value, bool):  # --resize, --compile, --amp / --no-amp, --no-cache, --no-progress
            flags.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        elif isinstance(value, list):
            flags += [f"--{key.rstrip('s')} {v}" for v in value]
        else:
            flags.append(f"--{key.replace('_', '-')} {value}")
    return flags


def run_files(out: Path) -> list[dict]:
    """Links to the run's other files, relative to report.html, only those that exist."""
    wanted = ["summary.json", "history.csv", "lr_schedule.csv", "lr_finder.json", "plots/lr_finder.png",
              "plots/one_cycle.png", "plots/curves.png", "plots/confusion_matrix.png"]
    files = [{"href": name, "label": name, "note": None} for name in wanted if (out / name).is_file()]
    for folder, note in (("misclassified", "grids and CSV lists of every mistake"),
                         ("checkpoints", "training checkpoints and the best model"),
                         ("tensorboard", "tensorboard --logdir " + str(out / "tensorboard"))):
        if (out / folder).is_dir():
            files.append({"href": folder + "/", "label": folder + "/", "note": note})
    return files


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"
