"""What report.html says, as plain values from summary.json's dict and the run's settings (no I/O here).

run_folder/report_page.py gathers the inputs and renders them with templates/report.html.j2.
"""
from __future__ import annotations

import math

from engine.config import Config
from engine.lr_rules import FALLBACK_DIV, MAX_RATIO, MIN_RATIO, READING_LABELS
from run_folder.summary import format_duration
from run_folder.report_charts import COLORS, Chart, Series, render

# The assignment, in Config's terms: its defaults are the assignment (tests/test_report.py checks them against it).
ASSIGNMENT = {**{k: getattr(Config(), k) for k in ("dataset", "width", "batch_size", "epochs", "target", "target_epoch")},
              "peak_epoch": Config().resolved_peak_epoch}
CIFAR10 = {"train": 50_000, "test": 10_000, "classes": 10}
ASSIGNMENT_PARAMS = 6_573_130


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def target_text(target: float) -> str:
    return f"{target:.0%}" if round(target * 100, 6) == round(target * 100) else f"{target:.2%}"


def page_verdict(summary: dict | None, epochs: int, ended: dict | None, epoch_now: int) -> dict:
    """The top of the page: how the run stands or ended, the target, and the headline numbers.

    ended: None while the run is in progress; else {"finished": bool, "reason": str | None, "epoch": E,
    "iteration": I} (reason: why it stopped early).
    """
    done = len(summary["history"]) if summary else 0
    if ended is None:
        state, css = f"In progress: epoch {min(epoch_now + 1, epochs)} of {epochs} running ({done} done)", "running"
    elif ended["finished"]:
        state, css = f"Finished: {done} of {epochs} epochs", "finished"
    else:
        state, css = (f"Stopped early at epoch {ended['epoch']} of {epochs} (iteration {ended['iteration']}, "
                      f"{done} epoch{'s' if done != 1 else ''} complete)"), "stopped"
    out = {"state": state, "state_class": css, "reason": ended and ended["reason"], "facts": []}
    if not summary:
        out.update(target="No epoch has completed: no test accuracy yet.", target_class="undecided")
        return out
    goal = f"Target {target_text(summary['target'])} test accuracy from epoch {summary['target_epoch']} on"
    first, held = summary["first_epoch_at_target"], summary["target_held_from_target_epoch"]
    reached = f"first reached at epoch {first}" if first is not None else "never reached"
    if held is False:  # an epoch at or after target_epoch fell short: nothing later can undo it
        out.update(target=f"{goal}: not met ({reached}; below it at epoch "
                          f"{_first_miss(summary)}).", target_class="not-met")
    elif held is True and ended is not None and ended["finished"]:
        out.update(target=f"{goal}: met ({reached}, held from epoch {summary['target_epoch']} on).", target_class="met")
    elif held is True:
        so_far = "so far" if ended is None else f"up to epoch {done}, where the run stopped"
        out.update(target=f"{goal}: held {so_far} ({reached}).", target_class="undecided")
    elif ended is None:
        out.update(target=f"{goal}: not decided yet ({reached} so far).", target_class="undecided")
    else:
        out.update(target=f"{goal}: not decided: the run ended before epoch {summary['target_epoch']} ({reached}).",
                   target_class="undecided")
    rows = summary["history"]
    best = max(rows, key=lambda r: r["test_accuracy"])
    facts = [("final-test-accuracy", "Final test accuracy" if ended else "Latest test accuracy",
              pct(summary["final_test_accuracy"]),
              f"epoch {rows[-1]['epoch']}"),
             ("best-test-accuracy", "Best test accuracy", pct(summary["best_test_accuracy"]), f"epoch {best['epoch']}")]
    if "best_val_accuracy" in summary:
        facts.append(("best-val-accuracy", "Best validation accuracy", pct(summary["best_val_accuracy"]),
                      f"epoch {summary['best_val_epoch']}"))
    facts.append(("train-time", "Training time", format_duration(summary["train_seconds"]),
                  f"{done} epoch{'s' if done != 1 else ''}, test passes included"))
    world = summary.get("world_size") or 1
    facts.append(("device", "Device", summary["device"] + (f" x{world}" if world > 1 else ""),
                  summary.get("backend") or "one process"))
    out["facts"] = [dict(zip(("id", "label", "value", "note"), f)) for f in facts]
    return out


def _first_miss(summary: dict) -> int:
    return next(r["epoch"] for r in summary["history"]
                if r["epoch"] >= summary["target_epoch"] and r["test_accuracy"] < summary["target"])


def config_rows(config: dict, data: dict, params: int, lr_source: str, lr_min: float, lr_max: float,
                augment: str) -> list[dict]:
    """Setting | the assignment | this run, with `differs` set where this run departs from the assignment."""
    peak = config["peak_epoch"] if config["peak_epoch"] is not None else config["epochs"] * 5 / 24
    same_data = (config["dataset"] != "fake" and data["train"] == CIFAR10["train"] and data["test"] == CIFAR10["test"]
                 and data["classes"] == CIFAR10["classes"])
    source = {"cifar10": "CIFAR-10", "fake": "fake (random images)"}.get(config["dataset"], config["dataset"])
    if config["dataset"] == "folder":
        source = f"folder {config['data_dir']}"
    val = f" (+ {data['val']:,} held out for validation)" if data["val"] else ""
    subset = f", --subset {config['subset']:,}" if config["subset"] else ""
    rows = [
        ("Data", f"CIFAR-10: {CIFAR10['train']:,} train / {CIFAR10['test']:,} test images, 10 classes",
         f"{source}{subset}: {data['train']:,} train{val} / {data['test']:,} test images, {data['classes']} classes",
         not same_data),
        ("Model", f"custom ResNet, width {ASSIGNMENT['width']} ({ASSIGNMENT_PARAMS:,} parameters)",
         f"custom ResNet, width {config['width']} ({params:,} parameters)", config["width"] != ASSIGNMENT["width"]),
        ("Batch size", f"{ASSIGNMENT['batch_size']}", f"{config['batch_size']}",
         config["batch_size"] != ASSIGNMENT["batch_size"]),
        ("Epochs", f"{ASSIGNMENT['epochs']}", f"{config['epochs']}", config["epochs"] != ASSIGNMENT["epochs"]),
        ("One Cycle peak", f"end of epoch {ASSIGNMENT['peak_epoch']:g}, no annihilation",
         f"end of epoch {peak:.3g}, no annihilation", abs(peak - ASSIGNMENT["peak_epoch"]) > 1e-9),
        ("Optimizer", "Adam (weight decay not set)", f"Adam, weight decay {config['weight_decay']:g}", False),
        ("LRMIN / LRMAX", "from an LR range test", f"{lr_min:.3g} / {lr_max:.3g}: {lr_source}",
         config["lr_min"] is not None or config["lr_max"] is not None),
        ("Augmentation", "RandomCrop 32 (padding 4), FlipLR, CutOut 8x8",
         "the same, " + ("as batched tensor ops on the device (--augment batched)" if augment == "batched"
                         else "by albumentations, image by image (--augment albumentations)"), False),
        ("Goal", f"{target_text(ASSIGNMENT['target'])} test accuracy from epoch {ASSIGNMENT['target_epoch']} on",
         f"{target_text(config['target'])} test accuracy from epoch {config['target_epoch']} on",
         (config["target"], config["target_epoch"]) != (ASSIGNMENT["target"], ASSIGNMENT["target_epoch"])),
    ]
    return [dict(zip(("setting", "assignment", "ours", "differs"), r)) for r in rows]


def lr_source(config: dict, resumed: bool, rule: str | None) -> str:
    given = [flag for flag, key in (("--lr-min", "lr_min"), ("--lr-max", "lr_max")) if config[key] is not None]
    if resumed and not given:
        return "from the checkpoint this run resumed (the first run's range test)"
    if len(given) == 2:
        return "both given (--lr-min, --lr-max): no range test"
    if given:
        return f"{given[0]} given, the other from the range test ({rule or 'steepest'})"
    return f"from the range test, LRMAX by --lr-rule {rule or 'steepest'}"


def suggestion_rows(finder: dict | None) -> list[dict]:
    """Every reading of the range-test curve (with --lr-find-repeats, the median over the repeats, each repeat's
    reading beside it), saying which set LRMAX and LRMIN, and how LRMIN was then kept in
    range (engine/lr_finder.py: LRMAX/MAX_RATIO <= LRMIN <= LRMAX/MIN_RATIO, or LRMAX/FALLBACK_DIV when the curve
    shows no fall)."""
    if not finder:
        return []
    chosen_min, chosen_max = finder.get("lr_min"), finder.get("lr_max")
    rows = []
    for name, lr in (finder.get("suggestions") or {}).items():
        use = ""
        if name == finder.get("rule"):
            use = "LRMAX" if lr is not None else f"no reading: LRMAX = {chosen_max:.3g}, the middle of the range"
        elif name == "fall_start" and chosen_min is not None:
            if lr is not None and math.isclose(lr, chosen_min, rel_tol=1e-9):
                use = "LRMIN"
            elif lr is None or lr >= chosen_max:
                use = f"LRMIN = LRMAX/{FALLBACK_DIV:g} = {chosen_min:.3g} instead (no fall below LRMAX)"
            else:
                side = f"raised to LRMAX/{MAX_RATIO:g}" if lr < chosen_min else f"lowered to LRMAX/{MIN_RATIO:g}"
                use = f"LRMIN, {side} = {chosen_min:.3g}"
        text = "-" if lr is None else f"{lr:.3g}"
        repeats = finder.get("repeats") or []
        if repeats:  # --lr-find-repeats: the reading is the median of the repeats'
            each = ", ".join("-" if r["suggestions"].get(name) is None else f"{r['suggestions'][name]:.3g}"
                             for r in repeats)
            text += f" (median of {each})"
        rows.append({"rule": READING_LABELS.get(name, name), "lr": text, "use": use})
    return rows


def history_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    val = bool(rows) and "val_accuracy" in rows[0]
    head = ["epoch", "lr", "train loss", "train acc"] + (["val loss", "val acc"] if val else []) + \
        ["test loss", "test acc", "seconds"]
    body = []
    for r in rows:
        cells = [str(r["epoch"]), f"{r['lr']:.3e}", f"{r['train_loss']:.4f}", pct(r["train_accuracy"])]
        if val:
            cells += [f"{r['val_loss']:.4f}", pct(r["val_accuracy"])]
        body.append(cells + [f"{r['test_loss']:.4f}", pct(r["test_accuracy"]), f"{r['seconds']:.1f}"])
    return head, body


def class_table(summary: dict | None) -> dict | None:
    """Per-class rows (accuracy, right/total, most often mistaken for) and the confusion matrix as heat cells."""
    if not summary or "confusion_matrix" not in summary:
        return None
    classes = summary["confusion_matrix"]["classes"]
    matrix = summary["confusion_matrix"]["rows_true_cols_predicted"]
    per_class = summary.get("per_class_accuracy", {})
    rows, cells = [], []
    for i, name in enumerate(classes):
        total = sum(matrix[i])
        others = [(n, classes[j]) for j, n in enumerate(matrix[i]) if j != i and n > 0]
        worst = max(others) if others else None
        rows.append({"name": name, "accuracy": pct(per_class.get(name)), "right": f"{matrix[i][i]:,} / {total:,}",
                     "confused": f"{worst[1]} ({worst[0]:,})" if worst else "-"})
        # a cell's shade is its share of the true class's images (rows sum to 1): comparable across classes
        cells.append([{"count": n, "share": n / total if total else 0.0, "diagonal": i == j}
                      for j, n in enumerate(matrix[i])])
    return {"classes": classes, "rows": rows, "cells": cells}


def curve_charts(rows: list[dict], epochs: int, target: float, target_epoch: int) -> list[str]:
    """Loss and accuracy per epoch (train, validation, test), the x axis spanning the whole planned run."""
    splits = [s for s in ("train", "val", "test") if rows and f"{s}_loss" in rows[0]]
    names = {"train": "train", "val": "validation", "test": "test"}
    x_range = (1, max(epochs, 2))
    losses = [r[f"{s}_loss"] for r in rows for s in splits]
    loss = Chart("loss", "epoch", "loss", x_range, (0, max(losses) * 1.08 if losses else 1), x_integer=True,
                 series=[Series(names[s], [(r["epoch"], r[f"{s}_loss"]) for r in rows], COLORS[s], markers=True)
                         for s in splits])
    acc = Chart("accuracy", "epoch", "accuracy", x_range, (0, 1), y_format="{:.0%}", x_integer=True,
                hlines=[(target, f"target {target_text(target)}")],
                vlines=[(target_epoch, f"from epoch {target_epoch}")] if target_epoch <= epochs else [],
                series=[Series(names[s], [(r["epoch"], r[f"{s}_accuracy"]) for r in rows], COLORS[s], markers=True)
                        for s in splits])
    return [render(loss), render(acc)]


def schedule_chart(applied: list[float], planned: list[tuple[int, float]], lr_min: float, lr_max: float) -> str:
    """The LR each iteration used (recorded), over the planned One Cycle (dashed) for the part still to come."""
    last = planned[-1][0] if planned else max(len(applied) - 1, 1)
    series = [Series("applied", list(enumerate(applied)), "#1f77b4")]
    if len(applied) <= last:  # the plan is drawn only while part of it is still to come
        series.insert(0, Series("planned", [(float(i), float(v)) for i, v in planned], "#999", dashed=True))
    notes = []
    if applied:
        peak = max(range(len(applied)), key=applied.__getitem__)
        notes.append((peak, applied[peak], f"peak {applied[peak]:.3g} at iteration {peak}"))
    chart = Chart("One Cycle LR schedule", "iteration", "learning rate", (0, last), (0, lr_max * 1.15),
                  y_format="{:.2g}", x_integer=True, series=series, notes=notes,
                  hlines=[(lr_min, f"LRMIN {lr_min:.3g}")], ref_label_at=0.45, width=1000, height=280)
    return render(chart)
