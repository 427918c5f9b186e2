#!/usr/bin/env python
"""Train the ERA Session 10 ResNet on CIFAR-10 with the assignment's recipe: `python run.py`.
After training: `python run.py predict MODEL.pt IMAGES...` and `python run.py export MODEL.pt --onnx OUT.onnx`.

parse flags -> Config -> build the run (range test first) -> train -> table and verdict.
Several processes: `python run.py --nproc-per-node N` or `torchrun --standalone --nproc_per_node=N run.py`
(see README); every process runs `run_process`, rank 0 alone prints and writes.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from engine.config import Config
from core.cli import SIGINT_EXIT, USER_ERROR_EXIT, launch_rank, rank0_reports
from core.errors import UserError
from training.flags import parse_args



def report_user_error(error: UserError, debug: bool = False) -> int:
    """The one `error: ...` line (with --debug, the traceback first); returns the exit code.

    Under several processes only rank 0 prints (they all hit the same; core.cli.rank0_reports).
    RunInterrupted (Ctrl-C, checkpoint saved) has its own label and exit code 130.
    """
    line = f"{getattr(error, 'label', 'error')}: {error}"
    exit_code = getattr(error, "exit_code", USER_ERROR_EXIT)
    if exit_code == USER_ERROR_EXIT:
        line = rank0_reports(line)  # [dist] rank 0's; another rank waits for the launcher to stop it
    elif launch_rank() != 0:
        line = None  # [dist] Ctrl-C reaches every process: rank 0 says so
    if line is not None:
        if debug:
            error.__suppress_context__ = False  # show the cause that `raise ... from None` hides on one line
            traceback.print_exception(error)
        print(line, file=sys.stderr, flush=True)
    return exit_code


def lr_find_only(config: Config) -> None:
    from training.components import build_components, find_lr
    from core.distributed import is_main_process
    from run_folder.output_dir import check_output_dir, prepare_output_dir

    check_output_dir(config, Path(config.output_dir))
    components = build_components(config)
    output_dir = Path(components.config.output_dir)  # [dist] rank 0's: build_components shared it
    if is_main_process():
        prepare_output_dir(config, output_dir)
    result = find_lr(components, output_dir)  # [dist] on every rank
    if is_main_process():
        readings = "  ".join(f"{name} {'-' if lr is None else f'{lr:.3g}'}" for name, lr in result.suggestions.items())
        print(f"LRMIN {result.lr_min:.4g}  LRMAX {result.lr_max:.4g} ({result.rule})  "
              f"(plot: {output_dir / 'plots' / 'lr_finder.png'})\nreadings of the curve: {readings}")
        if result.warmup_steps:
            print(f"warm-up before the test: {result.warmup_steps} steps at LR {result.warmup_lr:g}, loss "
                  f"{result.warmup_losses[0]:.3f} -> {result.warmup_losses[-1]:.3f}")
        if result.repeats:
            each = ", ".join("-" if r["suggestions"][result.rule] is None else f"{r['suggestions'][result.rule]:.3g}"
                             for r in result.repeats)
            print(f"{len(result.repeats)} repeats: LRMAX ({result.rule}) {each}; the medians above")


def train(config: Config, resume=None) -> None:
    """Build the run (resume: the checkpoint main() read, or None), attach --handler's, fit, print the table."""
    import ignite.distributed as idist

    from training.builder import build_run
    from core.distributed import is_main_process
    from training.custom import load_handler
    from run_folder.summary import format_table, verdict_line

    # Resolved before the build, so a bad --handler fails before any training (or range test) runs.
    custom_handlers = [load_handler(spec) for spec in config.handlers]
    run = build_run(config, resume)
    for attach in custom_handlers:
        attach(run)
    processes = f" x{idist.get_world_size()} ({idist.backend()})" if idist.get_world_size() > 1 else ""
    if is_main_process():
        print(f"LRMIN {run.lr_min:.4g}  LRMAX {run.lr_max:.4g}  params {run.params:,}  device {run.device} "
              f"({run.speed.describe()}){processes}  output {run.output_dir}", flush=True)
    summary = run.fit()
    if is_main_process():
        print(format_table(summary["history"]))
        print(verdict_line(summary))


def report_complete_run(config: Config, point) -> None:
    """--resume on a run that already trained every epoch: print its result; build and train nothing.

    A folder left untidy by a kill during the last save is put right (run_folder.checkpoint_files); a
    cleanly finished one is not touched. Under torchrun every process gets here and rank 0 prints.
    """
    from run_folder.checkpoint_files import complete_run_message, finish_complete_run

    if launch_rank() != 0:
        return
    folder = point.path.parent.parent  # OUTPUT/checkpoints/checkpoint_N.pt
    own_folder = Path(config.output_dir).resolve() == folder.resolve()
    tidied = finish_complete_run(point, folder) if own_folder else []
    print(complete_run_message(point, tidied), flush=True)


def configure_logging(debug: bool = False) -> None:
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


def run_process(local_rank: int, config: Config, resume=None) -> None:
    """One process's whole run: training, or the range test alone (local_rank: idist.Parallel's argument)."""
    import ignite.distributed as idist
    import torch

    if idist.get_world_size() > 1 and idist.backend() == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        # [dist] N CPU processes share the cores (torchrun sets OMP_NUM_THREADS=1 itself)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // idist.get_nproc_per_node()))
    lr_find_only(config) if config.lr_find_only else train(config, resume)
    if idist.get_world_size() > 1:
        # [dist] Leave together: a process that tears down the process group while another is still
        # finishing (rank 0 writes the final outputs) can abort in gloo's teardown.
        idist.barrier()


def run_spawned_process(local_rank: int, config: Config, resume=None) -> None:
    """[dist] run_process in a process idist.Parallel spawned: a UserError becomes rank 0's one line
    and exit status USER_ERROR_EXIT, which the launcher passes on (a traceback would only repeat it)."""
    configure_logging(config.debug)
    from core.distributed import leave_spawned_process

    try:
        run_process(local_rank, config, resume)
    except UserError as e:
        leave_spawned_process(report_user_error(e, config.debug))
    leave_spawned_process(0)


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
        config = config.resolved()  # validated; a default --output-dir is fixed here for every process it spawns
        # Imported after the checks above, so a bad flag is answered without loading torch (seconds).
        import ignite.distributed as idist
        from torch.multiprocessing import ProcessExitedException

        from training.components import resolve_device
        from core.distributed import plan_launch

        from run_folder.checkpoint_files import find_resume_point

        resume = find_resume_point(config)  # the one read of the checkpoint --resume names (None: a new run)
        if resume is not None and resume.complete:
            report_complete_run(config, resume)
            return 0  # a restart loop's last call: the run had finished; nothing was trained
        plan = plan_launch(resolve_device(config.device), config.nproc_per_node, config.batch_size)
        spawn = plan.nproc_per_node is not None
        try:
            with idist.Parallel(backend=plan.backend, nproc_per_node=plan.nproc_per_node,
                                master_port=plan.master_port) as parallel:
                parallel.run(run_spawned_process if spawn else run_process, config, resume)
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
