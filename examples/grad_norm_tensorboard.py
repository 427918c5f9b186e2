"""Log the global gradient norm of every iteration to TensorBoard (tag train/grad_norm).

    python run.py --handler examples.grad_norm_tensorboard:attach

The norm is computed on the device after each step and kept there; one copy per epoch brings the
epoch's values to the host, so the training loop never waits on the device.
"""
from __future__ import annotations

import torch
from ignite.engine import Events


def attach(run) -> None:
    if run.tensorboard is None:  # ranks other than 0 write no logs
        return
    norms: list[torch.Tensor] = []
    parameters = [p for p in run.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def record(_):
        # The train step zeroes gradients at its start, so after it they are this iteration's.
        grads = [p.grad for p in parameters if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def flush(trainer):
        if not norms:
            return
        first = trainer.state.iteration - len(norms) + 1
        for step, value in enumerate(torch.stack(norms).tolist(), start=first):
            run.tensorboard.writer.add_scalar("train/grad_norm", value, step)
        norms.clear()

    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, flush)
    run.trainer.add_event_handler(Events.COMPLETED, flush)  # after a terminate mid-epoch
