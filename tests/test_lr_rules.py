"""Readings of a range-test curve (engine/lr_rules.py) on curves whose answers are known, and against
the libraries' own suggestions on the same curve."""
import math

import numpy as np
import pytest

from engine.lr_finder import choose_lr_bounds
from engine.lr_rules import (LRMAX_RULES, centred_smooth, diverged, fall80, fall_start, guess80, guess80x2, mid, warm80, minimum, reading_curve,
                             steepest, suggestions, two_thirds, valley)

LRS = list(np.geomspace(1e-6, 1.0, 100))


def plateau_fall_rise():
    """Flat at 3.0 for 20 points, a half-cosine fall to 1.0 over the next 60, then a rise: answers by hand."""
    fall = [2 + math.cos(math.pi * k / 60) for k in range(1, 61)]
    losses = [3.0] * 20 + fall + list(np.linspace(1.0, 4.0, 21)[1:])
    return LRS, losses


def test_known_answers_on_a_plateau_fall_rise_curve():
    lrs, losses = plateau_fall_rise()
    # minimum: point 79 (the end of the fall), over 10
    assert minimum(lrs, losses) == pytest.approx(lrs[79] / 10)
    # valley: the longest decreasing run is one plateau point + the 60 falling ones (61 points ending at
    # 79, start = 79 - 61 = 18); half way along it: 18 + int(61/3) + int(61/6) = 48
    assert valley(lrs, losses) == lrs[48]
    # fall_start: 5% of the 2.0 fall is 2.9: 2 + cos(pi k/60) <= 2.9 first at k = 9, point 28
    assert fall_start(lrs, losses) == lrs[28]
    # steepest: the half-cosine falls fastest half way down, at k = 30: point 49
    assert steepest(lrs, losses) == lrs[49]
    # two_thirds: from point 28 to point 79, two thirds of the way in log LR (the grid is log-uniform): point 62
    assert two_thirds(lrs, losses) == pytest.approx(lrs[62], rel=1e-9)
    # mid: between the steepest point 49 and the lowest 79: point 64
    assert mid(lrs, losses) == pytest.approx(lrs[64], rel=1e-9)
    # fall80: 80% of the 2.0 fall is 1.4: 2 + cos(pi k/60) <= 1.4 first at k = 43 (cos = -0.6293), point 62
    assert fall80(lrs, losses) == lrs[62]


def recovery_then_learning(start: float):
    """Flat at `start` for 10 points, a straight drop to ln 10 over 10 (an untrained network shrinking its
    confidently wrong logits), a half-cosine fall from ln 10 by 1.0 over 60 points (learning), then a rise."""
    ln10 = math.log(10)
    learning = [ln10 - 0.5 + 0.5 * math.cos(math.pi * k / 60) for k in range(1, 61)]
    return LRS, [start] * 10 + list(np.linspace(start, ln10, 11)[1:]) + learning + list(np.linspace(ln10 - 1, 4, 21)[1:])


def test_guess80_measures_the_fall_from_a_uniform_guess():
    lrs, losses = recovery_then_learning(4.5)
    # guess80: 80% of the fall from ln 10 to ln 10 - 1 is ln 10 - 0.8: cos(pi k/60) <= -0.6 first at k = 43, point 62
    assert guess80(lrs, losses, num_classes=10) == lrs[62]
    # fall80 measures from 4.5: the level 4.5 - 0.8 (4.5 - ln 10 + 1), cos(pi k/60) <= 0.278..., k = 25, point 44
    assert fall80(lrs, losses) == lrs[44]
    assert suggestions(lrs, losses, num_classes=10)["guess80"] == lrs[62]
    # without the number of classes, or on a curve that starts below ln C, guess80 is fall80
    assert guess80(lrs, losses) == fall80(lrs, losses)
    low = [v - 1 for v in recovery_then_learning(math.log(10))[1]]
    assert guess80(lrs, low, num_classes=10) == fall80(lrs, low)


def test_guess80x2_is_twice_guess80_below_the_lowest_loss():
    lrs, losses = recovery_then_learning(4.5)
    assert guess80x2(lrs, losses, num_classes=10) == pytest.approx(2 * lrs[62])
    assert suggestions(lrs, losses, num_classes=10)["guess80x2"] == pytest.approx(2 * lrs[62])
    # a fall over 5 points (1.15x apart), then a rise: the 80% point is one point below the lowest loss, and
    # LRMAX stops there rather than at twice the 80% point
    ln10 = math.log(10)
    short = [ln10] * 40 + [ln10 - k / 5 for k in range(1, 6)] + [ln10 - 1 + k / 10 for k in range(1, 56)]
    assert guess80(lrs, short, num_classes=10) == lrs[43] and short.index(min(short)) == 44
    assert guess80x2(lrs, short, num_classes=10) == lrs[44]
    assert guess80x2(lrs, [2.0] * len(lrs), num_classes=10) is None  # no fall, no reading


@pytest.mark.parametrize("rule, factor", [("warm80x16", 16), ("warm80x12", 12)])
def test_warm80_rules_are_their_factor_times_guess80_even_past_the_lowest_loss(rule, factor):
    lrs, losses = recovery_then_learning(4.5)
    assert warm80(lrs, losses, num_classes=10, factor=factor) == pytest.approx(factor * lrs[62])
    assert suggestions(lrs, losses, num_classes=10)[rule] == pytest.approx(factor * lrs[62])
    # the short fall of the guess80x2 test: guess80 is one point below the lowest loss, and the warmed rules are not
    # capped there (a warmed curve bottoms out below what the One Cycle trains with)
    ln10 = math.log(10)
    short = [ln10] * 40 + [ln10 - k / 5 for k in range(1, 6)] + [ln10 - 1 + k / 10 for k in range(1, 56)]
    assert suggestions(lrs, short, num_classes=10)[rule] == pytest.approx(factor * lrs[43]) and factor * lrs[43] > lrs[44]
    assert warm80(lrs, [2.0] * len(lrs), num_classes=10, factor=factor) is None
    # as --lr-rule: LRMAX is the reading of the reading curve
    _, lr_max, _ = choose_lr_bounds(lrs, short, 1e-6, 1.0, rule=rule, num_classes=10)
    assert lr_max == pytest.approx(factor * suggestions(*reading_curve(lrs, short), num_classes=10)["guess80"])


def test_guess80_does_not_move_with_the_height_of_the_start_where_fall80_does():
    starts = (2.5, 3.5, 4.5, 6.0)
    assert {guess80(*recovery_then_learning(s), num_classes=10) for s in starts} == {LRS[62]}
    assert len({fall80(*recovery_then_learning(s)) for s in starts}) == len(starts)
    lr_min, lr_max, _ = choose_lr_bounds(*recovery_then_learning(6.0), 1e-6, 1.0, rule="guess80", num_classes=10)
    assert lr_max == suggestions(*reading_curve(*recovery_then_learning(6.0)), num_classes=10)["guess80"]
    assert lr_max / 100 <= lr_min <= lr_max / 25


def test_steepest_finds_the_inflection_of_a_sigmoid_fall():
    x = np.log10(LRS)
    losses = 2.3 - 1.5 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -1, (x + 1) ** 2 * 6, 0)
    assert steepest(LRS, losses) == pytest.approx(1e-3, rel=0.15)  # the sigmoid's centre, within a grid step


@pytest.mark.parametrize("where", [60, 85])
def test_a_nan_or_inf_ends_the_curve(where):
    lrs, losses = plateau_fall_rise()
    for bad in (math.nan, math.inf):
        broken = losses[:where] + [bad] + losses[where + 1:]
        assert suggestions(lrs, broken) == suggestions(lrs[:where], losses[:where])


def test_no_reading_where_the_curve_never_falls():
    none = {name: None for name in (*LRMAX_RULES, "fall_start")}
    rising = list(np.linspace(2.3, 9.0, 100))
    assert suggestions(LRS, rising) == none
    assert suggestions(LRS, [math.nan] * 100) == none
    assert suggestions(*reading_curve(LRS, [2.3] * 100)) == none  # smoothing a flat curve makes no fall of it


def test_a_curve_that_never_diverges_still_has_readings():
    falling = list(np.linspace(3.0, 1.0, 100))
    r = suggestions(LRS, falling)
    assert r["minimum"] == pytest.approx(LRS[-1] / 10)
    # fall_start: 0.1 of the 2.0 fall, in steps of 2/99: the 5th step
    assert r["valley"] == LRS[49] and r["fall_start"] == LRS[5]
    lr_min, lr_max, warnings = choose_lr_bounds(LRS, falling, 1e-6, 1.0, diverged=False, rule="valley")
    assert lr_max == suggestions(*reading_curve(LRS, falling))["valley"] and any("never diverged" in w for w in warnings)


def test_steepest_is_ignites_suggestion():
    from ignite.handlers import FastaiLRFinder

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = np.log10(LRS)
        losses = list(2.3 - 1.5 / (1 + np.exp(-(x - rng.uniform(-5, -2)) * 3)) + (x > -0.5) * (x + 0.5) ** 2 * 8
                      + rng.normal(0, 0.01, len(x)))
        finder = FastaiLRFinder()
        finder._history = {"lr": LRS, "loss": losses}
        assert steepest(LRS, losses) == finder.lr_suggestion()


def test_steepest_agrees_with_torch_lr_finder_on_a_u_curve():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torch_lr_finder import LRFinder

    x = np.log10(LRS)
    losses = list(2.3 - 1.5 / (1 + np.exp(-(x + 3.5) * 3)) + (x > -1) * (x + 1) ** 2 * 3)
    model = torch.nn.Linear(2, 2)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(), device="cpu")
    finder.history = {"lr": LRS, "loss": losses}
    fig, ax = plt.subplots()
    _, theirs = finder.plot(skip_start=0, skip_end=0, suggest_lr=True, ax=ax)
    plt.close(fig)
    # torch-lr-finder's np.gradient over the whole curve; ours over the falling part: one grid step apart at most
    assert 1 / 1.2 <= steepest(LRS, losses) / theirs <= 1.2


def test_valley_matches_fastais_reading_of_the_same_curve():
    """fastai's `valley` written out as its documentation describes it (longest valley, 1/3 + 1/6 along)."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        losses = list(np.cumsum(rng.normal(-0.01, 0.05, 100)) + 3)
        n, lds, max_start, max_end = len(losses), [1] * len(losses), 0, 0
        for i in range(1, n):
            for j in range(i):
                if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                    lds[i] = lds[j] + 1
                if lds[max_end] < lds[i]:
                    max_end, max_start = i, i - lds[i]
        sections = (max_end - max(max_start, 0)) / 3
        assert valley(LRS, losses) == LRS[max(max_start, 0) + int(sections) + int(sections / 2)]


@pytest.mark.parametrize("rule", LRMAX_RULES)
def test_every_rule_gives_ordered_bounds(rule):
    lrs, losses = plateau_fall_rise()
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-6, 1.0, rule=rule)
    assert lr_max == suggestions(*reading_curve(lrs, losses))[rule] and lr_max / 100 <= lr_min <= lr_max / 2
    assert not warnings


def sigmoid_fall(centre: float, n: int = 100, noise: float = 0.0, seed: int = 0):
    """A loss that falls by 1.5 around `centre` (log10 LR), then diverges past 1e-1: raw, with noise."""
    x = np.log10(LRS[:n])
    rng = np.random.default_rng(seed)
    return list(2.3 - 1.5 / (1 + np.exp(-(x - centre) * 3)) + (x > -1) * (x + 1) ** 2 * 6 + rng.normal(0, noise, n))


def ema(losses, weight=0.05):
    """FastaiLRFinder's smoothing: weight on the newest loss."""
    out = [losses[0]]
    for loss in losses[1:]:
        out.append(weight * loss + (1 - weight) * out[-1])
    return out


def test_the_centred_smoother_does_not_lag_where_the_exponential_one_does():
    raw = sigmoid_fall(-3.5)
    grid = LRS[1] / LRS[0]
    centred = steepest(*reading_curve(LRS, raw))
    lagged = steepest(LRS, ema(raw))
    assert 1 / grid <= centred / 10 ** -3.5 <= grid  # at the true steepest point, within a grid step
    assert lagged / 10 ** -3.5 > 10 ** 0.5  # the average's steepest point: half a decade late or more
    smoothed = centred_smooth(LRS, raw)
    assert max(abs(a - b) for a, b in zip(smoothed[20:80], raw[20:80])) < 0.02  # it follows the curve


def test_fall80_reads_noisy_curves_steadily_where_the_minimum_based_readings_do_not():
    """Noise of 0.03 on a fall of 1.5 (as at batch 512): fall80 crosses its level on the steep part of the curve;
    the steepest point and the minimum (on a flat bottom) wander with the noise, and so does two_thirds."""
    curves = [reading_curve(LRS, sigmoid_fall(-3.5, noise=0.03, seed=s)) for s in range(20)]
    spread = {rule: max(r) / min(r) for rule in ("fall80", "steepest", "two_thirds")
              for r in [[suggestions(*c)[rule] for c in curves]]}
    assert spread["fall80"] < 1.3 and spread["steepest"] > 2 and spread["two_thirds"] > 2, spread
    # the clean curve's fall80: where the sigmoid has made 80% of its 1.5 fall, (x + 3.5) * 3 = ln 4
    # (within about a grid step, 1.15x: the reading curve is trimmed and smoothed)
    clean = fall80(*reading_curve(LRS, sigmoid_fall(-3.5)))
    assert 1 / 1.25 < clean / 10 ** (-3.5 + math.log(4) / 3) < 1.25
    assert all(1 / 1.3 < suggestions(*c)["fall80"] / clean < 1.3 for c in curves)


def ignite_average(losses, beta=0.98):
    """FastaiLRFinder's smoothed loss: an exponential average with bias correction (its smooth_f = 0.05)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def test_divergence_is_read_on_the_curve_not_on_the_lagged_average():
    # The shape of a CIFAR-10 curve with weight decay 1e-4 (width 16, seed 1): from 3.7 down to 1.7 near 1e-2, then
    # up to about 30x its minimum at the last point. The lagged average stays below 5x its best, so FastaiLRFinder
    # never stops early.
    lrs = list(np.geomspace(1e-7, 10.0, 100))
    x = np.log10(lrs)
    losses = list(np.where(x < -1.6, 1.7 + 2.0 / (1 + np.exp(2.5 * (x + 3.8))), 1.7 * np.exp(0.5 * (x + 1.6) ** 2)))
    assert max(losses) > 20 * min(losses)
    average = ignite_average(losses)
    assert max(average[average.index(min(average)):]) < 5 * min(average)
    assert diverged(reading_curve(lrs, losses)[1])
    assert not diverged(reading_curve(lrs, list(np.geomspace(3.0, 1.0, 100)))[1])   # still falling at the end
    assert not diverged(reading_curve(lrs, [2.3] * 100)[1])                           # flat
    assert not diverged([3.0, 2.0, 1.0, 4.9])                                          # a rise under 5x
    assert diverged([3.0, 2.0, 1.0, 5.1]) and diverged([3.0, 2.0, math.nan]) and diverged([3.0, math.inf])
    assert diverged([3.0, 2.0, 1.0, 2.0], factor=1.5) and not diverged([1.0]) and not diverged([])
