#!/usr/bin/env python
"""One training step of the project's ResNet (forward, loss, backward, Adam), images/s, per precision and layout.

Isolates the arithmetic from the data path and Ignite: what bf16 autocast and channels_last are worth on this
device. The median of the timed steps, after warm-up steps. Random inputs; the model's own initialisation.

  python bench/bench_step.py --device cpu --width 16 --batch-size 512
  python bench/bench_step.py --device cpu --width 64 --batch-size 128 --settings fp32-nchw fp32-cl
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.trainer import cpu_has_native_bf16  # noqa: E402
from models import CustomResNet  # noqa: E402

SETTINGS = {"fp32-nchw": (False, False), "fp32-cl": (False, True), "bf16-nchw": (True, False), "bf16-cl": (True, True)}


def step_rate(width: int, batch: int, amp: bool, channels_last: bool, device: torch.device, warmup: int,
              steps: int) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = CustomResNet(width=width).to(device, memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rates = {name: step_rate(args.width, args.batch_size, *SETTINGS[name], device, args.warmup, args.steps)
             for name in args.settings}
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
              "width": args.width, "batch_size": args.batch_size, "images_per_s": rates}
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{report['cpu_capability']}, native bf16 {report['native_bf16']}, width {args.width}, batch {args.batch_size}")
    for name, rate in rates.items():
        print(f"  {name:10s} {rate:8.1f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
