"""The train step, the trainer Engine and the evaluator Engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss, Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast is faster than fp32.

    Without them oneDNN emulates bf16: autocast is then about ten times slower than fp32 (an AVX2-only EPYC,
    bench/bench_step.py; figures in BENCHMARKS.md).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's cpuinfo checks (torch >= 2.3)
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


@dataclass(frozen=True)
class StepSpeed:
    """How steps run on the device; the math is the same (up to bf16 rounding under `amp`)."""
    amp: bool = False            # bf16 autocast (no GradScaler needed: bf16 has fp32's range)
    channels_last: bool = False  # NHWC activations: what tensor-core and oneDNN convolutions want
    compile: bool = False        # torch.compile the forward (the first steps pay the compilation)

    @classmethod
    def for_device(cls, device: torch.device, amp: bool | None = None, channels_last: bool | None = None,
                   compile: bool = False) -> "StepSpeed":
        """The fastest correct settings for `device`; an explicit amp / channels_last wins.

        CUDA: bf16 autocast and channels_last. CPU: channels_last (oneDNN's convolutions run faster in
        NHWC), and bf16 autocast only where the CPU has native bf16 (cpu_has_native_bf16); elsewhere fp32.
        Other devices: plain fp32 NCHW.
        """
        fast_amp = {"cuda": True, "cpu": device.type == "cpu" and cpu_has_native_bf16()}.get(device.type, False)
        fast_layout = device.type in ("cuda", "cpu")
        return cls(amp=fast_amp if amp is None else amp,
                   channels_last=fast_layout if channels_last is None else channels_last, compile=compile)

    def describe(self) -> str:
        """e.g. 'bf16 autocast, channels_last': the settings a run prints and reports."""
        parts = ["bf16 autocast" if self.amp else "fp32", "channels_last" if self.channels_last else "NCHW"]
        return ", ".join(parts + (["compiled"] if self.compile else []))

    def autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.amp)

    def forward_of(self, model: nn.Module) -> Callable:
        # The compiled wrapper is used only to call the model; the model itself (its state_dict
        # keys, what checkpoints and the range test save) stays the plain nn.Module.
        # dynamic=False: one graph specialised per batch shape (the full batch and the last partial
        # one), rather than a slower shape-generic graph after the second shape is seen.
        return torch.compile(model, dynamic=False) if self.compile else model


def to_device(batch, device: torch.device, channels_last: bool = False):
    x, y = batch
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    # Already on the device and in that layout (the GPU data path): both calls return x and y as they are.
    return x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)


def create_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                      device: torch.device, speed: StepSpeed = StepSpeed()) -> Callable:
    """forward >> loss >> backward >> optimizer step; returns detached tensors, never a Python float.

    Returning tensors (not `loss.item()`) keeps the host from waiting on the device every iteration;
    metrics accumulate them on the device and are read once per epoch.
    """
    forward = speed.forward_of(model)

    def train_step(engine: Engine, batch) -> dict:
        model.train()
        x, y = to_device(batch, device, speed.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with speed.autocast(device):
            logits = forward(x)
            loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        # fp32 logits for the metrics (they recompute the loss outside autocast); free in fp32.
        return {"loss": loss.detach(), "y_pred": logits.detach().float(), "y": y}

    return train_step


def create_trainer(model, optimizer, loss_fn, device, speed: StepSpeed = StepSpeed()) -> Engine:
    """A bare trainer Engine (no handlers): the range test uses one, the run another."""
    return Engine(create_train_step(model, optimizer, loss_fn, device, speed))


def attach_train_metrics(trainer: Engine, loss_fn: Callable, device: torch.device) -> None:
    """Per-epoch train loss and accuracy, accumulated on the device, in trainer.state.metrics."""
    def logits_and_labels(output):
        return output["y_pred"], output["y"]

    Loss(loss_fn, output_transform=logits_and_labels, device=device).attach(trainer, "train_loss")
    Accuracy(output_transform=logits_and_labels, device=device).attach(trainer, "train_accuracy")


def create_evaluator(model: nn.Module, loss_fn: Callable, device: torch.device,
                     speed: StepSpeed = StepSpeed(), tta: bool = False) -> Engine:
    """An Engine that returns (logits, labels) per batch, with test `accuracy` and `loss` attached.

    tta: also `accuracy_tta`, the accuracy of the softmax averaged over each image and its left-right
    mirror (the recipe trains with flips, so the mirror is an image the model knows). It is a metric
    of its own: the output, `accuracy` and `loss` are those of the plain images, as without it. Off,
    the step is exactly the plain one (no second forward pass).
    """
    forward = speed.forward_of(model)

    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = to_device(batch, device, speed.channels_last)
        with speed.autocast(device):
            logits = forward(x)
            mirrored = forward(x.flip(3)) if tta else None  # dim 3 = width, in NCHW and channels_last alike
        if tta:
            engine.state.tta_output = ((logits.float().softmax(1) + mirrored.float().softmax(1)) / 2, y)
        return logits.float(), y

    evaluator = Engine(eval_step)
    Accuracy(device=device).attach(evaluator, "accuracy")
    Loss(loss_fn, device=device).attach(evaluator, "loss")
    ExampleCount().attach(evaluator, "examples")
    if tta:
        TTAAccuracy(device=device).attach(evaluator, "accuracy_tta")
    return evaluator


class TTAAccuracy(Accuracy):
    """Accuracy of the flip-averaged probabilities the TTA eval step leaves in engine.state.tta_output.

    Read from the state, not the output, so the output stays (logits, labels) for every other
    metric and handler. Accumulated on the device like Accuracy; all-reduced over ranks at compute().
    """

    def iteration_completed(self, engine: Engine) -> None:
        self.update(engine.state.tta_output)


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
