"""summary.json, history.csv, lr_schedule.csv, and the console table and verdict."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from handlers.history import HISTORY_FIELDS, history_fields


def write_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def target_report(rows: list[dict], target: float, target_epoch: int) -> dict:
    """first_epoch_at_target (or None) and target_held_from_target_epoch (None if the run ended before it)."""
    first = next((r["epoch"] for r in rows if r["test_accuracy"] >= target), None)
    tail = [r for r in rows if r["epoch"] >= target_epoch]
    held = all(r["test_accuracy"] >= target for r in tail) if tail else None
    return {"first_epoch_at_target": first, "target_held_from_target_epoch": held}


def val_report(rows: list[dict]) -> dict:
    """final/best validation accuracy and the epoch of the best (the one a tuner should read), if any."""
    if not rows or "val_accuracy" not in rows[0]:
        return {}
    best = max(rows, key=lambda r: r["val_accuracy"])
    return {"final_val_accuracy": rows[-1]["val_accuracy"], "best_val_accuracy": best["val_accuracy"],
            "best_val_epoch": best["epoch"]}


def tta_report(rows: list[dict]) -> dict:
    """final/best test accuracy with test-time augmentation (--tta), beside the plain ones; {} without it."""
    if not rows or "test_accuracy_tta" not in rows[-1]:
        return {}
    return {"final_test_accuracy_tta": rows[-1]["test_accuracy_tta"],
            "best_test_accuracy_tta": max(r["test_accuracy_tta"] for r in rows if "test_accuracy_tta" in r)}


def build_summary(*, config: dict, rows: list[dict], lr_min: float, lr_max: float, params: int,
                  device: str, train_seconds: float, completed: bool, extra: dict | None = None) -> dict:
    accuracies = [r["test_accuracy"] for r in rows]
    summary = {
        "lr_min": lr_min, "lr_max": lr_max, "params": params,
        "epochs": config["epochs"], "batch_size": config["batch_size"], "dataset": config["dataset"],
        "device": device, "target": config["target"], "target_epoch": config["target_epoch"],
        "final_test_accuracy": accuracies[-1] if accuracies else None,
        "best_test_accuracy": max(accuracies) if accuracies else None,
        **val_report(rows),
        **tta_report(rows),
        **target_report(rows, config["target"], config["target_epoch"]),
        "train_seconds": train_seconds,
        "epochs_completed": len(rows),
        "completed": completed,
        "history": rows,
        "config": config,
    }
    summary.update(extra or {})
    return summary


def rows_to_csv(rows: list[dict], fields=HISTORY_FIELDS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_run_files(output_dir: Path, summary: dict, lrs: list[float]) -> None:
    write_atomic(output_dir / "summary.json", json.dumps(summary, indent=2))
    write_atomic(output_dir / "history.csv", rows_to_csv(summary["history"], history_fields(summary["history"])))
    write_atomic(output_dir / "lr_schedule.csv",
                 rows_to_csv([{"iteration": i, "lr": lr} for i, lr in enumerate(lrs)], ("iteration", "lr")))


def format_table(rows: list[dict]) -> str:
    val = bool(rows) and "val_accuracy" in rows[0]
    tta = any("test_accuracy_tta" in r for r in rows)
    head = (f"{'epoch':>5} {'lr':>10} {'train loss':>10} {'train acc':>9} "
            + (f"{'val loss':>8} {'val acc':>7} " if val else "")
            + f"{'test loss':>9} {'test acc':>8} " + (f"{'tta acc':>7} " if tta else "") + f"{'sec':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['epoch']:>5} {r['lr']:>10.3e} {r['train_loss']:>10.4f} {r['train_accuracy']:>9.2%} "
                     + (f"{r['val_loss']:>8.4f} {r['val_accuracy']:>7.2%} " if val else "")
                     + f"{r['test_loss']:>9.4f} {r['test_accuracy']:>8.2%} "
                     + (f"{r['test_accuracy_tta']:>7.2%} " if "test_accuracy_tta" in r else " " * 8 if tta else "")
                     + f"{r['seconds']:>7.1f}")
    return "\n".join(lines)


def verdict(summary: dict) -> str:
    target = f"{summary['target']:.0%}" if summary["target"] * 100 == round(summary["target"] * 100) \
        else f"{summary['target']:.2%}"
    first = summary["first_epoch_at_target"]
    reached = f"first reached at epoch {first}" if first is not None else "never reached"
    held = summary["target_held_from_target_epoch"]
    held_text = {True: "yes", False: "no", None: "not applicable (the run ended before it)"}[held]
    return f"target {target} {reached}; held from epoch {summary['target_epoch']}: {held_text}"
