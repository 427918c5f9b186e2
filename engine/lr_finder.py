"""The LR range test (ignite's FastaiLRFinder) and the rule that turns its curve into LRMIN and LRMAX."""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import FastaiLRFinder

from engine.lr_rules import (DEFAULT_RULE, DIVERGE_FACTOR, FALLBACK_DIV, LRMAX_RULES, MAX_RATIO, MIN_RATIO, WARMED_RULES,
                             UNWARMED_RULE, WARMUP_LR, warmed_loss, warmup_steps)
from engine.lr_rules import diverged as curve_diverged
from engine.lr_rules import finite_curve, reading_curve, suggestions
from engine.trainer import StepSpeed, create_trainer

log = logging.getLogger(__name__)

@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]          # smoothed by FastaiLRFinder's exponential average (lags the raw curve)
    lr_min: float
    lr_max: float
    suggestion: float | None     # FastaiLRFinder's own steepest-gradient LR on its lagged curve, None if it had none
    warnings: list[str] = field(default_factory=list)
    rule: str = DEFAULT_RULE     # which reading of the curve set LRMAX
    suggestions: dict[str, float | None] = field(default_factory=dict)  # every rule's reading (engine/lr_rules.py)
    raw_losses: list[float] = field(default_factory=list)  # the loss of each iteration, as the step returned it
    reading_lrs: list[float] = field(default_factory=list)  # the curve the readings are taken on (reading_curve)
    reading_losses: list[float] = field(default_factory=list)
    # --lr-find-repeats > 1: every repeat's curve and readings, the first (the model as built) first; the curve fields
    # above are the first repeat's, `suggestions` and the bounds the medians over all
    repeats: list[dict] = field(default_factory=list)
    # the warm-up before the test (--lr-find-warmup): its steps, its constant LR and the loss of each of its steps
    # (the first repeat's); 0 steps: none
    warmup_steps: int = 0
    warmup_lr: float | None = None
    warmup_losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"lr": self.lrs, "loss": self.losses, "loss_raw": self.raw_losses, "reading_lr": self.reading_lrs,
               "reading_loss": self.reading_losses, "lr_min": self.lr_min, "lr_max": self.lr_max,
               "rule": self.rule, "suggestions": self.suggestions, "suggestion": self.suggestion,
               "warnings": self.warnings,
               "warmup": {"steps": self.warmup_steps, "lr": self.warmup_lr, "loss_raw": self.warmup_losses}}
        if self.repeats:
            out["repeats"] = self.repeats
        return out


def run_range_test(model, optimizer, loss_fn, loader, device, start_lr: float, end_lr: float,
                   num_iter: int, speed: StepSpeed = StepSpeed(), rule: str = DEFAULT_RULE,
                   num_classes: int | None = None, repeats: int = 1, seed: int = 0,
                   warmup: int | None = None, warmup_lr: float = WARMUP_LR) -> RangeTest:
    """Run FastaiLRFinder on a throwaway Engine, so no handler of the real trainer fires during it.

    The finder restores the model and optimizer states when it exits. Besides its smoothed curve, the raw
    loss of every iteration is kept (as device tensors, read once at the end); the readings are taken on
    the raw curve (engine/lr_rules.reading_curve). num_classes: for guess80, which measures the fall from ln C.

    repeats > 1: the test runs that many times, the first on the model as it is (the test a single run makes),
    each other on weights re-drawn in place from (seed, repeat) and on batches of its own (the loader's
    set_epoch, where it has one); every reading is then the median of the repeats' readings, which one curve
    shifted by its initialisation or its batches cannot move far. The model and optimizer end as they began.

    warmup > 0 (None: the rule's own, lr_rules.warmup_steps): before each test, `warmup` steps at the constant LR
    warmup_lr on batches of their own (warm_up), so the curve starts from a network that has shed its
    initialisation's confidently wrong logits; where an untrained curve starts (its first loss) otherwise shifts its
    readings (BENCHMARKS.md).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    warmup = warmup_steps(rule, warmup)
    if warmup < 0 or not warmup_lr > 0:
        raise ValueError(f"warmup must be >= 0 steps at an LR > 0, not {warmup} at {warmup_lr}")
    curves = []
    saved = None if repeats == 1 and not warmup else (copy.deepcopy(model.state_dict()),
                                                       copy.deepcopy(optimizer.state_dict()))
    first_epoch = getattr(loader, "epoch", None)
    try:
        for repeat in range(repeats):
            if repeat:
                redraw_weights(model, device, repeat_seed(seed, repeat))
            warm = warm_up(model, optimizer, loss_fn, loader, device, warmup, warmup_lr, speed,
                           WARMUP_EPOCH + repeat) if warmup else []
            if hasattr(loader, "set_epoch"):
                if repeat:
                    loader.set_epoch(REPEAT_EPOCH + repeat)  # batches no training epoch draws
                elif warmup and first_epoch is not None:
                    loader.set_epoch(first_epoch)  # the first test on the batches it draws without a warm-up
            curves.append({**_one_test(model, optimizer, loss_fn, loader, device, start_lr, end_lr, num_iter, speed,
                                       num_classes), "warmup_loss": warm})
    finally:
        if saved is not None:
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
        if first_epoch is not None and hasattr(loader, "set_epoch"):
            loader.set_epoch(first_epoch)
    first = curves[0]
    readings = median_readings([c["suggestions"] for c in curves])
    # diverged unless most repeats did not (one repeat: its own verdict; a tie does not warn "never diverged")
    diverged = 2 * sum(c["diverged"] for c in curves) >= len(curves)
    usable = min(c["usable"] for c in curves)
    read_as, note = reading_rule(rule, warmup, [c["warmup_loss"] for c in curves], num_classes)
    lr_min, lr_max, warnings = bounds_from_readings(readings, usable, start_lr, end_lr, diverged=diverged,
                                                    rule=read_as)
    if note:
        warnings.append(note)
    for w in warnings:
        log.warning(w)
    each = [] if len(curves) == 1 else [
        {k: c[k] for k in ("lr", "loss", "loss_raw", "reading_lr", "reading_loss", "suggestions", "suggestion",
                           "warmup_loss")}
        for c in curves]
    return RangeTest(first["lr"], first["loss"], lr_min, lr_max, first["suggestion"], warnings, rule, readings,
                     first["loss_raw"], first["reading_lr"], first["reading_loss"], each,
                     warmup, warmup_lr if warmup else None, first["warmup_loss"])


# set_epoch of repeat r's batches: far above any training epoch, so no repeat sees an epoch's own batches.
REPEAT_EPOCH = 1_000_000
# set_epoch of repeat r's warm-up batches: apart from every test's and every training epoch's.
WARMUP_EPOCH = 2_000_000


def reading_rule(rule: str, warmup: int, warmup_losses: list[list[float]],
                 num_classes: int | None) -> tuple[str, str | None]:
    """The rule LRMAX is read by, and a warning line when that is not `rule`: a warmed rule (WARMED_RULES) on a curve
    the warm-up did not warm (no warm-up, or the median over repeats of its last losses, warmed_loss, at or above
    ln num_classes) reads as UNWARMED_RULE, the calibration for an untrained curve."""
    if rule not in WARMED_RULES:
        return rule, None
    if not warmup:
        return UNWARMED_RULE, (f"--lr-rule {rule} is calibrated for a range test after a warm-up; without one LRMAX is "
                               f"read as {UNWARMED_RULE}: add --lr-find-warmup {WARMED_RULES[rule]}")
    ends = [warmed_loss(losses) for losses in warmup_losses]
    end = float("nan") if None in ends else float(np.median(ends))
    if not num_classes or end < math.log(num_classes):
        return rule, None
    return UNWARMED_RULE, (f"the range test's warm-up left the loss at {end:.2f}, not below a uniform guess's "
                           f"ln {num_classes} = {math.log(num_classes):.2f}: the curve is not warmed, so LRMAX is read "
                           f"as {UNWARMED_RULE}, not {rule}; more --lr-find-warmup steps or a higher "
                           f"--lr-find-warmup-lr warm it")


def warm_up(model, optimizer, loss_fn, loader, device, steps: int, lr: float, speed: StepSpeed = StepSpeed(),
            epoch: int = WARMUP_EPOCH) -> list[float]:
    """`steps` training steps at the constant LR `lr` on the loader's batches of epoch `epoch` (where it has
    set_epoch), on a throwaway Engine; returns each step's loss. The weights keep what they learned; the optimizer's
    state (its moments, its LRs) is put back as it was, so the range test after it starts with a fresh Adam."""
    before = copy.deepcopy(optimizer.state_dict())
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    engine = create_trainer(model, optimizer, loss_fn, device, speed)
    losses: list = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].detach()))
    try:
        engine.run(loader, max_epochs=1, epoch_length=steps)  # a loader shorter than steps starts over
    finally:
        optimizer.load_state_dict(before)
    # [dist] the mean over processes, as the test's own losses
    return [float(v) for v in idist.all_reduce(torch.stack(losses).float()) / idist.get_world_size()]


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed repeat `repeat` (>= 1) draws its weights from: a function of (seed, repeat) alone."""
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def redraw_weights(model, device, seed: int) -> None:
    """Re-initialise every layer in place (its reset_parameters, BatchNorm statistics included) from `seed`,
    leaving the global RNG as it was. [dist] The same seed on every rank gives the same weights."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()


def median_readings(per_repeat: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each reading's median over repeats (geometric mean of the middle two for an even count); None where half the
    repeats or more have none (so a minority of curves cannot set a reading the others do not show)."""
    out = {}
    for name in per_repeat[0]:
        values = sorted(r[name] for r in per_repeat if r.get(name) is not None)
        if 2 * len(values) <= len(per_repeat):
            out[name] = None
            continue
        half = len(values) // 2
        out[name] = values[half] if len(values) % 2 else math.sqrt(values[half - 1] * values[half])
    return out


def _one_test(model, optimizer, loss_fn, loader, device, start_lr, end_lr, num_iter, speed, num_classes) -> dict:
    """One pass of FastaiLRFinder: its curve, the raw losses, the reading curve and its readings."""
    engine = create_trainer(model, optimizer, loss_fn, device, speed)
    finder = FastaiLRFinder()
    raw: list = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: raw.append(e.state.output["loss"].detach()))
    # ignite's exponential schedule scales the optimizer's *current* LR on its first step, so
    # start from start_lr whatever LR the optimizer had; the finder then restores the rest.
    original_lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = start_lr
    try:
        with finder.attach(engine, to_save={"model": model, "optimizer": optimizer},
                           output_transform=lambda out: out["loss"], num_iter=num_iter,
                           start_lr=start_lr, end_lr=end_lr, step_mode="exp",
                           diverge_th=DIVERGE_FACTOR) as finder_engine:
            finder_engine.run(loader)
    finally:
        for group, lr in zip(optimizer.param_groups, original_lrs):
            group["lr"] = lr
    results = finder.get_results()
    # [dist] FastaiLRFinder all-reduces (sums) the loss over processes: report the mean per process.
    world_size = idist.get_world_size()
    lrs, losses = [float(v) for v in results["lr"]], [float(v) / world_size for v in results["loss"]]
    raw_losses = [float(v) for v in idist.all_reduce(torch.stack(raw[:len(lrs)]).float()) / world_size] if raw else []
    try:
        suggestion = float(finder.lr_suggestion())
    except RuntimeError:  # too few points before the minimum: ignite says the curve is not U-shaped
        suggestion = None
    reading_lrs, reading_losses = reading_curve(lrs, raw_losses)
    # FastaiLRFinder stops early once its lagged average exceeds 5x its best (a NaN loss never does, and turns the
    # average NaN). The average can trail the raw curve by a decade and end below 5x where the raw losses have blown
    # up, so a full-length test has diverged too when its reading curve rose to DIVERGE_FACTOR times its minimum.
    diverged = (len(lrs) < num_iter or not all(math.isfinite(v) for v in losses)
                or curve_diverged(reading_losses))
    return {"lr": lrs, "loss": losses, "loss_raw": raw_losses, "reading_lr": reading_lrs,
            "reading_loss": reading_losses, "suggestion": suggestion, "diverged": diverged,
            "suggestions": suggestions(reading_lrs, reading_losses, num_classes),
            "usable": len(finite_curve(reading_lrs, reading_losses)[0])}


def choose_lr_bounds(lrs, raw_losses, start_lr, end_lr, diverged: bool | None = None, rule: str = DEFAULT_RULE,
                     num_classes: int | None = None):
    """LRMAX = the `rule` reading of the curve; LRMIN = where the loss starts to fall; (lr_min, lr_max, warnings).

    Rules are in engine/lr_rules.py; they read the raw losses through reading_curve (trimmed, centred smoothing). LRMIN (fall_start) is then clipped so that LRMAX / LRMIN lies in
    [MIN_RATIO, MAX_RATIO]. Fallbacks, each with a warning: no reading by the rule (the curve never
    fell, or diverged at once) -> LRMAX = geometric middle of the tested range; no start of fall
    below LRMAX -> LRMIN = LRMAX / FALLBACK_DIV. `diverged=False` (the loss never blew up before
    end_lr) only adds a warning: the rule still applies within the tested range, but the best LRMAX
    may lie above it.
    """
    curve = reading_curve(lrs, raw_losses)
    return bounds_from_readings(suggestions(*curve, num_classes), len(finite_curve(*curve)[0]), start_lr, end_lr,
                                diverged=diverged, rule=rule)


def bounds_from_readings(readings: dict[str, float | None], usable: int, start_lr, end_lr,
                         diverged: bool | None = None, rule: str = DEFAULT_RULE):
    """choose_lr_bounds on readings already taken (engine/lr_rules.suggestions); usable = the curve's
    finite points, named in the warning when the rule has no reading."""
    if rule not in LRMAX_RULES:
        raise ValueError(f"unknown LR rule {rule!r}: one of {', '.join(LRMAX_RULES)}")
    warnings = []
    if diverged is False:
        warnings.append(f"the LR range test never diverged up to --lr-find-end {end_lr:g}: LRMAX may lie above "
                        f"the tested range; raise --lr-find-end, or pass --lr-min/--lr-max")
    lr_max = readings[rule]
    if lr_max is None:
        lr_max = math.sqrt(start_lr * end_lr)
        what = {"steepest": "steepest fall", "valley": "valley", "minimum": "minimum below the start"}.get(rule, "fall")
        warnings.append(f"the LR range test found no {what} ({usable} usable points); using "
                        f"LRMAX = {lr_max:.3g}, the middle of [{start_lr:g}, {end_lr:g}]: pass --lr-max to choose")
    lr_min = readings["fall_start"]
    if lr_min is None or lr_min >= lr_max:
        lr_min = lr_max / FALLBACK_DIV
        warnings.append(f"the LR range test shows no start of the loss fall below LRMAX; using "
                        f"LRMIN = LRMAX/{FALLBACK_DIV:g} = {lr_min:.3g}: pass --lr-min to choose")
    lr_min = min(max(lr_min, lr_max / MAX_RATIO), lr_max / MIN_RATIO)
    return lr_min, lr_max, warnings
