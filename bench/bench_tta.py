#!/usr/bin/env python
"""Test-time augmentation's gain for a trained model: plain vs flip-averaged test accuracy on a whole test split.

  python bench/bench_tta.py runs/r1/checkpoints/best_model_24_test_accuracy=0.9312.pt \\
      --dataset folder --data-dir /tmp/cifar10-jpeg --device cpu

Evaluates the model once with the evaluator `--tta` uses (engine/trainer.py): plain accuracy,
TTA accuracy (softmax of the image and its mirror averaged), their difference, and how many images
TTA turns right and wrong. A best-model file without metadata (saved before model files carried it)
is normalised with the statistics of the dataset's full training split, which is what a run without
--subset or --val-split used.
"""
from __future__ import annotations

import argparse
import logging
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ignite.engine import Events  # noqa: E402

from data.datasets import load_dataset  # noqa: E402
from data.loaders import cpu_eval_loader  # noqa: E402
from engine.trainer import create_evaluator  # noqa: E402
from models import load_trained  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a best-model file")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "folder"])
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--out", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    logging.getLogger("ignite").setLevel(logging.WARNING)  # its data-loader INFO lines are noise here
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model, meta = load_trained(args.model, device)
    data = load_dataset(args.dataset, args.data_dir)
    mean, std = (meta["mean"], meta["std"]) if meta["complete"] else (data.mean, data.std)
    loader = cpu_eval_loader(data.test_x, data.test_y, mean, std, args.batch_size, 0)
    evaluator = create_evaluator(model, torch.nn.CrossEntropyLoss(), device, tta=True)
    fixed, broken = [], []

    def compare(engine):  # per batch: which images the mirror turns right, and which wrong
        logits, y = engine.state.output
        plain, tta = logits.argmax(1) == y, engine.state.tta_output[0].argmax(1) == y
        fixed.append((tta & ~plain).sum())
        broken.append((plain & ~tta).sum())

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, compare)
    started = time.perf_counter()
    evaluator.run(loader)
    m = evaluator.state.metrics
    result = {"model": str(args.model), "dataset": args.dataset, "data_dir": args.data_dir, "device": str(device),
              "width": meta["width"], "test_images": int(m["examples"]), "accuracy": m["accuracy"],
              "accuracy_tta": m["accuracy_tta"], "gain": m["accuracy_tta"] - m["accuracy"],
              "fixed_by_tta": int(sum(fixed)), "broken_by_tta": int(sum(broken)),
              "seconds": time.perf_counter() - started}
    print(f"{result['test_images']} test images: plain {m['accuracy']:.4f}, flip TTA {m['accuracy_tta']:.4f}, "
          f"gain {100 * result['gain']:+.2f} points ({result['fixed_by_tta']} images turned right, "
          f"{result['broken_by_tta']} turned wrong), {result['seconds']:.0f} s on {device}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
