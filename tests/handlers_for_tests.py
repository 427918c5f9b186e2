"""Custom handlers the tests pass with --handler."""
from __future__ import annotations

import json

from ignite.engine import Events

NOT_A_FUNCTION = 42


def count_events(run) -> None:
    """Count the trainer's iterations and epochs; write them to OUTPUT/handler_counts.json at the end."""
    counts = {"iterations": 0, "epochs": 0}

    def bump(key):
        counts[key] += 1

    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bump("iterations"))
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: bump("epochs"))
    run.trainer.add_event_handler(
        Events.COMPLETED, lambda _: (run.output_dir / "handler_counts.json").write_text(json.dumps(counts)))


def stop_after_first_epoch(run) -> None:
    """Stop the run at the end of epoch 1 as an interruption would: no COMPLETED event, summary incomplete."""
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate(skip_completed=True))


def record_iterations(run) -> None:
    """Append each finished iteration to OUTPUT/progress.txt (after that iteration's checkpoint, if any)."""
    path = run.output_dir / "progress.txt"

    def record(engine):
        with open(path, "a") as f:
            f.write(f"{engine.state.iteration}\n")

    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, record)


def signal_self(run) -> None:
    """Send this process a signal once iteration $ERA_TEST_SIGNAL_AT has finished. $ERA_TEST_SIGNAL names it: INT
    (Ctrl-C) or KILL (kill -9). $ERA_TEST_SIGNAL_DELAY (default 0: at once, from the handler) delays it by that
    many times the duration of iteration $ERA_TEST_SIGNAL_AT, from a timer thread, so it lands at a random moment
    of what comes next: the next iteration, a checkpoint being written, an evaluation.

    Sent from inside, the signal arrives at a known point of the run however fast the machine is; a test that
    signals from outside after watching progress races the run and can miss it on a fast machine."""
    import os
    import signal
    import threading
    import time

    at, delay = int(os.environ["ERA_TEST_SIGNAL_AT"]), float(os.environ.get("ERA_TEST_SIGNAL_DELAY", "0"))
    signum = getattr(signal, "SIG" + os.environ["ERA_TEST_SIGNAL"])
    started = {}

    def start_clock(_):
        started["at"] = time.perf_counter()

    def send(_):
        if delay:  # a non-daemon timer: a run that ends first is still killed before the interpreter exits
            threading.Timer(delay * (time.perf_counter() - started["at"]), os.kill, (os.getpid(), signum)).start()
        else:
            os.kill(os.getpid(), signum)

    run.trainer.add_event_handler(Events.ITERATION_STARTED(once=at), start_clock)
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=at), send)


def explode_lr_in_epoch_2(run) -> None:
    """From epoch 2 on, set an infinite LR (after the scheduler set its own): the weights become NaN/inf."""
    def explode(engine):
        if engine.state.epoch >= 2:
            for group in run.optimizer.param_groups:
                group["lr"] = float("inf")

    run.trainer.add_event_handler(Events.ITERATION_STARTED, explode)


def die_before_deleting_a_checkpoint(run) -> None:
    """Kill the process (exit 9, no cleanup) the first time a training checkpoint is to be deleted: right
    after a new one has been renamed into place, before SafeDiskSaver's deferred delete of the oldest."""
    import os

    from ignite.handlers import DiskSaver

    remove = DiskSaver.remove

    def die_instead(self, filename):
        if filename.startswith("checkpoint_"):
            os._exit(9)
        remove(self, filename)  # the best model's own replacement goes on as usual

    DiskSaver.remove = die_instead


def keep_first_epoch_report(run) -> None:
    """Copy report.html and summary.json as they are after epoch 1 (mid-run) to *_epoch1 files."""
    import shutil

    def keep(_):
        shutil.copy(run.output_dir / "report.html", run.output_dir / "report_epoch1.html")
        shutil.copy(run.output_dir / "summary.json", run.output_dir / "summary_epoch1.json")

    run.trainer.add_event_handler(Events.EPOCH_STARTED(once=2), keep)


def early_stop_after_first_epoch(run) -> None:
    """Stop as ignite's EarlyStopping does (trainer.terminate(): COMPLETED still fires), saying why."""
    def stop(engine):
        run.stop_reason = "early stopping (test handler)"
        engine.terminate()

    run.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), stop)


def break_the_report(run) -> None:
    """Make every rendering of report.html fail."""
    def broken(*args):
        raise RuntimeError("template exploded")

    run.report.page.context = broken


def fake_gradcam(run) -> None:
    """Stand in for a Grad-CAM handler: misclassified/gradcam_epoch_XX.png (a copy of that epoch's grid)."""
    import shutil

    def write(engine):
        folder = run.output_dir / "misclassified"
        shutil.copy(folder / f"epoch_{engine.state.epoch:02d}.png", folder / f"gradcam_epoch_{engine.state.epoch:02d}.png")

    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, write)


def fail_everywhere_rank0_last(run) -> None:
    """The same UserError on every process, rank 0's 3 s after the others': the launcher stops every process
    when one fails, so rank 0's line must not be lost to a rank that left first (tests/test_distributed.py)."""
    import time

    import ignite.distributed as idist

    from core.errors import UserError

    if idist.get_rank() == 0:
        time.sleep(3)
    raise UserError("the handler refuses (on every process)")
