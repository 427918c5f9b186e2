"""PNG figures: the range test, the One Cycle schedule, and the learning curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from engine.lr_rules import READING_LABELS  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG (folders created) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_figure(fig, dpi: int = 100) -> np.ndarray:
    """Draw a figure once into an (H, W, 3) uint8 array and close it (one draw serves the PNG and TensorBoard)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image)
    return path


# (marker, size): drawn largest first, so a reading that falls on another stays visible around it
SUGGESTION_MARKERS = {"fall80": ("*", 15), "guess80": ("X", 12), "guess80x2": ("p", 11), "warm80x16": ("H", 11), "warm80x12": ("h", 11), "two_thirds": ("D", 11), "steepest": ("v", 13), "valley": ("o", 10),
                      "minimum": ("s", 7), "mid": ("P", 9), "fall_start": ("^", 9)}


def lr_finder_figure(finder: dict):
    """The range test (a RangeTest.to_dict(), as lr_finder.json holds it): the raw loss of each iteration, the
    curve the readings are taken on (centred smoothing), FastaiLRFinder's lagged average, LRMIN/LRMAX as
    lines and every reading as a marker on the reading curve; with --lr-find-repeats, the other repeats'
    reading curves, and the readings are their medians."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    raw, reading = finder.get("loss_raw") or [], list(zip(finder.get("reading_lr") or [], finder.get("reading_loss") or []))
    if raw:
        ax.plot(finder["lr"][:len(raw)], raw, ".", color="0.6", markersize=3, label="loss (each iteration)")
    ax.plot(finder["lr"], finder["loss"], color="tab:orange", lw=1, label="FastaiLRFinder's average (lags)")
    if reading:
        ax.plot(*zip(*reading), color="0.15", lw=1.8, label="reading curve (centred smoothing)")
    repeats = finder.get("repeats") or []
    for i, other in enumerate(repeats[1:]):  # --lr-find-repeats: the re-drawn initialisations' curves
        ax.plot(other["reading_lr"], other["reading_loss"], color="tab:blue", lw=1, alpha=0.6,
                label=("the other repeat" if len(repeats) == 2 else f"the other {len(repeats) - 1} repeats")
                + " (readings: the medians of all)" if i == 0 else None)
    lr_min, lr_max, rule = finder["lr_min"], finder["lr_max"], finder.get("rule")
    ax.axvline(lr_min, color="tab:green", ls="--", label=f"LRMIN {lr_min:.3g}")
    ax.axvline(lr_max, color="tab:red", ls="--", label=f"LRMAX {lr_max:.3g}" + (f" ({rule})" if rule else ""))
    curve = [(lr, loss) for lr, loss in (reading or zip(finder["lr"], finder["loss"])) if np.isfinite(loss)]
    readings = sorted((finder.get("suggestions") or {}).items(), key=lambda kv: -SUGGESTION_MARKERS.get(kv[0], ("x", 8))[1])
    for name, lr in readings:
        if lr is None or not curve:
            continue
        # the marker sits on the curve at the nearest tested LR (minimum/10 may fall between points)
        near = min(curve, key=lambda p: abs(np.log(p[0]) - np.log(lr)))
        marker, size = SUGGESTION_MARKERS.get(name, ("x", 8))
        ax.plot([lr], [near[1]], marker, markersize=size, markeredgecolor="black",
                label=f"{READING_LABELS.get(name, name)} {lr:.3g}", zorder=3)
    starts = [curve[0][1]] if curve else []  # every repeat's curve in view, not only the first's
    lows = [loss for _, loss in curve]
    for other in repeats[1:]:
        finite = [v for v in other["reading_loss"] if np.isfinite(v)]
        starts, lows = starts + finite[:1], lows + finite
    if curve:  # a diverging tail would flatten the interesting part: cap the view above the highest first loss
        first, low = max(starts), min(lows)
        ax.set_ylim(low - 0.1 * (first - low + 1e-9), max(first * 1.25, low + 1e-6))
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="loss", title="LR range test")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def one_cycle_figure(lrs, lr_max: float):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(len(lrs)), lrs)
    if lrs:
        peak = max(range(len(lrs)), key=lrs.__getitem__)
        ax.plot([peak], [lrs[peak]], "ro", label=f"peak {lrs[peak]:.3g} at iteration {peak}")
        ax.legend()
    ax.set(xlabel="iteration", ylabel="learning rate", title=f"One Cycle (LRMAX {lr_max:.3g})")
    return fig


def curves_figure(rows):
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    splits = [("train", "train"), ("val", "validation"), ("test", "test")]
    for key, label in splits:
        if rows and f"{key}_loss" in rows[0]:  # val_* only with --val-split
            ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], "o-", label=label)
            ax_acc.plot(epochs, [r[f"{key}_accuracy"] for r in rows], "o-", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


def save_lr_finder_plot(path: Path, finder: dict) -> Path:
    return save_figure(lr_finder_figure(finder), path)


def save_one_cycle_plot(path: Path, lrs, lr_max) -> Path:
    return save_figure(one_cycle_figure(lrs, lr_max), path)


def save_curves_plot(path: Path, rows) -> Path:
    return save_figure(curves_figure(rows), path)


def save_final_plots(output_dir: Path, lrs, lr_max: float, rows) -> None:
    """plots/one_cycle.png and plots/curves.png, drawn once the run has ended (or found ended when resumed)."""
    save_one_cycle_plot(Path(output_dir) / "plots" / "one_cycle.png", lrs, lr_max)
    save_curves_plot(Path(output_dir) / "plots" / "curves.png", rows)
