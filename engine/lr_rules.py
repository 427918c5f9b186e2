"""Readings of an LR range-test curve: pure functions of (lrs, losses), robust to NaN/inf.

The range test records the raw loss of every iteration. `reading_curve` turns it into the curve the
readings are taken on: the first points trimmed (fastai's skip_start), then smoothed by a centred
Gaussian over log10(LR). A centred smoother does not lag: the exponential average FastaiLRFinder
reports (weight 0.05 on the newest loss, about 20 iterations of memory) shifts every feature of the
curve to higher LRs, by up to a decade and a half at 12.5 points per decade.

- steepest:   the LR of the steepest fall (minimum central-difference gradient) before the loss
              minimum: the rule of ignite's FastaiLRFinder.lr_suggestion and torch-lr-finder.
- valley:     fastai's rule: the longest stretch over which the loss keeps falling (the longest
              decreasing subsequence), and the point half way along it (fastai's 1/3 + 1/6).
- minimum:    the LR of the lowest loss, divided by 10 (fastai's `minimum`, Leslie Smith's habit).
- fall80:     the first LR at which the loss has made 80% of its fall (first value to minimum).
- warm80x16:  the default: sixteen times guess80 (WARM_FACTORS), not capped, on a curve taken after the range test's
              warm-up (20 steps at 1e-4, the rule's own --lr-find-warmup), which starts below ln C and reads steadily
              over seeds at both widths, but at a level the One Cycle's 5-epoch warm-up outgrows (BENCHMARKS.md).
              warm80x12: twelve times.
- guess80x2:  twice guess80 (GUESS_FACTOR), capped at the lowest loss's LR (the default 2026-12-06 to 12-07): the 80%
              point of a 100-step test lies below the LRMAX a 24-epoch One Cycle trains best with, at full width by 2x.
- guess80:    the same as fall80, but the fall is measured from the loss of a uniform guess, ln C (C classes), when the
              curve starts above it: an untrained network that is confidently wrong first falls to ln C by
              shrinking its logits (recovery from its initialisation, not learning), and that part of the
              fall would pull fall80's level, and LRMAX, down (at --width 64, seed 0: a start at 4.5).
- fall_start: the first LR at which the loss has fallen FALL_SHARE of the way from its first value
              to its minimum: where learning starts.
- two_thirds: the point two thirds of the way, in log LR, from fall_start to the minimum's LR.
- mid:        the geometric mean of `steepest` and the minimum's LR.

Each returns None where the curve has no such point (it never falls, or has too few points).
"""
from __future__ import annotations

import math

import numpy as np

# LRMAX may be read by any of these (--lr-rule); LRMIN is read by lrmin_for (a ratio below LRMAX).
LRMAX_RULES = ("warm80x16", "guess80x2", "warm80x12", "guess80", "fall80", "steepest", "valley", "minimum", "two_thirds", "mid")
# guess80: fall80 (chosen on validation runs and its steadiness over seeds) made blind to the height of the
# curve's start, which at full width put fall80 ten times too low. guess80x2: twice that, the default
# 2026-12-06 to 12-07: on validation splits LRMAX 2.5e-3 and 7.5e-3 trained 2 points above 8e-4 at full width, where guess80
# read 5.8e-4 to 1.5e-3, and 2.5e-2 trained as well as 6.3e-3 at width 16 (BENCHMARKS.md). warm80x16, the default
# since 2026-12-07: the same kind of reading on a curve after a 20-step warm-up, whose spread over seeds is 1.45x at
# width 16 (six seeds) and 1.20x at full width (three), where guess80x2's is 1.74x to 2.5x (BENCHMARKS.md)
DEFAULT_RULE = "warm80x16"
# fall_start: the share of the total fall (first value to minimum) that marks the start of learning.
FALL_SHARE = 0.05
# fall80: the share of the total fall at which LRMAX is read.
FALL80_SHARE = 0.8
# guess80x2: LRMAX = this many times guess80 (capped at the lowest loss's LR).
GUESS_FACTOR = 2.0
# warm80xN: LRMAX = N times guess80 of a warmed curve. The warmed readings (20 steps at 1e-4) were 1.45e-3 to 2.09e-3
# at width 16 (six seeds) and 1.58e-4 to 1.91e-4 at width 64 (three seeds), and LRMAX trained best from about 6e-3 to
# 2.5e-2 (the highest tried) at width 16 and 2.5e-3 to 7.5e-3 at width 64 (validation runs, BENCHMARKS.md); no one
# factor centres both. 12 reads 1.7e-2 to 2.5e-2 and 1.9e-3 to 2.3e-3: its full-width headline missed 90% at epoch 19
# by 0.11 point. 16, the least that puts all three full-width seeds in their band (2.5e-3 to 3.1e-3), reads 2.3e-2 to
# 3.3e-2 at width 16.
WARM_FACTORS = {"warm80x16": 16.0, "warm80x12": 12.0}
# The rules calibrated for a curve taken after a warm-up, and its steps: what --lr-find-warmup means when not given
# (a warning when it is given as 0).
WARMED_RULES = {rule: 20 for rule in WARM_FACTORS}
# What a warmed rule reads LRMAX as on a curve the warm-up did not warm (none, or one that left the loss above ln C:
# the digits test's 20 steps at batch 64 left it at 2.45, where sixteen times guess80 read 10x the lowest loss's LR and
# trained to 82% instead of 97%): the calibration for an untrained curve. The warm-up's last WARMED_TAIL losses
# (their mean) decide; on CIFAR-10 they ended at 2.12-2.23 (width 16) and 1.61-1.82 (width 64), below ln 10 = 2.30.
UNWARMED_RULE = "guess80x2"
WARMED_TAIL = 5
# Bounds on LRMAX / LRMIN, so the One Cycle has a real warm-up, comes down far enough at the end (there is no
# annihilation below LRMIN), and has no near-zero start. 25 is torch OneCycleLR's div_factor.
MIN_RATIO, MAX_RATIO = 25.0, 100.0
# LRMAX / LRMIN when the curve shows no start of its fall below LRMAX.
FALLBACK_DIV = 25.0
# reading_curve: the share of the first points left out, and the smoother's width (Gaussian sigma, decades of LR).
TRIM_START = 0.1
SMOOTH_DECADES = 0.1

# The range test's warm-up (--lr-find-warmup N; by default the rule's own, WARMED_RULES): N steps at this constant LR
# before the test.
# 20 steps at 1e-4 steadied the width-16 reading (1.45x over six seeds) but trained the full-width network to a
# loss of 1.8 and put its reading ten times lower, below the band it trains in (BENCHMARKS.md): the warm80 rules' factor.
WARMUP_LR = 1e-4

# diverged: the reading curve rose to this many times its lowest loss after it (ignite FastaiLRFinder's diverge_th
# default). FastaiLRFinder applies it to its lagged average, which at LR 10 can still be below 5x when the raw losses
# are 15-120x their minimum (CIFAR-10, weight decay 1e-4: BENCHMARKS.md), so its early stop alone is no sign.
DIVERGE_FACTOR = 5.0

# How the plot and the report name each reading.
READING_LABELS = {"fall80": "80% of the fall", "guess80": "80% of the fall from ln C",
                  "guess80x2": "2x the 80% point from ln C", "warm80x16": "16x the 80% point (after a warm-up)", "warm80x12": "12x the 80% point (after a warm-up)", "two_thirds": "two thirds of the fall", "steepest": "steepest fall",
                  "valley": "valley (fastai)", "minimum": "minimum / 10", "mid": "steepest-minimum middle",
                  "fall_start": "the loss starts to fall"}

LR_RULE_HELP = ("which reading of the range-test curve (raw losses, first tenth trimmed, centred smoothing) sets "
                "LRMAX: warm80x16 (sixteen times guess80 of a test after a 20-step warm-up, which the rule brings; "
                "warm80x12: twelve times), guess80x2 (twice guess80, but not above the lowest loss's LR), guess80 (where the loss has "
                "made 80%% of its fall to its minimum, the fall measured from "
                "a uniform guess's loss ln C, or from the first value if that is lower), fall80 (the same, measured "
                "from the first value; it trained better at --width 16 with the weight decay 1e-2 of that time, BENCHMARKS.md), steepest (the steepest fall: ignite's and torch-lr-finder's suggestion), "
                "valley (fastai's), minimum (the minimum's LR / 10), two_thirds (two thirds of the way, in log LR, "
                "from where the loss starts to fall to its minimum) or mid (between steepest and the minimum); every "
                "reading is in plots/lr_finder.png and lr_finder.json")
LR_MIN_HELP = (f"LRMIN; default: from the LR range test (where the loss starts to fall, kept between "
               f"LRMAX/{MAX_RATIO:g} and LRMAX/{MIN_RATIO:g})")


def warmup_steps(rule: str, given: int | None = None) -> int:
    """The range test's warm-up: `given` (--lr-find-warmup) where set, else the rule's own (WARMED_RULES; 0: none)."""
    return WARMED_RULES.get(rule, 0) if given is None else given


def warmed_loss(warmup_losses, tail: int = WARMED_TAIL) -> float | None:
    """The mean of the warm-up's last `tail` losses (None: no warm-up, or a non-finite loss among them)."""
    last = [float(v) for v in list(warmup_losses)[-tail:]]
    return sum(last) / len(last) if last and all(math.isfinite(v) for v in last) else None


def finite_curve(lrs, losses) -> tuple[list[float], list[float]]:
    """The curve up to its first non-finite loss (a NaN or inf ends the test: what follows means nothing)."""
    kept_lrs, kept_losses = [], []
    for lr, loss in zip(lrs, losses):
        if not (math.isfinite(lr) and math.isfinite(loss) and lr > 0):
            break
        kept_lrs.append(float(lr))
        kept_losses.append(float(loss))
    return kept_lrs, kept_losses


def centred_smooth(lrs, losses, sigma_decades: float = SMOOTH_DECADES) -> list[float]:
    """Each loss replaced by a Gaussian-weighted mean of its neighbours in log10(LR): no lag, unlike an EMA."""
    if not losses:
        return []
    x, y = np.log10(np.asarray(lrs, dtype=float)), np.asarray(losses, dtype=float)
    weights = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma_decades) ** 2)
    return list(weights @ y / weights.sum(axis=1))


def reading_curve(lrs, raw_losses, trim_start: float = TRIM_START,
                  sigma_decades: float = SMOOTH_DECADES) -> tuple[list[float], list[float]]:
    """(lrs, smoothed losses): the finite raw curve, smoothed (centred_smooth), its first `trim_start` cut."""
    lrs, losses = finite_curve(lrs, raw_losses)
    smoothed = centred_smooth(lrs, losses, sigma_decades)
    start = int(len(lrs) * trim_start)
    return lrs[start:], smoothed[start:]


def diverged(losses, factor: float = DIVERGE_FACTOR) -> bool:
    """The curve blew up: a non-finite loss, or a rise after its lowest point to `factor` times it.

    Read on the reading curve (no lag), not on FastaiLRFinder's exponential average, which can trail a raw
    curve that has risen to 50x its minimum. A loss that is still falling at the end of the test has not
    diverged: the best LRMAX may lie above the tested range.
    """
    losses = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in losses):
        return True
    if len(losses) < 2:
        return False
    low = min(losses)
    return max(losses[losses.index(low):]) > factor * max(low, 0.0)


def steepest(lrs, losses) -> float | None:
    """The steepest fall before the minimum, as ignite's lr_suggestion finds it (None: under 3 points)."""
    lrs, losses = finite_curve(lrs, losses)
    if not falls(losses):
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
    if n < 2 or not falls(losses):
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


def falls(losses) -> bool:
    """The loss ends up below its first value by more than rounding (a smoothed flat curve is not a fall)."""
    return len(losses) >= 2 and losses[0] - min(losses) > 1e-9 * max(1.0, abs(losses[0]))


def lowest(lrs, losses) -> float | None:
    """The LR of the lowest loss (None: the loss never falls below its first value)."""
    lrs, losses = finite_curve(lrs, losses)
    if not falls(losses):
        return None
    return lrs[losses.index(min(losses))]


def minimum(lrs, losses) -> float | None:
    """The LR of the lowest loss, divided by 10 (None: the loss never falls below its first value)."""
    lr = lowest(lrs, losses)
    return None if lr is None else lr / 10


def fall_point(lrs, losses, share: float, top: float | None = None) -> float | None:
    """The first LR at which the loss is `share` of the way down from its first value (or from `top`, where
    that is lower) to its minimum (None: it never falls below that start)."""
    lrs, losses = finite_curve(lrs, losses)
    if len(losses) < 2:
        return None
    start = losses[0] if top is None else min(losses[0], top)
    if not falls([start, *losses[1:]]):
        return None
    threshold = start - share * (start - min(losses))
    return next(lr for lr, loss in zip(lrs, losses) if loss <= threshold)


def fall_start(lrs, losses, top: float | None = None) -> float | None:
    """Where the loss has made FALL_SHARE (5%) of its fall (from its first value, or from `top` where that is
    lower): where learning starts."""
    return fall_point(lrs, losses, FALL_SHARE, top)


def fall80(lrs, losses) -> float | None:
    """Where the loss has made 80% of its fall, from its first value to its minimum.

    A level crossed on the steep part of the curve: unlike the steepest point or the minimum (a flat
    bottom), noise moves it little; and it lies below the minimum's LR, where training is still stable.
    """
    return fall_point(lrs, losses, FALL80_SHARE)


def guess80(lrs, losses, num_classes: int | None = None) -> float | None:
    """fall80 with the fall measured from ln(num_classes), the loss of a uniform guess, where the curve starts
    above it (without num_classes: fall80)."""
    return fall_point(lrs, losses, FALL80_SHARE, None if num_classes is None else math.log(num_classes))


def guess80x2(lrs, losses, num_classes: int | None = None) -> float | None:
    """GUESS_FACTOR (2) times guess80, but never above the LR of the lowest loss: the 100-step test's 80% point lies
    below the LRMAX a 24-epoch One Cycle trains best with (BENCHMARKS.md)."""
    lr = guess80(lrs, losses, num_classes)
    # a guess80 reading means the loss fell below its first value, so the curve has a lowest loss
    return None if lr is None else min(GUESS_FACTOR * lr, lowest(lrs, losses))


def warm80(lrs, losses, num_classes: int | None = None, factor: float = WARM_FACTORS["warm80x16"]) -> float | None:
    """`factor` times guess80, not capped at the lowest loss's LR: for a curve taken after the range test's warm-up
    (--lr-find-warmup), whose readings are steady over seeds but lie below what a 24-epoch One Cycle, with its own
    5-epoch warm-up, trains best with (BENCHMARKS.md). The rules warm80x12 and warm80x16 (WARM_FACTORS)."""
    lr = guess80(lrs, losses, num_classes)
    return None if lr is None else factor * lr


def two_thirds(lrs, losses, top: float | None = None) -> float | None:
    """Two thirds of the way, in log LR, from where the loss starts to fall (fall_start, with `top`) to where it
    is lowest."""
    start, end = fall_start(lrs, losses, top), lowest(lrs, losses)
    if start is None or end is None or end <= start:
        return None
    return start * (end / start) ** (2 / 3)


def mid(lrs, losses) -> float | None:
    """The geometric mean of the steepest fall's LR and the lowest loss's LR."""
    a, b = steepest(lrs, losses), lowest(lrs, losses)
    return None if a is None or b is None else math.sqrt(a * b)


def suggestions(lrs, losses, num_classes: int | None = None) -> dict[str, float | None]:
    """Every rule's reading of a (smoothed) curve, by name (guess80 needs num_classes; without it, fall80's)."""
    return {"fall80": fall80(lrs, losses), "guess80": guess80(lrs, losses, num_classes),
            "guess80x2": guess80x2(lrs, losses, num_classes),
            **{rule: warm80(lrs, losses, num_classes, factor) for rule, factor in WARM_FACTORS.items()},
            "steepest": steepest(lrs, losses), "valley": valley(lrs, losses),
            "minimum": minimum(lrs, losses), "two_thirds": two_thirds(lrs, losses), "mid": mid(lrs, losses),
            "fall_start": fall_start(lrs, losses)}
