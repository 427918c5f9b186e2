"""summary.json, history.csv, lr_schedule.csv, and the console table and verdict line.

A summary is built by one function, `build_summary`, from one kind of record, `RunRecord`, however the
run ended: from the live run (training.builder.Run.record) or from a checkpoint (record_from_state).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from run_folder.files import write_atomic


HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")
VAL_FIELDS = ("val_loss", "val_accuracy")  # in the rows of a run with a validation split
TTA_FIELD = "test_accuracy_tta"  # in the rows of a run with --tta
RAW_FIELDS = ("raw_test_loss", "raw_test_accuracy", "raw_val_accuracy")  # --ema: the trained weights' own scores


def history_fields(rows: list[dict]) -> tuple[str, ...]:
    """The columns of `rows`: HISTORY_FIELDS, with the validation, TTA and raw ones before `seconds` when present."""
    extra = (VAL_FIELDS if rows and "val_accuracy" in rows[0] else ()) + \
        ((TTA_FIELD,) if any(TTA_FIELD in r for r in rows) else ()) + \
        tuple(f for f in RAW_FIELDS if rows and f in rows[0])  # (a resume may have added --tta)
    return HISTORY_FIELDS[:-1] + extra + HISTORY_FIELDS[-1:]


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


@dataclass(frozen=True)
class RunRecord:
    """What summary.json says of a run: its settings, epoch rows, LRs, time and how far it got."""
    config: dict
    rows: list[dict]
    lr_min: float
    lr_max: float
    train_seconds: float
    completed: bool
    params: int = 0
    device: str = ""
    extra: dict = field(default_factory=dict)  # world_size, backend, lr_rule, resumed_from, a handler's keys, ...

    def state(self) -> dict:
        """The record as plain values, for a checkpoint (record_from_state reads it back)."""
        return {"config": self.config, "lr_min": self.lr_min, "lr_max": self.lr_max, "train_seconds": self.train_seconds,
                "params": self.params, "device": self.device, "extra": self.extra}


def record_from_state(state: dict, rows: list[dict], completed: bool, previous: dict | None = None) -> RunRecord:
    """The record a checkpoint's run_state holds. `previous`: an earlier summary.json, whose params, device and
    extra keys fill in what a checkpoint written before they were saved lacks."""
    kept = {k: v for k, v in (previous or {}).items() if k not in SUMMARY_KEYS}
    return RunRecord(config=state["config"], rows=rows, lr_min=state["lr_min"], lr_max=state["lr_max"],
                     train_seconds=state["train_seconds"], completed=completed,
                     params=state.get("params", (previous or {}).get("params", 0)),
                     device=state.get("device", (previous or {}).get("device", "")),
                     extra={**kept, **state.get("extra", {})})


SUMMARY_KEYS = ("lr_min", "lr_max", "params", "epochs", "batch_size", "dataset", "device", "target", "target_epoch",
                "final_test_accuracy", "best_test_accuracy", "final_val_accuracy", "best_val_accuracy",
                "best_val_epoch", "final_test_accuracy_tta", "best_test_accuracy_tta", "first_epoch_at_target",
                "target_held_from_target_epoch", "train_seconds", "epochs_completed", "completed", "history", "config")


def build_summary(record: RunRecord) -> dict:
    """summary.json's content: the record, the accuracies read from its rows, and the target's verdict."""
    config, rows = record.config, record.rows
    accuracies = [r["test_accuracy"] for r in rows]
    summary = {
        "lr_min": record.lr_min, "lr_max": record.lr_max, "params": record.params,
        "epochs": config["epochs"], "batch_size": config["batch_size"], "dataset": config["dataset"],
        "device": record.device, "target": config["target"], "target_epoch": config["target_epoch"],
        "final_test_accuracy": accuracies[-1] if accuracies else None,
        "best_test_accuracy": max(accuracies) if accuracies else None,
        **val_report(rows),
        **tta_report(rows),
        **target_report(rows, config["target"], config["target_epoch"]),
        "train_seconds": record.train_seconds,
        "epochs_completed": len(rows),
        "completed": record.completed,
        "history": rows,
        "config": config,
    }
    summary.update(record.extra)
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


def format_duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min: short enough for a line, exact enough for a run's scale."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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


def verdict_line(summary: dict) -> str:
    target = f"{summary['target']:.0%}" if summary["target"] * 100 == round(summary["target"] * 100) \
        else f"{summary['target']:.2%}"
    first = summary["first_epoch_at_target"]
    reached = f"first reached at epoch {first}" if first is not None else "never reached"
    held = summary["target_held_from_target_epoch"]
    held_text = {True: "yes", False: "no", None: "not applicable (the run ended before it)"}[held]
    return f"target {target} {reached}; held from epoch {summary['target_epoch']}: {held_text}"
