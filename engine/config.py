"""One dataclass carries every setting from the CLI to the builders; defaults are the assignment."""
from __future__ import annotations

import difflib
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.errors import UserError
from engine.lr_rules import LRMAX_RULES

# The recipe puts the One Cycle peak at epoch 5 of 24; other lengths keep the same fraction.
PEAK_FRACTION = 5 / 24
# Data paths (--augment): the same augmentation either as batched tensor ops on the training device
# (data/gpu_loader.py) or per image by albumentations in DataLoader workers (data/loaders.py).
AUGMENT_PATHS = ("batched", "albumentations")
# Earlier names, still read (command lines and config.yaml files of older runs).
AUGMENT_ALIASES = {"auto": "batched", "gpu": "batched", "cpu": "albumentations"}


@dataclass
class Config:
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None          # None: $ERA_S10_DATA or ~/.cache/era_s10 (cifar10)
    subset: int | None = None            # a class-stratified sample of N train and N//5 test images
    val_split: float = 0.0               # share of the training images held out for validation (stratified)
    data_seed: int = 0                   # draws the --subset sample and the --val-split (not --seed's business)
    resize: bool = False                 # folder: resize images that are not 32x32 (else refused)
    cache_dir: str | None = None         # folder: decoded-image cache; None: $ERA_S10_CACHE or ~/.cache/era_s10
    cache: bool = True                   # folder: read/write the decoded-image cache
    workers: int = 2
    augment: str = "batched"             # batched (tensor ops on the device) | albumentations (DataLoader workers)
    # model
    width: int = 64                      # 64 is the assignment's network; smaller for quick tests
    # recipe
    epochs: int = 24
    batch_size: int = 512
    weight_decay: float = 1e-2
    peak_epoch: float | None = None      # None: epochs * 5/24 (epoch 5 of 24)
    lr_min: float | None = None          # None: from the LR range test
    lr_max: float | None = None
    lr_find_only: bool = False
    lr_find_start: float = 1e-7
    lr_find_end: float = 10.0
    lr_find_iters: int = 100
    lr_rule: str = "steepest"            # which reading of the range test sets LRMAX (engine/lr_rules.py)
    # run
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    output_dir: str | None = None        # None: runs/<timestamp>
    target: float = 0.90
    target_epoch: int = 19
    progress: bool = True                # a bar on a terminal; False: one line per epoch (handlers/console.py)
    # speed
    amp: bool | None = None              # bf16 autocast; None: on for CUDA and for CPUs with native bf16
    channels_last: bool | None = None    # NHWC activations; None: on for CUDA and CPU
    compile: bool = False                # torch.compile the model's forward
    nan_check_every: int = 0             # also check the loss every N iterations (0: once per epoch)
    # evaluation
    tta: bool = False                    # also report test_accuracy_tta (image and mirror, softmax averaged)
    # handlers (outputs beyond summary.json and the plots)
    resume: str | None = None            # None: new run; "auto": newest checkpoint in --output-dir; or a path
    checkpoint_every: int = 0            # also checkpoint every N iterations (0: epoch ends only)
    keep_checkpoints: int = 2            # training checkpoints kept on disk (the best model is kept apart)
    dump_every: int = 1                  # misclassified dump every N epochs (and always after the last)
    misclassified_count: int = 20        # mistakes shown in the misclassified grid
    handlers: list[str] = field(default_factory=list)  # "package.module:function", called with the Run
    nproc_per_node: int | None = None    # spawn N processes via idist.Parallel; None: one (or torchrun's)
    # reliability
    overwrite: bool = False              # replace the earlier run's outputs in --output-dir (handlers/run_dir.py)
    debug: bool = False                  # show the traceback of a UserError too

    def __post_init__(self):
        self.augment = AUGMENT_ALIASES.get(self.augment, self.augment)

    @property
    def resolved_peak_epoch(self) -> float:
        return self.peak_epoch if self.peak_epoch is not None else self.epochs * PEAK_FRACTION

    def resolved_output_dir(self) -> Path:
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        return Path(self.output_dir)

    def validate(self) -> "Config":
        """Raise UserError for a value no run can use; returns self."""
        def bad(flag: str, why: str):
            raise UserError(f"{flag}: {why}")

        if self.batch_size < 1:
            bad("--batch-size", f"{self.batch_size} must be at least 1")
        if self.epochs < 1:
            bad("--epochs", f"{self.epochs} must be at least 1")
        if self.subset is not None and self.subset < 5:
            bad("--subset", f"{self.subset} must be at least 5 (it keeps N train and N//5 test images)")
        if not 0 <= self.val_split < 1:
            bad("--val-split", f"{self.val_split} is a share of the training images: give a value in [0, 1), "
                               f"e.g. 0.1")
        if self.workers < 0:
            bad("--workers", f"{self.workers} must be 0 or more")
        if self.width < 1:
            bad("--width", f"{self.width} must be at least 1")
        if not 0 < self.resolved_peak_epoch < self.epochs:
            bad("--peak-epoch", f"{self.resolved_peak_epoch} must be inside (0, --epochs={self.epochs})")
        for flag, value in (("--lr-min", self.lr_min), ("--lr-max", self.lr_max),
                            ("--lr-find-start", self.lr_find_start), ("--lr-find-end", self.lr_find_end)):
            if value is not None and not value > 0:
                bad(flag, f"{value} must be > 0")
        if self.lr_min is not None and self.lr_max is not None and self.lr_min >= self.lr_max:
            bad("--lr-min", f"{self.lr_min} must be below --lr-max {self.lr_max}")
        if self.lr_find_start >= self.lr_find_end:
            bad("--lr-find-start", f"{self.lr_find_start} must be below --lr-find-end {self.lr_find_end}")
        if self.lr_find_iters < 3:
            bad("--lr-find-iters", f"{self.lr_find_iters} must be at least 3")
        if self.lr_rule not in LRMAX_RULES:
            bad("--lr-rule", f"unknown rule {self.lr_rule!r}: choose {', '.join(LRMAX_RULES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("--device", f"unknown device {self.device!r}: choose auto, cpu or cuda")
        if self.augment not in AUGMENT_PATHS:
            bad("--augment", f"unknown data path {self.augment!r}: choose {' or '.join(AUGMENT_PATHS)}")
        if self.nan_check_every < 0:
            bad("--nan-check-every", f"{self.nan_check_every} must be 0 (once per epoch) or more")
        if not 0 < self.target <= 1:
            bad("--target", f"{self.target} is an accuracy fraction: give a value in (0, 1], e.g. 0.90")
        if self.nproc_per_node is not None and self.nproc_per_node < 1:
            bad("--nproc-per-node", f"{self.nproc_per_node} must be at least 1 (leave it out for one process)")
        if self.target_epoch < 1:
            bad("--target-epoch", f"{self.target_epoch} must be at least 1")
        if self.resume is not None and self.resume != "auto" and not Path(self.resume).is_file():
            bad("--resume", f"{self.resume} is not a file: give a checkpoint .pt file, or 'auto' for the newest "
                            f"in --output-dir")
        if self.resume == "auto" and self.output_dir is None:
            bad("--resume", "auto looks for checkpoints in --output-dir: pass the --output-dir of the run to continue")
        if self.overwrite and self.resume is not None:
            bad("--overwrite", "starts a new run over the earlier one, --resume continues it: pass only one")
        if self.checkpoint_every < 0:
            bad("--checkpoint-every", f"{self.checkpoint_every} must be 0 (epoch ends only) or more")
        if self.keep_checkpoints < 1:
            bad("--keep-checkpoints", f"{self.keep_checkpoints} must be at least 1")
        if self.dump_every < 1:
            bad("--dump-every", f"{self.dump_every} must be at least 1")
        if self.misclassified_count < 1:
            bad("--misclassified-count", f"{self.misclassified_count} must be at least 1")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# Settings of one invocation rather than of the recipe: not written to config.yaml, so that
# `python run.py --config runs/X/config.yaml` repeats the run in a new folder.
PER_INVOCATION = ("output_dir", "resume", "overwrite", "debug")


def config_file_values(path: str | Path) -> dict:
    """The settings a YAML file gives, keyed by Config field, type-checked; UserError names a bad key or value.

    Keys are Config's fields, with '-' or '_' (`batch-size` or `batch_size`); range checks are
    left to Config.validate(), as for flags.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror or e}): give a YAML file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"--config {path}: not valid YAML{at} ({getattr(e, 'problem', None) or e}): "
                        f"fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: holds a {type(data).__name__}, not a mapping of settings: write one "
                        f"`name: value` per line, e.g. `epochs: 24`")
    hints = typing.get_type_hints(Config)
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            close = difflib.get_close_matches(name, hints, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"--config {path}: unknown setting {key!r}: {hint}settings are the long flags of "
                            f"python run.py --help, e.g. batch_size")
        values[name] = _checked(path, key, value, hints[name])
    return values


def _checked(path: Path, key, value, hint):
    """`value` if it has the type `hint` (int, float, bool, str, list[str], or X | None); ints pass as floats."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if typing.get_origin(kind) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    wanted = " or ".join("null" if k is type(None) else getattr(k, "__name__", str(k)) for k in allowed)
    raise UserError(f"--config {path}: {key} is {value!r} ({type(value).__name__}); it must be {wanted}: "
                    f"fix the value")


def config_yaml(config: Config, header: str = "") -> str:
    """The resolved settings as YAML (the per-invocation ones left out), readable back by --config."""
    import yaml

    values = {k: v for k, v in config.to_dict().items() if k not in PER_INVOCATION}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
