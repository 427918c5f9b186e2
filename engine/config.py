"""One dataclass carries every setting from the CLI to the builders; defaults are the assignment."""
from __future__ import annotations

import difflib
import time
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import UserError
from data.datasets import DATASETS
from engine.lr_rules import DEFAULT_RULE, LR_MIN_HELP, LR_RULE_HELP, LRMAX_RULES, WARMUP_LR

# The recipe puts the One Cycle peak at epoch 5 of 24; other lengths keep the same fraction.
PEAK_FRACTION = 5 / 24
# Data paths (--augment): the same augmentation either as batched tensor ops on the training device
# (data/gpu_loader.py) or per image by albumentations in DataLoader workers (data/loaders.py).
AUGMENT_PATHS = ("batched", "albumentations")
# Earlier names, still read (command lines and config.yaml files of older runs).
AUGMENT_ALIASES = {"auto": "batched", "gpu": "batched", "cpu": "albumentations"}
DEVICES = ("auto", "cpu", "cuda")


def setting(default=None, help: str = "", *, group: str, metavar: str | None = None, choices=None,
            flag: str | None = None, factory=None):
    """A Config field and its command-line flag, described once: run.py's --help, config.yaml and the
    command-line reference in docs/ are generated from these (training/flags.py).

    flag: the flag's name without dashes when it is not the field's (e.g. `handler` for `handlers`).
    Booleans become switches: --name when the default is False, --no-name when it is True, and
    --name/--no-name when the default is None (decided at run time).
    """
    meta = {"help": help, "group": group, "metavar": metavar, "choices": choices, "flag": flag}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


DATA, RECIPE, RUN, SPEED, OUTPUTS, RELIABILITY = ("data", "recipe", "run", "speed",
                                                  "checkpoints, dumps and custom handlers", "reliability")


@dataclass(frozen=True)
class Config:
    """Every setting of a run; the defaults are the assignment. Frozen: `resolved()` returns the copy a run uses."""
    # data
    dataset: str = setting("cifar10", "cifar10 (downloads if missing), folder (DIR/train and DIR/test, one subfolder "
                           "per class, 32x32 images) or fake (random, for smoke runs and benchmarks)",
                           group=DATA, choices=DATASETS)
    data_dir: str | None = setting(None, "dataset location; for cifar10 defaults to $ERA_S10_DATA or ~/.cache/era_s10",
                                   group=DATA, metavar="DIR")
    subset: int | None = setting(None, "a class-stratified sample of N training and N//5 test images (drawn with "
                                 "--data-seed)", group=DATA, metavar="N")
    val_split: float = setting(0.0, "hold out this share of the training images (stratified, drawn with --data-seed) "
                               "as a validation set, evaluated every epoch beside the test set; tune on it, not on "
                               "test", group=DATA, metavar="F")
    data_seed: int = setting(0, "seed of the --subset sample and the --val-split; kept apart from --seed so runs with "
                             "different seeds see the same images", group=DATA, metavar="N")
    resize: bool = setting(False, "folder: resize images that are not 32x32 as they load (otherwise they are "
                           "refused)", group=DATA)
    cache_dir: str | None = setting(None, "folder: where decoded images are cached; default $ERA_S10_CACHE or "
                                    "~/.cache/era_s10/folders", group=DATA, metavar="DIR")
    cache: bool = setting(True, "folder: decode every image on every run, and write no cache", group=DATA)
    workers: int = setting(2, "DataLoader worker processes of the albumentations data path (--augment)", group=DATA,
                           metavar="N")
    augment: str = setting("batched", "data path, the same augmentation either way: batched (the dataset on the "
                           "training device, each batch augmented by a few tensor ops; fastest on CUDA and CPU alike) "
                           "or albumentations (image by image in --workers DataLoader processes). Older names: gpu = "
                           "auto = batched, cpu = albumentations", group=DATA,
                           choices=(*AUGMENT_PATHS, *AUGMENT_ALIASES), metavar="{" + ",".join(AUGMENT_PATHS) + "}")
    # recipe
    epochs: int = setting(24, "length of the One Cycle run", group=RECIPE, metavar="N")
    batch_size: int = setting(512, "images per step (the global batch when several processes train)", group=RECIPE,
                              metavar="N")
    weight_decay: float = setting(1e-4, "Adam weight decay (L2)", group=RECIPE, metavar="F")
    label_smoothing: float = setting(0.0, "label smoothing of the training loss (CrossEntropyLoss's own "
                                     "label_smoothing; the range test uses it too); reported losses stay plain cross "
                                     "entropy; 0: none", group=RECIPE, metavar="F")
    ema: float = setting(0.01, "keep an exponential moving average of the weights (ignite's EMAHandler, BatchNorm "
                         "statistics averaged too), updated every iteration with this momentum (0.01: about the "
                         "last 100 steps; higher over a run's first 9/M steps, so a short run's average follows it); "
                         "the average is what is evaluated, chosen, saved and exported, and the "
                         "trained weights' own test (and val) accuracy is kept beside it (raw_* columns); 0.01 was chosen on a "
                         "validation split (BENCHMARKS.md); 0: none",
                         group=RECIPE, metavar="M")
    peak_epoch: float | None = setting(None, "epoch at whose end the LR peaks (fractional allowed); default: 5/24 of "
                                       "--epochs", group=RECIPE, metavar="F")
    lr_min: float | None = setting(None, LR_MIN_HELP, group=RECIPE, metavar="LR")
    lr_max: float | None = setting(None, "LRMAX; default: from the LR range test (--lr-rule)", group=RECIPE,
                                   metavar="LR")
    lr_find_only: bool = setting(False, "run only the LR range test: print LRMIN/LRMAX and every reading of the curve, "
                                 "save plots/lr_finder.png and lr_finder.json, exit", group=RECIPE)
    lr_find_start: float = setting(1e-7, "range test start LR", group=RECIPE, metavar="LR")
    lr_find_end: float = setting(10.0, "range test end LR", group=RECIPE, metavar="LR")
    lr_find_iters: int = setting(100, "range test iterations", group=RECIPE, metavar="N")
    lr_find_repeats: int = setting(1, "run the range test N times (the model as built, then N-1 re-drawn "
                                   "initialisations, each on batches of its own) and take every reading as the "
                                   "median over them: steadier over seeds, N times the cost (BENCHMARKS.md)",
                                   group=RECIPE, metavar="N")
    lr_find_warmup: int | None = setting(None, "before each range test, train N steps at --lr-find-warmup-lr (on "
                                         "batches of their own; the weights are put back after the test): steadier "
                                         "readings at both widths, at a lower level (BENCHMARKS.md); 0: none; default: "
                                         "the --lr-rule's own (20 for warm80x16 and warm80x12, none for the others)", group=RECIPE,
                                         metavar="N")
    lr_find_warmup_lr: float = setting(WARMUP_LR, "the constant LR of the range test's warm-up", group=RECIPE,
                                       metavar="LR")
    lr_rule: str = setting(DEFAULT_RULE, LR_RULE_HELP, group=RECIPE, choices=LRMAX_RULES)
    width: int = setting(64, "base channel count; 64 is the assignment's network (smaller only for quick tests)",
                         group=RECIPE, metavar="N")
    # run
    seed: int = setting(0, "initial weights, shuffling and augmentation; a fixed seed gives the same numbers on CPU",
                        group=RUN, metavar="N")
    device: str = setting("auto", "auto (CUDA when available), cpu or cuda", group=RUN, choices=DEVICES)
    output_dir: str | None = setting(None, "where outputs go (report.html, summary.json, checkpoints, ...); default "
                                     "runs/<timestamp>", group=RUN, metavar="DIR")
    target: float = setting(0.90, "test accuracy goal, a fraction", group=RUN, metavar="F")
    target_epoch: int = setting(19, "the goal must hold from this epoch on", group=RUN, metavar="N")
    progress: bool = setting(True, "print one line per epoch instead of a progress bar (the default whenever stdout "
                             "or stderr is not a terminal: a log file, CI, nohup)", group=RUN)
    nproc_per_node: int | None = setting(None, "spawn N processes (one per GPU; on CPU, gloo) through "
                                         "idist.Parallel; --batch-size stays the global batch. Under torchrun, leave "
                                         "this out", group=RUN, metavar="N")
    # speed
    amp: bool | None = setting(None, "bf16 autocast; default: on for CUDA, and on a CPU with native bf16 (AVX-512 "
                               "BF16 or AMX); off elsewhere (emulated bf16 is about 10x slower than fp32)", group=SPEED)
    channels_last: bool | None = setting(None, "channels_last (NHWC) memory layout for the model and batches; "
                                         "default: on for CUDA and CPU (faster convolutions)", group=SPEED)
    compile: bool = setting(False, "torch.compile the model (slow first epoch)", group=SPEED)
    nan_check_every: int = setting(0, "stop on a NaN/inf loss, checked at each epoch end and, if N > 0, every N "
                                   "iterations", group=SPEED, metavar="N")
    tta: bool = setting(False, "also report test_accuracy_tta: softmax averaged over each test image and its mirror "
                        "(a metric of its own; the plain test accuracy and the model choice are unchanged)",
                        group=SPEED)
    # outputs
    resume: str | None = setting(None, "continue a run: 'auto' = the newest checkpoint in --output-dir (none yet: "
                                 "start a new run; a finished run: print its result and exit 0), or a checkpoint "
                                 "file", group=OUTPUTS, metavar="auto|PATH")
    checkpoint_every: int = setting(0, "also save a training checkpoint every N iterations (0: at epoch ends only)",
                                    group=OUTPUTS, metavar="N")
    keep_checkpoints: int = setting(2, "training checkpoints kept in OUTPUT/checkpoints (the best model is kept "
                                    "apart)", group=OUTPUTS, metavar="K")
    dump_every: int = setting(1, "write OUTPUT/misclassified/epoch_XX.png/.csv every N epochs (and after the last)",
                              group=OUTPUTS, metavar="N")
    misclassified_count: int = setting(20, "highest-loss mistakes shown in the misclassified grid", group=OUTPUTS,
                                       metavar="N")
    handlers: list[str] = setting(help="call FUNCTION(run) from MODULE (package.module or path/to/file.py) after the "
                                  "run is built and before training; repeatable. See examples/", group=OUTPUTS,
                                  metavar="MODULE:FUNCTION", flag="handler", factory=list)
    # reliability
    overwrite: bool = setting(False, "replace a run already in --output-dir: the files and folders a run writes there "
                              "(checkpoints/, tensorboard/, misclassified/, plots/, summary.json, report.html, ...; "
                              "nothing else) are deleted once every input check has passed, just before the new run "
                              "writes", group=RELIABILITY)
    debug: bool = setting(False, "print the traceback of an error too", group=RELIABILITY)

    def __post_init__(self):
        object.__setattr__(self, "augment", AUGMENT_ALIASES.get(self.augment, self.augment))

    @property
    def resolved_peak_epoch(self) -> float:
        return self.peak_epoch if self.peak_epoch is not None else self.epochs * PEAK_FRACTION

    def resolved(self) -> "Config":
        """The settings a run uses, validated: a default --output-dir becomes runs/<timestamp> (decided here, once)."""
        self.validate()
        if self.output_dir is not None:
            return self
        return replace(self, output_dir=str(Path("runs") / time.strftime("%Y%m%d-%H%M%S")))

    def validate(self) -> "Config":
        """Raise UserError for a value no run can use; returns self."""
        for check in (_check_sizes, _check_lrs, _check_choices, _check_outputs):
            check(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _bad(flag: str, why: str):
    raise UserError(f"{flag}: {why}")


def _check_sizes(c: Config) -> None:
    if c.batch_size < 1:
        _bad("--batch-size", f"{c.batch_size} must be at least 1")
    if c.epochs < 1:
        _bad("--epochs", f"{c.epochs} must be at least 1")
    if c.subset is not None and c.subset < 5:
        _bad("--subset", f"{c.subset} must be at least 5 (it keeps N train and N//5 test images)")
    if not 0 <= c.ema < 1:
        _bad("--ema", f"{c.ema} is the share of the new weights in each update: give a value in [0, 1), e.g. 0.01 "
                      f"(0: no average)")
    if not 0 <= c.label_smoothing < 1:
        _bad("--label-smoothing", f"{c.label_smoothing} is a share of the target spread over all classes: give a "
                                  f"value in [0, 1), e.g. 0.1")
    if not 0 <= c.val_split < 1:
        _bad("--val-split", f"{c.val_split} is a share of the training images: give a value in [0, 1), e.g. 0.1")
    if c.workers < 0:
        _bad("--workers", f"{c.workers} must be 0 or more")
    if c.width < 1:
        _bad("--width", f"{c.width} must be at least 1")
    if not 0 < c.resolved_peak_epoch < c.epochs:
        _bad("--peak-epoch", f"{c.resolved_peak_epoch} must be inside (0, --epochs={c.epochs})")
    if c.nproc_per_node is not None and c.nproc_per_node < 1:
        _bad("--nproc-per-node", f"{c.nproc_per_node} must be at least 1 (leave it out for one process)")
    if c.nan_check_every < 0:
        _bad("--nan-check-every", f"{c.nan_check_every} must be 0 (once per epoch) or more")


def _check_lrs(c: Config) -> None:
    for flag, value in (("--lr-min", c.lr_min), ("--lr-max", c.lr_max), ("--lr-find-start", c.lr_find_start),
                        ("--lr-find-end", c.lr_find_end)):
        if value is not None and not value > 0:
            _bad(flag, f"{value} must be > 0")
    if c.lr_min is not None and c.lr_max is not None and c.lr_min >= c.lr_max:
        _bad("--lr-min", f"{c.lr_min} must be below --lr-max {c.lr_max}")
    if c.lr_find_start >= c.lr_find_end:
        _bad("--lr-find-start", f"{c.lr_find_start} must be below --lr-find-end {c.lr_find_end}")
    if c.lr_find_iters < 3:
        _bad("--lr-find-iters", f"{c.lr_find_iters} must be at least 3")
    if c.lr_find_repeats < 1:
        _bad("--lr-find-repeats", f"{c.lr_find_repeats} must be at least 1")
    if c.lr_find_warmup is not None and c.lr_find_warmup < 0:
        _bad("--lr-find-warmup", f"{c.lr_find_warmup} must be 0 (no warm-up) or more steps")
    if not c.lr_find_warmup_lr > 0:
        _bad("--lr-find-warmup-lr", f"{c.lr_find_warmup_lr} must be > 0")


def _check_choices(c: Config) -> None:
    if c.dataset not in DATASETS:
        _bad("--dataset", f"unknown dataset {c.dataset!r}: choose one of {', '.join(DATASETS)}")
    if c.lr_rule not in LRMAX_RULES:
        _bad("--lr-rule", f"unknown rule {c.lr_rule!r}: choose {', '.join(LRMAX_RULES)}")
    if c.device not in DEVICES:
        _bad("--device", f"unknown device {c.device!r}: choose {', '.join(DEVICES)}")
    if c.augment not in AUGMENT_PATHS:
        _bad("--augment", f"unknown data path {c.augment!r}: choose {' or '.join(AUGMENT_PATHS)}")
    if not 0 < c.target <= 1:
        _bad("--target", f"{c.target} is an accuracy fraction: give a value in (0, 1], e.g. 0.90")
    if c.target_epoch < 1:
        _bad("--target-epoch", f"{c.target_epoch} must be at least 1")


def _check_outputs(c: Config) -> None:
    if c.resume is not None and c.resume != "auto" and not Path(c.resume).is_file():
        _bad("--resume", f"{c.resume} is not a file: give a checkpoint .pt file, or 'auto' for the newest in "
                         f"--output-dir")
    if c.resume == "auto" and c.output_dir is None:
        _bad("--resume", "auto looks for checkpoints in --output-dir: pass the --output-dir of the run to continue")
    if c.overwrite and c.resume is not None:
        _bad("--overwrite", "starts a new run over the earlier one, --resume continues it: pass only one")
    if c.checkpoint_every < 0:
        _bad("--checkpoint-every", f"{c.checkpoint_every} must be 0 (epoch ends only) or more")
    if c.keep_checkpoints < 1:
        _bad("--keep-checkpoints", f"{c.keep_checkpoints} must be at least 1")
    if c.dump_every < 1:
        _bad("--dump-every", f"{c.dump_every} must be at least 1")
    if c.misclassified_count < 1:
        _bad("--misclassified-count", f"{c.misclassified_count} must be at least 1")


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
