#!/usr/bin/env python
"""Test accuracy on real CIFAR-10 (the JPEG q75 copy): our trainer against a plain PyTorch loop, per seed.

  ours   `python run.py --dataset folder --data-dir DIR --width W --device D --seed S [flags after --]`:
         the recipe as a user runs it, LR range test included.
  plain  the assignment written the way a typical solution is: albumentations in DataLoader workers,
         Adam, torch-lr-finder's range test (start 1e-7, end 10, 200 iterations, exponential) and its
         suggestion (steepest gradient of the smoothed curve) as LRMAX, then torch's OneCycleLR(max_lr=LRMAX,
         pct_start=5/24, div_factor=100, final_div_factor=100, three_phase=False, anneal_strategy="linear")
         stepped every batch (it ends at LRMAX/10,000), `.item()` every step, a test pass every epoch; the
         same network (and initialisation), augmentations, batch and weight decay. `--plain-lr-from ours`
         takes LRMAX from our range test of the same seed instead (how the runs before 2026-12 were made).
         The model and batches are channels_last (no change to the math; faster on CPU and GPU).

Each run writes OUT/<pipeline>-<tag>-seed<S>.json (a run whose file exists is not run again, so an
interrupted benchmark continues); then OUT/results.json, OUT/results.md (tables that paste into
BENCHMARKS.md) and OUT/accuracy.png are rebuilt from every run file in OUT.

  python bench/bench_accuracy.py --width 16 --device cpu --seeds 0 1 --out bench/results/cpu-w16
  python bench/bench_accuracy.py --pipelines ours --val-split 0.1 --tag wd1e-4 --out OUT -- --weight-decay 1e-4
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data.archive import COPY_NAME, find_cifar_archive, unpack_cifar_archive  # noqa: E402
from engine.trainer import StepSpeed  # noqa: E402

PIPELINES = ("ours", "plain")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", help="the unpacked copy (train/ and test/); default: unpack the archive")
    p.add_argument("--archive", help="cifar10-jpeg.tar.gz; default $ERA_S10_CIFAR_ARCHIVE or ../shared/data/")
    p.add_argument("--unpack-to", default=str(Path.home() / ".cache" / "era_s10" / "cifar10-jpeg"),
                   help="where the archive is unpacked (once)")
    p.add_argument("--pipelines", default="ours,plain", help="comma-separated: ours, plain")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--subset", type=int, help="train on a stratified sample of N images (a quick check)")
    p.add_argument("--val-split", type=float, default=0.0, help="passed to ours: tune on validation, not test")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (both pipelines, CPU data path)")
    p.add_argument("--plain-weight-decay", type=float, help="default: the weight decay our run used")
    p.add_argument("--plain-lr-from", choices=["torch-lr-finder", "ours"], default="torch-lr-finder",
                   help="where the plain loop's LRMAX comes from: its own range test, or ours")
    p.add_argument("--plain-finder-iters", type=int, default=200, help="iterations of the plain loop's range test")
    p.add_argument("--tag", default="default", help="names this configuration in the file names and tables")
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--out", required=True, help="folder for the run files, tables and plot")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables and plot from OUT")
    p.add_argument("extra", nargs="*", help="after --: flags for run.py (ours), e.g. -- --weight-decay 1e-4")
    return p.parse_args(argv)


def resolve_data_dir(args) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    archive = Path(args.archive) if args.archive else find_cifar_archive(REPO)
    if archive is None or not archive.is_file():
        sys.exit("error: no CIFAR-10 archive: pass --data-dir DIR (train/ and test/) or --archive "
                 "cifar10-jpeg.tar.gz (or set ERA_S10_CIFAR_ARCHIVE)")
    return unpack_cifar_archive(archive, Path(args.unpack_to))


def held_from(accuracies: list[float], target: float) -> int | None:
    """The first epoch from which test accuracy stays >= target to the end (None if the last is below)."""
    first = None
    for epoch, acc in enumerate(accuracies, start=1):
        if acc >= target:
            first = first or epoch
        else:
            first = None
    return first


def environment(device_name: str, speed: str | None) -> dict:
    """Where and how a run ran: device, CPU model (runs from different sessions land on different CPUs),
    numerics (`speed`: StepSpeed.describe(), e.g. bf16 autocast where the CPU has native bf16), torch, date."""
    import torch

    from core.device import cpu_name

    return {"device": device_name, "cpu": cpu_name(), "speed": speed, "torch": torch.__version__,
            "date": date.today().isoformat(), "data": COPY_NAME, "threads": torch.get_num_threads()}


def run_ours(args, data_dir: Path, seed: int, out: Path) -> dict:
    run_dir = out / "runs" / f"ours-{args.tag}-seed{seed}"
    cmd = [sys.executable, str(REPO / "run.py"), "--dataset", "folder", "--data-dir", str(data_dir),
           "--width", str(args.width), "--device", args.device, "--seed", str(seed), "--epochs", str(args.epochs),
           "--workers", str(args.workers), "--output-dir", str(run_dir), "--resume", "auto", "--no-progress",
           *(["--subset", str(args.subset)] if args.subset else []),
           *(["--val-split", str(args.val_split)] if args.val_split else []), *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run.py exited {proc.returncode} for seed {seed}")
    s = json.loads((run_dir / "summary.json").read_text())
    history = s["history"]
    return {"pipeline": "ours", "seed": seed, "lr_min": s["lr_min"], "lr_max": s["lr_max"],
            "weight_decay": s["config"]["weight_decay"], "test_accuracy": [r["test_accuracy"] for r in history],
            "val_accuracy": [r["val_accuracy"] for r in history] if "val_accuracy" in history[0] else None,
            "train_accuracy": [r["train_accuracy"] for r in history], "wall_s": wall,
            "train_s": s["train_seconds"], "run_dir": str(run_dir), "flags": args.extra,
            **environment(s["device"] if s["device"] == "cpu" else _cuda_name(), s.get("speed"))}


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def lr_max_for(args, data_dir: Path, seed: int, out: Path) -> tuple[float, float]:
    """(LRMAX, weight decay) of our run of this seed; runs our range test alone when there is none."""
    ours = out / f"ours-{args.tag}-seed{seed}.json"
    if ours.is_file():
        r = json.loads(ours.read_text())
        return r["lr_max"], r["weight_decay"]
    find_dir = out / "runs" / f"lr-find-{args.tag}-seed{seed}"
    cmd = [sys.executable, str(REPO / "run.py"), "--dataset", "folder", "--data-dir", str(data_dir),
           "--width", str(args.width), "--device", args.device, "--seed", str(seed), "--lr-find-only",
           "--workers", str(args.workers), "--output-dir", str(find_dir), "--overwrite", "--no-progress",
           *(["--subset", str(args.subset)] if args.subset else []), *args.extra]
    subprocess.run(cmd, cwd=REPO, check=True)
    found = json.loads((find_dir / "lr_finder.json").read_text())
    from engine.config import Config

    return found["lr_max"], _flag_value(args.extra, "--weight-decay", Config().weight_decay)


def _flag_value(flags: list[str], name: str, default: float) -> float:
    return float(flags[flags.index(name) + 1]) if name in flags else default


def torch_lr_finder_max_lr(model, optimizer, criterion, loader, device, num_iter: int = 200) -> float:
    """The typical solution's LRMAX: torch-lr-finder's range test and its suggested (steepest) LR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    finder = LRFinder(model, optimizer, criterion, device=device)
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=num_iter, step_mode="exp")
    fig, ax = plt.subplots()
    _, suggested = finder.plot(suggest_lr=True, ax=ax)  # skip_start=10, skip_end=5, as its docs run it
    plt.close(fig)
    finder.reset()  # the model and optimizer as they were
    return float(suggested)


def run_plain(args, data_dir: Path, seed: int, lr_max: float | None, weight_decay: float) -> dict:
    """The typical solution's loop: nothing of engine/ or handlers/, only the model and the augmentations.

    lr_max None: read it with torch-lr-finder first (torch_lr_finder_max_lr)."""
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from data.datasets import load_dataset
    from data.transforms import test_transform, train_transform
    from models import CustomResNet

    class AlbumentationsDataset(Dataset):
        def __init__(self, images, labels, transform):
            self.images, self.labels, self.transform = images, labels, transform

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(image=self.images[i])["image"], int(self.labels[i])

    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    data = load_dataset("folder", data_dir, subset=args.subset)
    train_loader = DataLoader(AlbumentationsDataset(data.train_x, data.train_y, train_transform(data.mean, data.std)),
                              batch_size=512, shuffle=True, num_workers=args.workers,
                              pin_memory=device.type == "cuda")
    test_loader = DataLoader(AlbumentationsDataset(data.test_x, data.test_y, test_transform(data.mean, data.std)),
                             batch_size=512, shuffle=False, num_workers=args.workers)
    model = CustomResNet(num_classes=10, width=args.width).to(device, memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    if lr_max is None:
        finder_optimizer = torch.optim.Adam(model.parameters(), lr=1e-7, weight_decay=weight_decay)
        lr_max = torch_lr_finder_max_lr(model, finder_optimizer, criterion, train_loader, device,
                                        args.plain_finder_iters)
        print(f"plain seed {seed}: torch-lr-finder suggests {lr_max:.3g}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr_max / 100, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr_max, steps_per_epoch=len(train_loader), epochs=args.epochs, pct_start=5 / 24,
        div_factor=100, final_div_factor=100, three_phase=False, anneal_strategy="linear")
    test_acc, train_acc = [], []
    for epoch in range(1, args.epochs + 1):
        model.train()
        correct = processed = 0
        for x, y in train_loader:
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            optimizer.zero_grad()
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]  # before step(): its last call sets an LR never used
            scheduler.step()
            correct += (logits.argmax(1) == y).sum().item()
            processed += len(y)
        train_acc.append(correct / processed)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x.to(device, memory_format=torch.channels_last)).argmax(1) == y.to(device)).sum().item()
        test_acc.append(correct / len(data.test_y))
        print(f"plain seed {seed} epoch {epoch}: lr {lr_used:.3e} loss {loss.item():.4f} "
              f"train {train_acc[-1]:.4f} test {test_acc[-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"pipeline": "plain", "seed": seed, "lr_min": lr_max / 100, "lr_max": lr_max,
            "lr_final": lr_used, "weight_decay": weight_decay, "test_accuracy": test_acc,
            "val_accuracy": None, "train_accuracy": train_acc, "wall_s": time.perf_counter() - t0,
            "train_s": time.perf_counter() - t0, "flags": [], "lr_from": args.plain_lr_from,
            **environment(torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                        StepSpeed(channels_last=True).describe())}


def summarise(run: dict, target: float) -> dict:
    acc = run["test_accuracy"]
    val = run.get("val_accuracy")
    return {**run, "final": acc[-1], "best": max(acc), "held_from": held_from(acc, target),
            "final_val": val[-1] if val else None, "best_val": max(val) if val else None}


def write_report(out: Path, target: float) -> list[dict]:
    runs = [summarise(json.loads(p.read_text()), target) for p in sorted(out.glob("*-seed*.json"))]
    if not runs:
        return runs
    (out / "results.json").write_text(json.dumps(runs, indent=2))
    (out / "results.md").write_text(markdown(runs, target))
    plot(runs, out / "accuracy.png")
    return runs


def device_cell(run: dict) -> str:
    """'cpu (AMD EPYC 9R14; bf16 autocast, channels_last)': the device, with the CPU model and numerics where the
    run recorded them (runs before 2026-12-06 did not)."""
    details = "; ".join(v for v in (run.get("cpu") if run["device"] == "cpu" else None, run.get("speed")) if v)
    return f"{run['device']} ({details})" if details else run["device"]


def markdown(runs: list[dict], target: float) -> str:
    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}"

    head = ("| pipeline | config | seed | device | torch | date | LRMIN | LRMAX | test @5 | @19 | final (24) | best "
            f"| held >= {target:.0%} from | val final | wall |")
    lines = [f"Data: {runs[0]['data']}.", "", *summary_table(runs, target), "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        acc = r["test_accuracy"]
        at = {e: (acc[e - 1] if len(acc) >= e else None) for e in (5, 19)}
        config = r.get("tag", "") + (f", {r['subset']} images" if r.get("subset") else "")
        lines.append(f"| {r['pipeline']} | {config} | {r['seed']} | {device_cell(r)} | {r['torch']} | {r['date']} "
                     f"| {r['lr_min']:.3g} | {r['lr_max']:.3g} | {pct(at[5])} | {pct(at[19])} | {pct(r['final'])} "
                     f"| {pct(r['best'])} | {r['held_from'] or 'never'} | {pct(r['final_val'])} "
                     f"| {r['wall_s'] / 60:.1f} min |")
    epochs = max(len(r["test_accuracy"]) for r in runs)
    names = [f"{r['pipeline']} {r.get('tag', '')} s{r['seed']}" for r in runs]
    lines += ["", "Test accuracy (%) per epoch:", "", "| epoch | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(runs)]
    for e in range(epochs):
        cells = [pct(r["test_accuracy"][e]) if e < len(r["test_accuracy"]) else "" for r in runs]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def configurations(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The runs grouped by (pipeline, tag), in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["pipeline"], r.get("tag", "")), []).append(r)
    return groups


def summary_table(runs: list[dict], target: float) -> list[str]:
    """One row per configuration: the median over its seeds, and the range, of the @19 and final accuracies."""
    def pct(values):
        mid = 100 * statistics.median(values)
        return f"{mid:.2f}" if len(values) == 1 else f"{mid:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"

    lines = ["| pipeline | config | seeds | median @19 (range) | median final (range) "
             f"| seeds held >= {target:.0%} from @19 |", "|---|---|---|---|---|---|"]
    for (pipeline, tag), group in configurations(runs).items():
        at19 = [r["test_accuracy"][18] for r in group if len(r["test_accuracy"]) >= 19]
        held = sum(1 for r in group if r["held_from"] is not None and r["held_from"] <= 19)
        lines.append(f"| {pipeline} | {tag} | {', '.join(str(r['seed']) for r in group)} "
                     f"| {pct(at19) if at19 else '—'} | {pct([r['final'] for r in group])} | {held} of {len(group)} |")
    return lines


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]  # one colour per configuration, one line style per seed
    seeds = sorted({r["seed"] for r in runs})
    for i, ((pipeline, tag), group) in enumerate(configurations(runs).items()):
        for r in group:
            acc = [100 * a for a in r["test_accuracy"]]
            ax.plot(range(1, len(acc) + 1), acc, styles[seeds.index(r["seed"]) % len(styles)], marker="o",
                    markersize=3, color=colours[i % len(colours)],
                    label=f"{'ours (Ignite)' if pipeline == 'ours' else 'plain loop'} {tag} seed {r['seed']}")
    first = runs[0]
    dates = sorted({r["date"] for r in runs})  # runs of several days: the span, not the first run's day
    ax.set(xlabel="epoch", ylabel="test accuracy (%)",
           title=f"{first['data']}: width {first.get('width', '?')}, {first['device']}, torch {first['torch']}, "
                 f"{dates[0] if len(dates) == 1 else dates[0] + ' to ' + dates[-1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        data_dir = resolve_data_dir(args)
        pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
        unknown = set(pipelines) - set(PIPELINES)
        if unknown:
            sys.exit(f"error: unknown pipeline(s) {', '.join(sorted(unknown))}: choose from {', '.join(PIPELINES)}")
        for seed in args.seeds:
            for pipeline in pipelines:
                path = out / f"{pipeline}-{args.tag}-seed{seed}.json"
                if path.is_file():
                    print(f"{path} exists: not run again", flush=True)
                    continue
                if pipeline == "ours":
                    result = run_ours(args, data_dir, seed, out)
                else:
                    if args.plain_lr_from == "ours":
                        lr_max, weight_decay = lr_max_for(args, data_dir, seed, out)
                    else:
                        from engine.config import Config

                        lr_max, weight_decay = None, _flag_value(args.extra, "--weight-decay", Config().weight_decay)
                    if args.plain_weight_decay is not None:
                        weight_decay = args.plain_weight_decay
                    result = run_plain(args, data_dir, seed, lr_max, weight_decay)
                result.update(tag=args.tag, width=args.width, epochs=args.epochs, subset=args.subset)
                path.write_text(json.dumps(result, indent=2))
                write_report(out, args.target)
    runs = write_report(out, args.target)
    print((out / "results.md").read_text() if runs else f"no run files in {out}")


if __name__ == "__main__":
    main()
