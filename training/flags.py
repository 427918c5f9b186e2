"""The training command line: `python run.py [flags]` (and `--config FILE.yaml`) -> Config.

Flags and their help; the defaults are Config's, so `python run.py` with no flag is the assignment.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from core.cli import HelpFormatter, OneLineParser
from engine.config import AUGMENT_ALIASES, AUGMENT_PATHS, Config
from engine.lr_finder import MAX_RATIO, MIN_RATIO


def parse_args(argv=None) -> Config:
    """Flags -> Config. With --config FILE.yaml the file's settings replace the defaults, and flags given
    on the command line override the file. UserError for a bad file."""
    from engine.config import config_file_values

    d = Config()
    p = OneLineParser(description="Train the ERA S10 custom ResNet on CIFAR-10 (defaults = the assignment). "
                                  "After training: python run.py predict MODEL.pt IMAGES... and python run.py "
                                  "export MODEL.pt --onnx OUT.onnx (each with --help).",
                      formatter_class=HelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml",
                   help="read settings from a YAML file (keys = the long flags, e.g. batch_size: 512); flags "
                        "on the command line override it. Every run writes its settings to OUTPUT/config.yaml")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["cifar10", "folder", "fake"], default=d.dataset,
                   help="cifar10 (downloads if missing), folder (DIR/train and DIR/test, one subfolder per "
                        "class, 32x32 images) or fake (random, for smoke runs and benchmarks)")
    g.add_argument("--data-dir", default=d.data_dir, metavar="DIR",
                   help="dataset location; for cifar10 defaults to $ERA_S10_DATA or ~/.cache/era_s10")
    g.add_argument("--subset", type=int, default=d.subset, metavar="N",
                   help="a class-stratified sample of N training and N//5 test images (drawn with --data-seed)")
    g.add_argument("--val-split", type=float, default=d.val_split, metavar="F",
                   help="hold out this share of the training images (stratified, drawn with --data-seed) as a "
                        "validation set, evaluated every epoch beside the test set; tune on it, not on test")
    g.add_argument("--data-seed", type=int, default=d.data_seed, metavar="N",
                   help="seed of the --subset sample and the --val-split; kept apart from --seed so runs "
                        "with different seeds see the same images")
    g.add_argument("--resize", action="store_true",
                   help="folder: resize images that are not 32x32 as they load (otherwise they are refused)")
    g.add_argument("--cache-dir", default=d.cache_dir, metavar="DIR",
                   help="folder: where decoded images are cached; default $ERA_S10_CACHE or "
                        "~/.cache/era_s10/folders")
    g.add_argument("--no-cache", dest="cache", action="store_false",
                   help="folder: decode every image on every run, and write no cache")
    g.add_argument("--workers", type=int, default=d.workers, metavar="N",
                   help="DataLoader worker processes of the albumentations data path (--augment)")
    g.add_argument("--augment", choices=[*AUGMENT_PATHS, *AUGMENT_ALIASES], default=d.augment,
                   metavar="{" + ",".join(AUGMENT_PATHS) + "}",
                   help="data path, the same augmentation either way: batched (the dataset on the training "
                        "device, each batch augmented by a few tensor ops; fastest on CUDA and CPU alike) or "
                        "albumentations (image by image in --workers DataLoader processes). Older names: "
                        "gpu = auto = batched, cpu = albumentations")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help="length of the One Cycle run")
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help="images per step (the global batch when several processes train)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay (L2)")
    g.add_argument("--peak-epoch", type=float, default=d.peak_epoch,
                   help="epoch at whose end the LR peaks (fractional allowed); default: 5/24 of --epochs")
    g.add_argument("--lr-min", type=float, default=d.lr_min,
                   help="LRMIN; default: from the LR range test (where the loss starts to fall, kept between "
                        f"LRMAX/{MAX_RATIO:g} and LRMAX/{MIN_RATIO:g})")
    g.add_argument("--lr-max", type=float, default=d.lr_max, help="LRMAX; default: from the LR range test")
    g.add_argument("--lr-find-only", action="store_true",
                   help="run only the LR range test: print LRMIN/LRMAX and every reading of the curve, save "
                        "plots/lr_finder.png and lr_finder.json, exit")
    g.add_argument("--lr-find-start", type=float, default=d.lr_find_start, help="range test start LR")
    g.add_argument("--lr-find-end", type=float, default=d.lr_find_end, help="range test end LR")
    g.add_argument("--lr-find-iters", type=int, default=d.lr_find_iters, help="range test iterations")
    g.add_argument("--lr-rule", choices=["steepest", "valley", "minimum"], default=d.lr_rule,
                   help="which reading of the range-test curve sets LRMAX: steepest fall, fastai's valley, or "
                        "the minimum's LR / 10 (all three are shown in plots/lr_finder.png and lr_finder.json)")
    g.add_argument("--width", type=int, default=d.width, metavar="N",
                   help="base channel count; 64 is the assignment's network (smaller only for quick tests)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=d.seed, metavar="N",
                   help="initial weights, shuffling and augmentation; a fixed seed gives the same numbers on CPU")
    g.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu or cuda")
    g.add_argument("--output-dir", default=d.output_dir, metavar="DIR",
                   help="where outputs go (report.html, summary.json, checkpoints, ...); default runs/<timestamp>")
    g.add_argument("--target", type=float, default=d.target, help="test accuracy goal, a fraction")
    g.add_argument("--target-epoch", type=int, default=d.target_epoch,
                   help="the goal must hold from this epoch on")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="print one line per epoch instead of a progress bar (the default whenever stdout or "
                        "stderr is not a terminal: a log file, CI, nohup)")
    g.add_argument("--nproc-per-node", type=int, default=d.nproc_per_node, metavar="N",
                   help="spawn N processes (one per GPU; on CPU, gloo) through idist.Parallel; "
                        "--batch-size stays the global batch. Under torchrun, leave this out")
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp,
                   help="bf16 autocast; default: on for CUDA, and on a CPU with native bf16 (AVX-512 BF16 or "
                        "AMX); off elsewhere (emulated bf16 is about 10x slower than fp32)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="channels_last (NHWC) memory layout for the model and batches; default: on for CUDA "
                        "and CPU (faster convolutions)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first epoch)")
    g.add_argument("--nan-check-every", type=int, default=d.nan_check_every, metavar="N",
                   help="stop on a NaN/inf loss, checked at each epoch end and, if N > 0, every N iterations")
    g.add_argument("--tta", action="store_true",
                   help="also report test_accuracy_tta: softmax averaged over each test image and its mirror "
                        "(a metric of its own; the plain test accuracy and the model choice are unchanged)")
    g = p.add_argument_group("checkpoints, dumps and custom handlers")
    g.add_argument("--resume", default=d.resume, metavar="auto|PATH",
                   help="continue a run: 'auto' = the newest checkpoint in --output-dir (none yet: start a new "
                        "run; a finished run: print its result and exit 0), or a checkpoint file")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="N",
                   help="also save a training checkpoint every N iterations (0: at epoch ends only)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, metavar="K",
                   help="training checkpoints kept in OUTPUT/checkpoints (the best model is kept apart)")
    g.add_argument("--dump-every", type=int, default=d.dump_every, metavar="N",
                   help="write OUTPUT/misclassified/epoch_XX.png/.csv every N epochs (and after the last)")
    g.add_argument("--misclassified-count", type=int, default=d.misclassified_count, metavar="N",
                   help="highest-loss mistakes shown in the misclassified grid")
    g.add_argument("--handler", dest="handlers", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="call FUNCTION(run) from MODULE (package.module or path/to/file.py) after the run is "
                        "built and before training; repeatable. See examples/")
    g = p.add_argument_group("reliability")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --output-dir: the files and folders a run writes there "
                        "(checkpoints/, tensorboard/, misclassified/, plots/, summary.json, report.html, ...; "
                        "nothing else) are deleted once every input check has passed, just before the new run "
                        "writes")
    g.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    pre, _ = p.parse_known_args(argv)
    if pre.config is not None:
        p.set_defaults(**config_file_values(pre.config))
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})
