#!/usr/bin/env python
"""Train the ERA Session 10 ResNet on CIFAR-10 with the assignment's recipe: `python run.py`.
After training: `python run.py predict MODEL.pt IMAGES...` and `python run.py export MODEL.pt --onnx OUT.onnx`.

parse flags -> Config -> build the run (range test first) -> train -> table and verdict.
Several processes: `python run.py --nproc-per-node N` or `torchrun --standalone --nproc_per_node=N run.py`
(see README); every process runs `run_process`, rank 0 alone prints and writes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from dataclasses import fields
from pathlib import Path

from engine.config import Config
from core.errors import UserError

# The exit status of a UserError, also of a spawned process that stopped on one (core.distributed).
USER_ERROR_EXIT = 2
SIGINT_EXIT = 130  # the shell's code for a process ended by Ctrl-C (handlers.interrupt uses it too)


def report_user_error(error: UserError, debug: bool = False) -> int:
    """The one `error: ...` line (with --debug, the traceback first); returns the exit code.

    Under several processes only rank 0 prints (they all hit the same). RunInterrupted (Ctrl-C,
    checkpoint saved) has its own label and exit code 130.
    """
    from core.distributed import launch_rank

    if launch_rank() == 0:
        if debug:
            error.__suppress_context__ = False  # show the cause that `raise ... from None` hides on one line
            traceback.print_exception(error)
        print(f"{getattr(error, 'label', 'error')}: {error}", file=sys.stderr, flush=True)
    return getattr(error, "exit_code", USER_ERROR_EXIT)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except for switches ("--no-progress ... (default: True)" reads as if it were on)
    and for None, which means "chosen at run time" and is spelled out in those flags' own help."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str):
        # [dist] under torchrun every process parses the same flags: rank 0 alone says so.
        self.exit(USER_ERROR_EXIT,
                  f"error: {message} (see python run.py --help)\n" if os.environ.get("RANK", "0") == "0" else None)


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
                   help="DataLoader worker processes of the cpu data path")
    g.add_argument("--augment", choices=["auto", "gpu", "cpu"], default=d.augment,
                   help="data path: gpu (dataset on the device, batched augmentation there; also runs on "
                        "CPU), cpu (albumentations in DataLoader workers); auto: gpu on CUDA, else cpu")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help="length of the One Cycle run")
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help="images per step (the global batch when several processes train)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay (L2)")
    g.add_argument("--peak-epoch", type=float, default=d.peak_epoch,
                   help="epoch at whose end the LR peaks (fractional allowed); default: 5/24 of --epochs")
    g.add_argument("--lr-min", type=float, default=d.lr_min, help="LRMIN; default: from the LR range test")
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
                   help="bf16 autocast; default: on for CUDA; never used on CPU")
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


def lr_find_only(config: Config) -> None:
    from training.builder import build_components, find_lr
    from core.distributed import is_main_process
    from handlers.run_dir import check_output_dir, prepare_output_dir

    check_output_dir(config, config.resolved_output_dir())
    components = build_components(config)
    output_dir = config.resolved_output_dir()  # [dist] rank 0's: build_components shared it
    if is_main_process():
        prepare_output_dir(config, output_dir)
    result = find_lr(components, output_dir)  # [dist] on every rank
    if is_main_process():
        readings = "  ".join(f"{name} {'-' if lr is None else f'{lr:.3g}'}" for name, lr in result.suggestions.items())
        print(f"LRMIN {result.lr_min:.4g}  LRMAX {result.lr_max:.4g} ({result.rule})  "
              f"(plot: {output_dir / 'plots' / 'lr_finder.png'})\nreadings of the curve: {readings}")


def train(config: Config) -> None:
    import ignite.distributed as idist

    from training.builder import build_run
    from core.distributed import is_main_process
    from handlers.custom import load_handler
    from handlers.outputs import format_table, verdict

    # Resolved before the build, so a bad --handler fails before any training (or range test) runs.
    custom_handlers = [load_handler(spec) for spec in config.handlers]
    run = build_run(config)
    for attach in custom_handlers:
        attach(run)
    processes = f" x{idist.get_world_size()} ({idist.backend()})" if idist.get_world_size() > 1 else ""
    if is_main_process():
        print(f"LRMIN {run.lr_min:.4g}  LRMAX {run.lr_max:.4g}  params {run.params:,}  device {run.device}"
              f"{processes}  output {run.output_dir}", flush=True)
    summary = run.fit()
    if is_main_process():
        print(format_table(summary["history"]))
        print(verdict(summary))


def report_if_complete(config: Config) -> bool:
    """With --resume on a run that already trained every epoch: print its result and return True.

    Nothing is built, loaded beyond the checkpoint, or written. Under torchrun every process checks
    (they agree) and rank 0 prints.
    """
    from core.distributed import launch_rank
    from handlers.outputs import build_summary, verdict
    from handlers.resume import finish_complete_run, finished_run

    point = finished_run(config)
    if point is None:
        return False
    run_folder = point.path.parent.parent  # OUTPUT/checkpoints/checkpoint_N.pt
    tidied = []
    if launch_rank() == 0 and (config.output_dir is None or Path(config.output_dir).resolve() == run_folder.resolve()):
        tidied = finish_complete_run(point, run_folder)
    if launch_rank() == 0:
        rows = point.state["history"]["rows"]
        saved = point.state["run_state"]
        summary = build_summary(config=saved["config"], rows=rows, lr_min=saved["lr_min"], lr_max=saved["lr_max"],
                                params=0, device="", train_seconds=saved["train_seconds"], completed=True)
        print(f"already complete: {point.path} is the end of the run (all {len(rows)} epochs trained); "
              f"final test accuracy {summary['final_test_accuracy']:.2%}, best {summary['best_test_accuracy']:.2%}; "
              f"{verdict(summary)}. " + ("Nothing to do: no file was changed." if not tidied else
                                          "Nothing to train; the folder was tidied (see the warnings above)."),
              flush=True)
    return True


def configure_logging(debug: bool = False) -> None:
    from core.distributed import launch_rank

    # [dist] ranks other than 0 report only warnings, so a log line appears once
    level = logging.INFO if launch_rank() == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)  # its per-epoch INFO lines duplicate our table
    # ignite's setup_logger keeps a logger that already exists: these then log only warnings
    for name in ("ignite.distributed.launcher.Parallel", "ignite.distributed.auto.auto_dataloader",
                 "ignite.distributed.auto.auto_model"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # [dist] when one spawned process stops on a UserError, torch says it terminates the others: noise
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    if not debug:  # an Engine logs every exception before raising it: an error would be two lines
        logging.getLogger("ignite.engine.engine").setLevel(logging.CRITICAL)


def run_process(local_rank: int, config: Config) -> None:
    """One process's whole run: training, or the range test alone (local_rank: idist.Parallel's argument)."""
    import ignite.distributed as idist
    import torch

    if idist.get_world_size() > 1 and idist.backend() == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        # [dist] N CPU processes share the cores (torchrun sets OMP_NUM_THREADS=1 itself)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // idist.get_nproc_per_node()))
    lr_find_only(config) if config.lr_find_only else train(config)
    if idist.get_world_size() > 1:
        # [dist] Leave together: a process that tears down the process group while another is still
        # finishing (rank 0 writes the final outputs) can abort in gloo's teardown.
        idist.barrier()


def run_spawned_process(local_rank: int, config: Config) -> None:
    """[dist] run_process in a process idist.Parallel spawned: a UserError becomes rank 0's one line
    and exit status USER_ERROR_EXIT, which the launcher passes on (a traceback would only repeat it)."""
    configure_logging(config.debug)
    try:
        run_process(local_rank, config)
    except UserError as e:
        sys.exit(report_user_error(e, config.debug))


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if args and args[0] in ("predict", "export"):  # a trained model's uses (inference/cli.py); else training
        from inference.cli import main as use_trained_model
        return use_trained_model(args)
    try:
        config = parse_args(argv)
    except UserError as e:  # a bad --config file
        return report_user_error(e, debug="--debug" in (sys.argv[1:] if argv is None else argv))
    configure_logging(config.debug)
    try:
        import ignite.distributed as idist
        from torch.multiprocessing import ProcessExitedException

        from training.builder import resolve_device
        from core.distributed import plan_launch

        config.validate()
        if config.resume is not None and report_if_complete(config):
            return 0  # a restart loop's last call: the run had finished; nothing was changed
        plan = plan_launch(resolve_device(config.device), config.nproc_per_node, config.batch_size)
        config.resolved_output_dir()  # the launcher fixes a default timestamped directory for all processes
        spawn = plan.nproc_per_node is not None
        try:
            with idist.Parallel(backend=plan.backend, nproc_per_node=plan.nproc_per_node,
                                master_port=plan.master_port) as parallel:
                parallel.run(run_spawned_process if spawn else run_process, config)
        except ProcessExitedException as e:
            if e.exit_code in (USER_ERROR_EXIT, SIGINT_EXIT):  # a spawned process has printed its one line
                return e.exit_code
            raise
    except UserError as e:
        return report_user_error(e, config.debug)
    except KeyboardInterrupt:  # Ctrl-C outside training (data loading, range test) or a second one
        if config.debug:
            traceback.print_exc()
        print("interrupted: stopped by Ctrl-C (no checkpoint saved by this command)", file=sys.stderr)
        return SIGINT_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
