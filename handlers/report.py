"""report.html through the run: rewritten after every epoch and, final, however the run ends.

The page itself is run_folder/report_page.py. Only rank 0 attaches it (it reads what rank 0 writes). A
failure to render is logged as a warning and never stops training.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ignite.engine import Engine, Events

from handlers.interrupt import RunInterrupted
from run_folder.report_page import ReportPage

log = logging.getLogger(__name__)


def stop_reason(run, error: BaseException | None) -> str:
    """Why a run ended before its last epoch, in a phrase for the verdict."""
    if isinstance(error, RunInterrupted):
        saved = run.interrupt.last_checkpoint
        where = f"a checkpoint was saved ({os.path.relpath(saved, run.output_dir)})" if saved else \
            "no checkpoint could be saved"
        return (f"Ctrl-C; {where}: continue with python run.py --resume auto --output-dir {run.output_dir} "
                f"and this run's other flags")
    if isinstance(error, KeyboardInterrupt):
        return "Ctrl-C twice: stopped at once, without saving a checkpoint"
    if error is not None:
        kind = "" if type(error).__name__ == "UserError" else f"{type(error).__name__}: "
        return f"{kind}{error}"
    return run.stop_reason or "a handler stopped the trainer (trainer.terminate())"


class RunReport:
    """Writes OUTPUT/report.html at every epoch end (in progress), at COMPLETED and from Run.fit when the run
    stops otherwise (Ctrl-C, an error). Reads `run.last_summary`, the dict last written to summary.json, so
    the page shows the numbers that file holds."""

    def __init__(self, run):
        self.run = run
        self.page = ReportPage(run)
        self.path = self.page.path
        self.ended: dict | None = None

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
            return self.page.write(self.ended)
        except Exception as e:  # noqa: BLE001 - a report must never stop the training it reports on
            log.warning("could not write %s: %s: %s", self.path, type(e).__name__, e)
            return None

