"""The handlers every run gets: TensorBoard, confusion matrix, misclassified dump (and its Grad-CAM), checkpoints
(and resume), report."""
from __future__ import annotations

import ignite.distributed as idist

from handlers.checkpoint import attach_checkpoints
from run_folder.checkpoint_files import CHECKPOINT_DIR
from handlers.confusion import ConfusionTracker
from handlers.cpu_time import CpuTimeEstimate
from handlers.gradcam import GradCamGrid
from handlers.interpret import Interpretation
from handlers.misclassified import MisclassifiedDump
from handlers.model_summary import attach_model_summary
from run_folder.checkpoint_files import ResumePoint
from training.resume import align_train_loader, load_resume_point
from handlers.report import RunReport
from handlers.tensorboard import TensorBoardWriter


def attach_default_handlers(run, resume: ResumePoint | None = None) -> None:
    """Attach after the run's metrics, evaluation, history and outputs; then load `resume` into everything.

    Only rank 0 writes files; the other ranks attach what they must take part in (the metrics'
    all-reduce) and load the checkpoint.
    """
    cfg = run.config
    write = idist.get_rank() == 0
    if write:
        attach_model_summary(run)  # torchinfo table, printed and in OUTPUT/model_summary.txt
        if run.device.type == "cpu":  # a long CPU run says how long, after its first iterations
            CpuTimeEstimate(cfg.epochs, cfg.width).attach(run.trainer)
        run.tensorboard = TensorBoardWriter(run).attach()
    tracker = ConfusionTracker(run, run.tensorboard).attach(write)
    if write:  # most confused pairs, per-class precision/recall/F1, from the tracker's matrix
        Interpretation(run, tracker, run.tensorboard).attach()
    explain = GradCamGrid.if_available(run, run.tensorboard) if write else None  # [dist] rank 0, unwrapped model
    MisclassifiedDump(run, cfg.dump_every, cfg.misclassified_count, run.tensorboard, write, explain).attach()
    objects = attach_checkpoints(run, cfg.keep_checkpoints, cfg.checkpoint_every, write)
    if write:
        run.interrupt.attach_checkpoint(run.model, objects["checkpointer"])
        run.report = RunReport(run).attach()  # last: its epoch handler reads what the others wrote
    if resume is not None:
        load_resume_point(objects, resume, run.output_dir / CHECKPOINT_DIR)
        align_train_loader(run, resume)
        run.summary_extra["resumed_from"] = str(resume.path)
