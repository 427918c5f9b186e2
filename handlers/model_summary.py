"""The model summary (torchinfo): layers, output shapes, parameters and multiply-adds, at the start of a run.

Printed once (rank 0) and written to OUTPUT/model_summary.txt. torchinfo runs one forward pass of a
single 32x32 image of zeros in eval mode: BatchNorm statistics are not updated, no random number is
drawn (so a seeded run trains exactly as without it), and the model's train/eval mode is restored.
"""
from __future__ import annotations

import torch
from ignite.engine import Events
from torch import nn

from core.distributed import unwrap
from run_folder.files import write_atomic

FILE = "model_summary.txt"


def model_summary(model: nn.Module, input_size: int = 32):
    """torchinfo's ModelStatistics of the plain model on its own device (torchinfo would move it to CUDA)."""
    import torchinfo

    device = next(model.parameters()).device
    return torchinfo.summary(model, input_data=torch.zeros(1, 3, input_size, input_size, device=device),
                             col_names=("output_size", "num_params", "mult_adds"), depth=4, col_width=16,
                             device=device, mode="eval", verbose=0)


def summary_text(stats) -> str:
    # torchinfo prints the multiply-adds in a unit of its choosing; the exact count is clearer for a 32x32 image.
    return f"{stats}\nMultiply-adds per image: {stats.total_mult_adds:,}\n"


def attach_model_summary(run) -> None:
    """At the trainer's STARTED (rank 0; again when resumed): print the summary, write OUTPUT/model_summary.txt."""
    def show(_) -> None:
        text = summary_text(model_summary(unwrap(run.model)))
        write_atomic(run.output_dir / FILE, text)
        print(text, flush=True)

    run.trainer.add_event_handler(Events.STARTED, show)
