"""Readings of an LR range-test curve: pure functions of (lrs, smoothed losses), robust to NaN/inf.

- steepest:   the LR of the steepest fall (minimum central-difference gradient) before the loss
              minimum: ignite's FastaiLRFinder.lr_suggestion.
- valley:     fastai's rule: the longest stretch over which the loss keeps falling (the longest
              decreasing subsequence), and the point half way along it (fastai's 1/3 + 1/6): the
              middle of the fall rather than its steepest instant.
- minimum:    the LR of the lowest loss, divided by 10 (fastai's `minimum`, Leslie Smith's habit).
- fall_start: the first LR at which the loss has fallen FALL_SHARE of the way from its first value
              to its minimum: where learning starts. LRMIN is read here.

Each returns None where the curve has no such point (it never falls, or has too few points).
"""
from __future__ import annotations

import math

# LRMAX may be read by any of these; LRMIN is always read by fall_start.
LRMAX_RULES = ("steepest", "valley", "minimum")
# fall_start: the share of the total fall (first value to minimum) that marks the start of learning.
FALL_SHARE = 0.05


def finite_curve(lrs, losses) -> tuple[list[float], list[float]]:
    """The curve up to its first non-finite loss (a NaN or inf ends the test: what follows means nothing)."""
    kept_lrs, kept_losses = [], []
    for lr, loss in zip(lrs, losses):
        if not (math.isfinite(lr) and math.isfinite(loss)):
            break
        kept_lrs.append(float(lr))
        kept_losses.append(float(loss))
    return kept_lrs, kept_losses


def steepest(lrs, losses) -> float | None:
    """The steepest fall before the minimum, as ignite's lr_suggestion finds it (None: under 3 points)."""
    lrs, losses = finite_curve(lrs, losses)
    if not losses:
        return None
    falling = losses[: losses.index(min(losses)) + 1]
    if len(falling) < 3:
        return None
    grads = [0.5 * (falling[i + 1] - falling[i - 1]) for i in range(1, len(falling) - 1)]
    return lrs[grads.index(min(grads)) + 1]


def valley(lrs, losses) -> float | None:
    """fastai's valley: the middle of the longest decreasing run of the loss (None: it never falls)."""
    lrs, losses = finite_curve(lrs, losses)
    n = len(losses)
    if n < 2:
        return None
    # lds[i]: length of the longest strictly decreasing subsequence ending at i
    lds = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[i] > lds[end]:
            end, start = i, i - lds[i]
    if lds[end] < 2:
        return None
    start = max(start, 0)  # fastai's start is one before the run's first point; -1 would index from the end
    third = (end - start) / 3
    return lrs[start + int(third) + int(third / 2)]


def minimum(lrs, losses) -> float | None:
    """The LR of the lowest loss, divided by 10 (None: the loss never falls below its first value)."""
    lrs, losses = finite_curve(lrs, losses)
    if len(losses) < 2 or min(losses) >= losses[0]:
        return None
    return lrs[losses.index(min(losses))] / 10


def fall_start(lrs, losses, share: float = FALL_SHARE) -> float | None:
    """The first LR at which the loss is `share` of the way down from its first value to its minimum."""
    lrs, losses = finite_curve(lrs, losses)
    if len(losses) < 2 or min(losses) >= losses[0]:
        return None
    threshold = losses[0] - share * (losses[0] - min(losses))
    return next(lr for lr, loss in zip(lrs, losses) if loss <= threshold)


def suggestions(lrs, losses) -> dict[str, float | None]:
    """Every rule's reading of the curve, by name."""
    return {"steepest": steepest(lrs, losses), "valley": valley(lrs, losses), "minimum": minimum(lrs, losses),
            "fall_start": fall_start(lrs, losses)}
