#!/usr/bin/env python
"""The LR range test's readings across seeds and designs: how stable is each reading of LRMAX?

For every (design, seed) the range test runs as `python run.py --lr-find-only` runs it (build_components,
then engine.lr_finder.run_range_test on the training split), and every reading of its curve is kept:
the rules of engine/lr_rules.py on the raw curve (trimmed, centred smoothing) and ignite's own
suggestion on FastaiLRFinder's lagged exponential average (the reading before this bench existed).
A design is a start LR, an end LR, a number of iterations and the classifier's initialisation: `own`
(the model as built, what `run.py` tests), `torch` (nn.Linear's default, the same as `own`'s but re-drawn
from the seed after the model is built) or `zero` (weights and bias zeroed: the curve starts at ln 10);
optionally a fifth field, the number of repeats (`run.py --lr-find-repeats`: every reading the median over
them), and a sixth and seventh, the warm-up's steps and LR before each test (`run.py --lr-find-warmup`,
`--lr-find-warmup-lr`; without them none: the designs stored before the warm-up existed).
The `zero` curves in bench/results/ were made when the model's own classifier was zero-initialised
(commit 50d9b1c), which is what `zero` does now.

Writes OUT/curves/<design>-seed<S>.json (a curve whose file exists is not run again), OUT/readings.json
and OUT/readings.md: each reading per seed, and its spread (max/min) over seeds, per design.

  python bench/bench_range_test.py --dataset folder --data-dir DIR --width 16 --seeds 0 1 2 \\
      --designs 1e-7:10:100:torch 1e-6:10:100:zero --val-split 0.1 --out bench/results/range-test-w16
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.config import Config  # noqa: E402
from engine.lr_finder import median_readings, run_range_test  # noqa: E402
from engine.lr_rules import WARMUP_LR, fall_point, suggestions, two_thirds  # noqa: E402


INITS = ("own", "torch", "zero")


DESIGN_FORM = "START:END:ITERS:INIT[:REPEATS[:WARMUP[:WARMUP_LR]]]"


def parse_design(text: str) -> dict:
    start, end, iters, init, *rest = text.split(":")
    if init not in INITS:
        raise argparse.ArgumentTypeError(f"{text}: the initialisation is one of {', '.join(INITS)}")
    repeats, warmup, warmup_lr = (rest + [None] * 3)[:3]
    try:
        warmup_lr = WARMUP_LR if warmup_lr is None else float(warmup_lr)
    except ValueError:
        warmup_lr = -1.0
    if (len(rest) > 3 or (repeats is not None and not (repeats.isdigit() and int(repeats) >= 1))
            or (warmup is not None and not warmup.isdigit()) or not warmup_lr > 0):
        raise argparse.ArgumentTypeError(f"{text}: {DESIGN_FORM}, REPEATS a whole number >= 1, WARMUP one >= 0, "
                                         f"WARMUP_LR > 0")
    return {"name": text.replace(":", "_"), "start": float(start), "end": float(end), "iters": int(iters),
            "init": init, "repeats": int(repeats) if repeats else 1, "warmup": int(warmup) if warmup else 0,
            "warmup_lr": warmup_lr}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="folder")
    p.add_argument("--data-dir")
    p.add_argument("--subset", type=int)
    p.add_argument("--val-split", type=float, default=0.1, help="the range test sees the training part only")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=Config.batch_size)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--designs", type=parse_design, nargs="+", required=True, metavar=DESIGN_FORM,
                   help="e.g. 1e-7:10:100:own (the range test run.py runs) 1e-7:10:100:own:1:20 (after a "
                        "20-step warm-up) 1e-6:10:100:zero")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=Config.workers)
    p.add_argument("--out", required=True)
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def one_curve(args, design: dict, seed: int) -> dict:
    import torch

    from training.components import build_components

    cfg = Config(dataset=args.dataset, data_dir=args.data_dir, subset=args.subset, val_split=args.val_split,
                 width=args.width, batch_size=args.batch_size, seed=seed, device=args.device, workers=args.workers,
                 lr_find_start=design["start"], lr_find_end=design["end"], lr_find_iters=design["iters"],
                 output_dir=str(Path(args.out) / "unused"))
    c = build_components(cfg)
    if design["init"] == "torch":
        torch.manual_seed(seed)
        c.model.fc.reset_parameters()
    elif design["init"] == "zero":
        torch.nn.init.zeros_(c.model.fc.weight)
        torch.nn.init.zeros_(c.model.fc.bias)
    found = run_range_test(c.model, c.optimizer, c.loss_fn, c.train_loader, c.device, design["start"],
                           design["end"], design["iters"], c.speed, num_classes=c.data.num_classes,
                           repeats=design.get("repeats", 1), seed=seed, warmup=design.get("warmup", 0),
                           warmup_lr=design.get("warmup_lr", WARMUP_LR), rule="guess80")  # the design sets the warm-up
    return {**found.to_dict(), "design": design, "seed": seed, "width": args.width, "dataset": args.dataset,
            "num_classes": c.data.num_classes,
            "subset": args.subset, "val_split": args.val_split, "torch": torch.__version__,
            "date": date.today().isoformat(), "threads": torch.get_num_threads(), "speed": c.speed.describe()}


def candidates(lrs, losses, num_classes: int) -> dict[str, float | None]:
    """Readings compared here but not offered by --lr-rule: the fall from a uniform guess's loss (ln C) read at
    other shares than guess80's 80%, and two_thirds with its start measured on that fall."""
    top = math.log(num_classes)
    return {"guess50": fall_point(lrs, losses, 0.5, top), "guess65": fall_point(lrs, losses, 0.65, top),
            "guess_two_thirds": two_thirds(lrs, losses, top)}


def readings_of(curve: dict) -> dict[str, float | None]:
    """Every reading of one stored curve: the rules and candidates on the reading curve, and ignite's on its
    own EMA; for a test with repeats (--lr-find-repeats), each reading's median over them, as run.py takes it."""
    # curves stored before guess80 existed lack num_classes: every dataset of this bench has 10 classes
    num_classes = curve.get("num_classes", 10)
    if curve.get("repeats"):
        return median_readings([readings_of({**r, "num_classes": num_classes}) for r in curve["repeats"]])
    lrs, losses = curve["reading_lr"], curve["reading_loss"]
    return {**suggestions(lrs, losses, num_classes), **candidates(lrs, losses, num_classes),
            "ignite_ema_steepest": curve["suggestion"]}


def report(out: Path) -> str:
    curves = [json.loads(p.read_text()) for p in sorted((out / "curves").glob("*.json"))]
    if not curves:
        return f"no curves in {out}"
    rows = [{"design": c["design"]["name"], "seed": c["seed"], "first_loss": c["loss_raw"][0],
             "points": len(c["lr"]), **readings_of(c)} for c in curves]
    (out / "readings.json").write_text(json.dumps(rows, indent=2))
    names = [k for k in rows[0] if k not in ("design", "seed", "first_loss", "points")]
    first = curves[0]
    lines = [f"width {first['width']}, {first['dataset']}" + (f" subset {first['subset']}" if first["subset"] else "")
             + f", val split {first['val_split']}, torch {first['torch']}, {first['speed']}, {first['date']}", "",
             "| design | seed | first loss | points | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    designs = list(dict.fromkeys(r["design"] for r in rows))
    for d in designs:
        group = [r for r in rows if r["design"] == d]
        for r in group:
            lines.append(f"| {d} | {r['seed']} | {r['first_loss']:.3f} | {r['points']} | "
                         + " | ".join(fmt(r[n]) for n in names) + " |")
        spread = []
        for n in names:
            values = [r[n] for r in group]
            spread.append("-" if None in values or len(values) < 2 else f"**{max(values) / min(values):.2f}x**")
        lines.append(f"| {d} | max/min | | | " + " | ".join(spread) + " |")
    text = "\n".join(lines) + "\n"
    (out / "readings.md").write_text(text)
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for design in args.designs:
            for seed in args.seeds:
                path = out / "curves" / f"{design['name']}-seed{seed}.json"
                if path.is_file():
                    continue
                curve = one_curve(args, design, seed)
                path.write_text(json.dumps(curve))
                print(f"{design['name']} seed {seed}: first loss {curve['loss_raw'][0]:.3f}, "
                      + ", ".join(f"{k} {v:.3g}" for k, v in readings_of(curve).items() if v is not None), flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
