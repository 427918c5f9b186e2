"""PNG figures: the range test, the One Cycle schedule, and the learning curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
SUGGESTION_MARKERS = {"steepest": ("v", 13), "valley": ("o", 10), "minimum": ("s", 7), "fall_start": ("^", 9)}
SUGGESTION_LABELS = {"steepest": "steepest fall", "valley": "valley (fastai)", "minimum": "minimum / 10",
                     "fall_start": "fall starts"}


def lr_finder_figure(lrs, losses, lr_min: float, lr_max: float, suggestions: dict | None = None,
                     rule: str | None = None):
    """The smoothed loss against the LR, LRMIN/LRMAX as lines and every rule's reading as a marker."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="0.3", label="smoothed loss")
    ax.axvline(lr_min, color="tab:green", ls="--", label=f"LRMIN {lr_min:.3g}")
    ax.axvline(lr_max, color="tab:red", ls="--", label=f"LRMAX {lr_max:.3g}" + (f" ({rule})" if rule else ""))
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if np.isfinite(loss)]
    readings = sorted((suggestions or {}).items(), key=lambda kv: -SUGGESTION_MARKERS.get(kv[0], ("x", 8))[1])
    for name, lr in readings:
        if lr is None or not finite:
            continue
        # the marker sits on the curve at the nearest tested LR (minimum/10 may fall between points)
        near = min(finite, key=lambda p: abs(np.log(p[0]) - np.log(lr)))
        marker, size = SUGGESTION_MARKERS.get(name, ("x", 8))
        ax.plot([lr], [near[1]], marker, markersize=size, markeredgecolor="black",
                label=f"{SUGGESTION_LABELS.get(name, name)} {lr:.3g}", zorder=3)
    if finite:  # a diverging tail would flatten the interesting part: cap the view at twice the first loss
        first = finite[0][1]
        low = min(loss for _, loss in finite)
        ax.set_ylim(low - 0.05 * (first - low + 1e-9), max(first * 1.5, low + 1e-6))
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="loss", title="LR range test")
    ax.legend(fontsize=8)
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


def save_lr_finder_plot(path: Path, lrs, losses, lr_min, lr_max, suggestions=None, rule=None) -> Path:
    return save_figure(lr_finder_figure(lrs, losses, lr_min, lr_max, suggestions, rule), path)


def save_one_cycle_plot(path: Path, lrs, lr_max) -> Path:
    return save_figure(one_cycle_figure(lrs, lr_max), path)


def save_curves_plot(path: Path, rows) -> Path:
    return save_figure(curves_figure(rows), path)
