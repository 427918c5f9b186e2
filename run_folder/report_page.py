"""OUTPUT/report.html: one self-contained page about the run, rendered from the run and its folder.

Top to bottom: the verdict, the settings next to the assignment's, the range test, the LR schedule, the
learning curves, per-class results and the confusion matrix, the latest misclassified grid (and Grad-CAM
grid, when a handler wrote one), the environment, and links to the run's other files. Images are the
PNG files already in the run folder, embedded as base64; the curves and the schedule are inline SVG
(run_folder/report_charts.py). While the run is in progress the page reloads itself every
REFRESH_SECONDS; the final version does not. handlers/report.py decides when it is written.
"""
from __future__ import annotations

import base64
import json
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from run_folder.files import write_atomic
from run_folder.report_context import (class_table, config_rows, curve_charts, history_table, lr_source,
                                       page_verdict, schedule_chart, suggestion_rows)

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


class ReportPage:
    """Renders and writes OUTPUT/report.html; keeps the encoded images and the environment between writes."""

    def __init__(self, run):
        self.run = run
        self.path = Path(run.output_dir) / REPORT
        self._images: dict[Path, tuple[tuple[int, int], str]] = {}  # path -> ((mtime_ns, size), data URI)
        self._environment: list[tuple[str, str]] | None = None

    def write(self, ended: dict | None) -> Path:
        """ended: None while the run goes on; else {"finished", "reason", "epoch", "iteration"}."""
        return write_atomic(self.path, template().render(**self.context(ended)))

    def context(self, ended: dict | None) -> dict:
        run, out = self.run, Path(self.run.output_dir)
        summary = run.last_summary
        config = run.config.to_dict()
        rows = summary["history"] if summary else []
        finder = _read_json(out / "lr_finder.json")
        data = {"train": len(run.data.train_y), "val": len(run.data.val_y) if run.data.has_val else 0,
                "test": len(run.data.test_y), "classes": run.data.num_classes}
        resumed = bool(run.summary_extra.get("resumed_from"))
        planned = list(zip(getattr(run.scheduler, "milestones", []), getattr(run.scheduler, "values", [])))
        head, body = history_table(rows)
        lrs_from = lr_source(config, resumed, finder and finder.get("rule"))
        return {
            "title": out.resolve().name,
            "subtitle": f"{out}: {run.config.dataset}, {run.config.epochs} epochs, batch {run.config.batch_size}",
            "refresh": REFRESH_SECONDS if ended is None else None,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "verdict": page_verdict(summary, run.config.epochs, ended, run.trainer.state.epoch),
            "config_rows": config_rows(config, data, run.params, lrs_from, run.lr_min, run.lr_max, run.config.augment),
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
