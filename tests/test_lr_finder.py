"""The LR range test: restores what it touches, agrees with torch-lr-finder, and yields LRMIN < LRMAX."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.lr_finder import FALLBACK_DIV, MAX_RATIO, MIN_RATIO, choose_lr_bounds, run_range_test
from engine.lr_rules import suggestions
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
    from torch_lr_finder import LRFinder

    n, start, end = 30, 1e-5, 1.0
    model, optimizer, loader = tiny_setup()
    init = copy.deepcopy(model.state_dict())
    ours = run_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, CPU, start, end, n)

    model.load_state_dict(init)
    reference_optimizer = torch.optim.Adam(model.parameters(), lr=start, weight_decay=1e-2)
    reference = LRFinder(model, reference_optimizer, nn.CrossEntropyLoss(), device="cpu")
    # ignite steps the LR as start*(end/start)**(i/n) (and uses its i=1 value on the first
    # iteration too); torch-lr-finder as start*(end/start)**(i/(n-1)). This end LR makes
    # both use the same LR from the second iteration on, so the curves differ by ~1%.
    reference.range_test(loader, start_lr=start, end_lr=start * (end / start) ** ((n - 1) / n), num_iter=n,
                         step_mode="exp", smooth_f=0.05, diverge_th=5)
    theirs = reference.history["loss"]
    # Compare the falling part, which decides LRMIN and LRMAX; past the minimum the run
    # diverges and amplifies the one-iteration LR difference.
    k = int(np.argmin(theirs)) + 1
    assert k >= 10 and len(ours.losses) >= k
    np.testing.assert_allclose(ours.losses[:k], theirs[:k], rtol=0.02)
    assert ours.losses[0] == pytest.approx(theirs[0], rel=1e-6)  # same model, same first batch
    grid_step = (end / start) ** (1 / n)
    lr_steepest = reference.history["lr"][int(np.argmin(np.gradient(theirs[:k])))]
    assert 1 / grid_step ** 2 <= ours.lr_max / lr_steepest <= grid_step ** 2


def u_curve(n=100, start=1e-7, end=10.0):
    lrs = np.geomspace(start, end, n)
    x = np.log10(lrs)
    loss = 2.3 - 1.5 / (1 + np.exp(-(x + 4) * 3)) + np.where(x > -1.5, (x + 1.5) ** 2 * 4, 0)
    return list(lrs), list(loss)


def test_bounds_from_a_u_shaped_curve():
    lrs, losses = u_curve()
    suggestion = lrs[int(np.argmin(np.gradient(losses)[: int(np.argmin(losses))]))]
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0)
    assert not warnings
    assert lr_max == suggestion
    assert lr_max / MAX_RATIO <= lr_min <= lr_max / MIN_RATIO
    # This curve's fall starts less than MIN_RATIO below its steepest point, so LRMIN is LRMAX / MIN_RATIO.
    assert suggestions(lrs, losses)["fall_start"] > lr_max / MIN_RATIO
    assert lr_min == pytest.approx(lr_max / MIN_RATIO)


def test_lrmin_is_the_start_of_the_fall_when_that_lies_far_enough_below_lrmax():
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)  # a gentle fall from 3e-5 that steepens up to 1e-2, then divergence
    losses = list(2.3 - 1.5 * np.clip((x + 4.5) / 2.5, 0, 1) ** 2 + np.where(x > -1.5, (x + 1.5) ** 2 * 4, 0))
    lrs = list(lrs)
    readings = suggestions(lrs, losses)
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0)
    assert not warnings and lr_max == readings["steepest"]
    assert lr_max / MAX_RATIO < readings["fall_start"] < lr_max / MIN_RATIO
    assert lr_min == readings["fall_start"]
    # LRMIN is where the fall starts: the loss there is still near its starting value.
    i = lrs.index(lr_min)
    assert losses[0] - losses[i] <= 0.06 * (losses[0] - min(losses))


@pytest.mark.parametrize("shape", ["flat", "rising", "nan"])
def test_bounds_fall_back_with_a_warning(shape):
    lrs = list(np.geomspace(1e-7, 10, 50))
    losses = {"flat": [2.3] * 50, "rising": list(np.linspace(2.3, 50, 50)),
              "nan": [2.3] + [math.nan] * 49}[shape]
    lr_min, lr_max, warnings = choose_lr_bounds(lrs, losses, 1e-7, 10.0)
    assert warnings
    assert 0 < lr_min < lr_max
    assert lr_min == pytest.approx(lr_max / FALLBACK_DIV)
