"""The train step, the trainer Engine and the evaluator Engine."""
from __future__ import annotations

from typing import Callable

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss, Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn


def to_device(batch, device: torch.device):
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def create_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                      device: torch.device) -> Callable:
    """forward >> loss >> backward >> optimizer step; returns detached tensors, never a Python float.

    Returning tensors (not `loss.item()`) keeps the host from waiting on the device every iteration;
    metrics accumulate them on the device and are read once per epoch.
    """
    def train_step(engine: Engine, batch) -> dict:
        model.train()
        x, y = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), "y_pred": logits.detach(), "y": y}

    return train_step


def create_trainer(model, optimizer, loss_fn, device) -> Engine:
    """A bare trainer Engine (no handlers): the range test uses one, the run another."""
    return Engine(create_train_step(model, optimizer, loss_fn, device))


def attach_train_metrics(trainer: Engine, loss_fn: Callable, device: torch.device) -> None:
    """Per-epoch train loss and accuracy, accumulated on the device, in trainer.state.metrics."""
    def logits_and_labels(output):
        return output["y_pred"], output["y"]

    Loss(loss_fn, output_transform=logits_and_labels, device=device).attach(trainer, "train_loss")
    Accuracy(output_transform=logits_and_labels, device=device).attach(trainer, "train_accuracy")


def create_evaluator(model: nn.Module, loss_fn: Callable, device: torch.device) -> Engine:
    """An Engine that returns (logits, labels) per batch, with test `accuracy` and `loss` attached."""
    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = to_device(batch, device)
        return model(x), y

    evaluator = Engine(eval_step)
    Accuracy(device=device).attach(evaluator, "accuracy")
    Loss(loss_fn, device=device).attach(evaluator, "loss")
    ExampleCount().attach(evaluator, "examples")
    return evaluator


class ExampleCount(Metric):
    """[dist] How many examples the engine evaluated, summed over all processes.

    Equal to the test set's size when the shards cover it exactly (no image missed or counted twice).
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._count = 0

    @reinit__is_reduced
    def update(self, output) -> None:
        self._count += len(output[1])  # the batch's labels: a shape, no device sync

    @sync_all_reduce("_count")
    def compute(self) -> int:
        return int(self._count)
