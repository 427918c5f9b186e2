"""The LR range test: restores what it touches, agrees with torch-lr-finder, and yields LRMIN < LRMAX."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.lr_finder import FALLBACK_DIV, MAX_RATIO, MIN_RATIO, choose_lr_bounds, run_range_test
from engine.lr_rules import DEFAULT_RULE, reading_curve, suggestions, warmed_loss, warmup_steps
from models import CustomResNet

CPU = torch.device("cpu")


def tiny_setup(seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    model = CustomResNet(width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-2)
    return model, optimizer, loader


def test_range_test_restores_model_and_optimizer():
    model, optimizer, loader = tiny_setup()
    # One real step first, so the optimizer has state (Adam moments) worth restoring.
    nn.CrossEntropyLoss()(model(next(iter(loader))[0]), next(iter(loader))[1]).backward()
    optimizer.step()
    model_before = copy.deepcopy(model.state_dict())
    optim_before = copy.deepcopy(optimizer.state_dict())
    result = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 20)
    assert len(result.losses) > 3
    for name, tensor in model.state_dict().items():  # weights and BN running statistics
        assert torch.equal(tensor, model_before[name]), name
    after = optimizer.state_dict()
    assert after["param_groups"] == optim_before["param_groups"]
    for key, state in optim_before["state"].items():
        for name, value in state.items():
            assert torch.equal(after["state"][key][name], value)


def test_range_test_agrees_with_torch_lr_finder():
    """The same model, data and LRs through torch-lr-finder: its smoothed curve is FastaiLRFinder's, its raw curve
    (smooth_f=0) is the raw loss we keep, and its suggestion is ignite's own (kept as `suggestion`)."""
    from torch_lr_finder import LRFinder

    n, start, end = 30, 1e-5, 1.0
    model, optimizer, loader = tiny_setup()
    init = copy.deepcopy(model.state_dict())
    ours = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, start, end, n, rule="guess80x2")

    def theirs(smooth_f):
        model.load_state_dict(init)
        reference = LRFinder(model, torch.optim.Adam(model.parameters(), lr=start, weight_decay=1e-2),
                             nn.CrossEntropyLoss(), device="cpu")
        # ignite steps the LR as start*(end/start)**(i/n) (and uses its i=1 value on the first
        # iteration too); torch-lr-finder as start*(end/start)**(i/(n-1)). This end LR makes
        # both use the same LR from the second iteration on, so the curves differ by ~1%.
        reference.range_test(loader, start_lr=start, end_lr=start * (end / start) ** ((n - 1) / n), num_iter=n,
                             step_mode="exp", smooth_f=smooth_f, diverge_th=5)
        return reference.history
    smoothed, raw = theirs(0.05), theirs(0.0)["loss"]
    # Compare the falling part, which decides LRMIN and LRMAX; past the minimum the run
    # diverges and amplifies the one-iteration LR difference.
    k = int(np.argmin(smoothed["loss"])) + 1
    assert k >= 10 and len(ours.losses) >= k and len(ours.raw_losses) == len(ours.lrs)
    np.testing.assert_allclose(ours.losses[:k], smoothed["loss"][:k], rtol=0.02)
    np.testing.assert_allclose(ours.raw_losses[:k], raw[:k], rtol=0.05)
    assert ours.losses[0] == pytest.approx(smoothed["loss"][0], rel=1e-6)  # same model, same first batch
    assert ours.raw_losses[0] == pytest.approx(raw[0], rel=1e-6)
    grid_step = (end / start) ** (1 / n)
    lr_steepest = smoothed["lr"][int(np.argmin(np.gradient(smoothed["loss"][:k])))]
    assert 1 / grid_step ** 2 <= ours.suggestion / lr_steepest <= grid_step ** 2
    assert ours.lr_max == ours.suggestions[ours.rule] and ours.rule == "guess80x2"


def u_curve(n=100, start=1e-7, end=10.0, centre=-4.0, steepness=3.0):
    """A sigmoid fall of 1.5 centred at log10(LR) = centre, then divergence above 10**-1.5."""
    lrs = np.geomspace(start, end, n)
    x = np.log10(lrs)
    loss = 2.3 - 1.5 / (1 + np.exp(-(x - centre) * steepness)) + np.where(x > -1.5, (x + 1.5) ** 2 * 4, 0)
    return list(lrs), list(loss)


def level_crossing(share, centre=-4.0, steepness=3.0, floor=-1.5):
    """log10(LR) where u_curve has made `share` of its fall (first value to the minimum near 10**floor)."""
    total = 1.5 / (1 + math.exp(-(floor - centre) * steepness)) - 1.5 / (1 + math.exp(-(-7 - centre) * steepness))
    target = share * total + 1.5 / (1 + math.exp(-(-7 - centre) * steepness))
    return centre + math.log(target / (1.5 - target)) / steepness


def test_bounds_from_a_u_shaped_curve():
    """fall80 and fall_start land where the analytic curve has made 80% and 5% of its fall."""
    lrs, losses = u_curve()
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0, rule="guess80")
    assert not warnings
    grid_step = 10 ** (8 / 99)
    assert 1 / grid_step <= lr_max / 10 ** level_crossing(0.8) <= grid_step
    readings = suggestions(*reading_curve(lrs, losses))
    assert lr_max == readings["guess80"] == readings["fall80"] and readings["steepest"] < lr_max < readings["minimum"] * 10
    # guess80x2 reads twice that, still below the lowest loss's LR; the default (warm80x16) sixteen times, past it
    assert choose_lr_bounds(lrs, losses, 1e-7, 10.0, rule="guess80x2")[1] == readings["guess80x2"] == pytest.approx(2 * lr_max)
    assert 2 * lr_max < readings["minimum"] * 10
    assert choose_lr_bounds(lrs, losses, 1e-7, 10.0)[1] == readings[DEFAULT_RULE] == pytest.approx(16 * lr_max)
    # The fall starts between LRMAX/MAX_RATIO and LRMAX/MIN_RATIO here, so LRMIN is where it starts.
    assert 1 / grid_step <= readings["fall_start"] / 10 ** level_crossing(0.05) <= grid_step
    assert lr_max / MAX_RATIO < readings["fall_start"] < lr_max / MIN_RATIO
    assert lr_min == readings["fall_start"]


@pytest.mark.parametrize("steepness, ratio", [(12.0, MIN_RATIO), (1.2, MAX_RATIO)])
def test_lrmin_is_clipped_to_the_ratio_bounds(steepness, ratio):
    """A sharp fall starts less than MIN_RATIO below LRMAX, a gentle one more than MAX_RATIO below: LRMIN is
    then LRMAX / MIN_RATIO or LRMAX / MAX_RATIO, so the cycle always has a real warm-up and a bounded one."""
    lrs, losses = u_curve(centre=-3.5, steepness=steepness)
    readings = suggestions(*reading_curve(lrs, losses))
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0, rule="guess80")
    assert not warnings and lr_max == readings["guess80"] == readings["fall80"]
    far = readings["fall_start"] < lr_max / MAX_RATIO
    assert far == (ratio == MAX_RATIO) and (readings["fall_start"] > lr_max / MIN_RATIO) == (ratio == MIN_RATIO)
    assert lr_min == pytest.approx(lr_max / ratio)


@pytest.mark.parametrize("shape", ["flat", "rising", "nan"])
def test_bounds_fall_back_with_a_warning(shape):
    lrs = list(np.geomspace(1e-7, 10, 50))
    losses = {"flat": [2.3] * 50, "rising": list(np.linspace(2.3, 50, 50)),
              "nan": [2.3] + [math.nan] * 49}[shape]
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0)
    assert warnings
    assert 0 < lr_min < lr_max
    assert lr_min == pytest.approx(lr_max / FALLBACK_DIV)


def test_summary_keeps_the_range_test_curve_and_its_readings(full_run):
    """summary.json holds the raw losses beside the smoothed ones, as lr_finder.json does, and the readings."""
    import json

    summary = json.loads((full_run / "summary.json").read_text())
    curve = json.loads((full_run / "lr_finder.json").read_text())
    assert summary["lr_finder"] == {"lr": curve["lr"], "loss_raw": curve["loss_raw"], "loss": curve["loss"]}
    assert len(curve["loss_raw"]) == len(curve["lr"]) >= 3
    assert summary["lr_rule"] == DEFAULT_RULE and summary["lr_suggestions"] == curve["suggestions"]


class EpochLoader:
    """A loader whose batches are a function of (epoch) alone, like data.loaders.SeedableLoader."""

    def __init__(self, x, y, batch_size=32):
        self.x, self.y, self.batch_size, self.epoch = x, y, batch_size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.y) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(len(self)):
            ids = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[ids], self.y[ids]


def epoch_setup():
    """tiny_setup's model and optimizer with an EpochLoader at epoch 7."""
    model, optimizer, _ = tiny_setup()
    torch.manual_seed(1)
    loader = EpochLoader(torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
    loader.set_epoch(7)
    return model, optimizer, loader


def test_repeats_take_the_median_reading_and_leave_everything_as_it_was():
    from engine.lr_finder import repeat_seed

    model, optimizer, loader = epoch_setup()
    weights = copy.deepcopy(model.state_dict())
    single = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 12, rule="guess80x2")
    rng = torch.get_rng_state()
    result = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 12, repeats=3, seed=4, rule="guess80x2")
    # nothing the run goes on with has changed: weights, optimizer, the loader's epoch, the global RNG
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert optimizer.state_dict()["state"] == {} and loader.epoch == 7
    assert torch.equal(torch.get_rng_state(), rng)
    assert single.repeats == [] and "repeats" not in single.to_dict()
    first, *others = result.repeats
    assert len(result.repeats) == 3 and result.to_dict()["repeats"] == result.repeats
    # the first repeat is the single test (the model as built, the loader's own batches); the others differ
    np.testing.assert_allclose(first["loss_raw"], single.raw_losses, rtol=1e-5)
    assert first["suggestions"] == pytest.approx(single.suggestions)
    assert result.raw_losses == first["loss_raw"]
    for other in others:
        assert not np.allclose(other["loss_raw"][:5], first["loss_raw"][:5])
    assert others[0]["loss_raw"][:5] != others[1]["loss_raw"][:5]
    # every reading is the median of the repeats'
    for name, lr in result.suggestions.items():
        values = sorted(r["suggestions"][name] for r in result.repeats if r["suggestions"][name] is not None)
        expected = None if len(values) < 2 else values[1] if len(values) == 3 else math.sqrt(values[0] * values[1])
        assert lr == pytest.approx(expected), name
    assert result.lr_max == result.suggestions[result.rule]
    # the re-drawn weights follow (seed, repeat) alone
    assert repeat_seed(4, 1) == repeat_seed(4, 1) != repeat_seed(4, 2) != repeat_seed(5, 1)


def test_median_readings():
    from engine.lr_finder import median_readings

    three = median_readings([{"a": 1.0, "b": None, "c": 4.0, "d": 5.0}, {"a": 9.0, "b": None, "c": 1.0, "d": None},
                             {"a": 3.0, "b": None, "c": None, "d": None}])
    # c: two of three repeats read it, the geometric mean of the two; d: one of three is no majority
    assert three == {"a": 3.0, "b": None, "c": pytest.approx(2.0), "d": None}
    four = median_readings([{"a": v} for v in (1.0, 4.0, 16.0, 64.0)])
    assert four["a"] == pytest.approx(8.0)  # sqrt(4 * 16)
    assert median_readings([{"a": 2.0}, {"a": None}]) == {"a": None}  # half is no majority either


def test_redraw_weights_is_in_place_and_seeded():
    from engine.lr_finder import redraw_weights

    model, optimizer, _ = tiny_setup()
    params = [id(p) for p in model.parameters()]
    redraw_weights(model, CPU, 11)
    drawn = copy.deepcopy(model.state_dict())
    redraw_weights(model, CPU, 12)
    assert not torch.equal(model.fc.weight, drawn["fc.weight"])
    redraw_weights(model, CPU, 11)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, drawn[name]), name
    assert [id(p) for p in model.parameters()] == params  # the optimizer still holds these


def test_warmup_trains_first_on_batches_of_its_own_and_leaves_everything_as_it_was():
    from engine.lr_finder import WARMUP_EPOCH, warm_up

    model, optimizer, loader = epoch_setup()
    weights = copy.deepcopy(model.state_dict())
    result = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 12, warmup=5,
                            warmup_lr=1e-3)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert optimizer.state_dict()["state"] == {} and optimizer.param_groups[0]["lr"] == 3e-4 and loader.epoch == 7
    assert result.warmup_steps == 5 and result.warmup_lr == 1e-3 and len(result.warmup_losses) == 5
    assert result.to_dict()["warmup"] == {"steps": 5, "lr": 1e-3, "loss_raw": result.warmup_losses}
    # the same by hand: 5 steps at 1e-3 on the warm-up's own batches with the optimizer put back after them, then
    # the test on the loader's own epoch from a fresh Adam
    by_hand = warm_up(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 5, 1e-3, epoch=WARMUP_EPOCH)
    assert loader.epoch == WARMUP_EPOCH and optimizer.state_dict()["state"] == {}
    assert optimizer.param_groups[0]["lr"] == 3e-4
    assert not torch.equal(model.fc.weight, weights["fc.weight"])  # the weights keep what the warm-up taught
    np.testing.assert_allclose(by_hand, result.warmup_losses, rtol=1e-5)
    loader.set_epoch(7)
    after = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 12, warmup=0)
    np.testing.assert_allclose(after.raw_losses, result.raw_losses, rtol=1e-4)
    assert after.to_dict()["warmup"] == {"steps": 0, "lr": None, "loss_raw": []}
    # a warm-up on the loader's own batches would have been another curve
    model.load_state_dict(weights)
    warm_up(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 5, 1e-3, epoch=7)
    loader.set_epoch(7)
    other = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 12, warmup=0)
    assert not np.allclose(other.raw_losses[:3], result.raw_losses[:3])


def test_warmup_with_repeats_warms_every_repeat():
    model, optimizer, loader = epoch_setup()
    result = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 8, repeats=2, seed=3,
                            warmup=3, warmup_lr=1e-3)
    assert [len(r["warmup_loss"]) for r in result.repeats] == [3, 3]
    assert result.repeats[0]["warmup_loss"] == result.warmup_losses != result.repeats[1]["warmup_loss"]


@pytest.mark.parametrize("warmup, lr", [(-1, 1e-4), (2, 0.0)])
def test_a_bad_warmup_is_refused(warmup, lr):
    model, optimizer, loader = tiny_setup()
    with pytest.raises(ValueError, match="warmup must be >= 0 steps at an LR > 0"):
        run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 8, warmup=warmup,
                       warmup_lr=lr)


def test_a_warmed_rule_warns_without_the_warmup_and_not_with_it():
    model, optimizer, loader = tiny_setup()
    cold = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 8, warmup=0)  # warm80x16
    assert any("--lr-rule warm80x16" in w and "--lr-find-warmup 20" in w for w in cold.warnings)
    assert warmup_steps("warm80x16") == warmup_steps("warm80x12") == 20 and warmup_steps("warm80x12", 0) == 0 and warmup_steps("guess80x2") == 0
    assert warmup_steps("guess80x2", 5) == 5
    warm = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 8, rule="warm80x12",
                          warmup=3, warmup_lr=1e-3)
    assert warm.warmup_steps == 3 and not any("--lr-find-warmup" in w for w in warm.warnings)
    plain = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 8, rule="guess80x2")
    assert not any("--lr-find-warmup" in w for w in plain.warnings)  # a rule that needs no warm-up
    # without a warm-up a warmed rule reads LRMAX as guess80x2 (sixteen times an untrained curve's guess80 overshoots)
    assert cold.lr_max == cold.suggestions["guess80x2"] != cold.suggestions["warm80x16"]


def test_a_warmup_that_leaves_the_loss_above_ln_c_reads_lrmax_as_guess80x2():
    # labels one pixel decides: three steps at 1e-3 leave the loss above ln 10 = 2.30, far below ln 100 = 4.61
    torch.manual_seed(0)
    x = torch.randn(256, 3, 32, 32)
    loader = DataLoader(TensorDataset(x, torch.bucketize(x[:, 0, 0, 0], torch.linspace(-1.5, 1.5, 9))), batch_size=32)
    results = {}
    for classes in (10, 100):
        model, optimizer, _ = tiny_setup()
        results[classes] = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, 1e-5, 1.0, 30,
                                          num_classes=classes, warmup=3, warmup_lr=1e-3)
    cold, warm = results[10], results[100]
    assert warmed_loss(cold.warmup_losses) >= math.log(10)
    assert cold.lr_max == cold.suggestions["guess80x2"] and cold.suggestions["warm80x16"] != cold.lr_max
    assert any("not warmed" in w and "read as guess80x2" in w for w in cold.warnings)
    assert not any("not warmed" in w for w in warm.warnings)  # warmed: read as warm80x16 (random labels: no fall)
    assert warmed_loss([9.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == 3.0 and warmed_loss([]) is None
    assert warmed_loss([1.0, float("nan")]) is None
