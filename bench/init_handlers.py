"""Handlers for benchmark runs (`python run.py --handler bench/init_handlers.py:FUNCTION`), with --lr-min and
--lr-max given (with a range test, that test has already run on the model's own initialisation by then).

The classifier's initialisation was compared on the proxy runs of BENCHMARKS.md ("zero" against "torchinit").
They ran on a model that zero-initialised its classifier, with `torch_init_classifier` for the other arm; the
model keeps nn.Linear's default now, and `zero_classifier` gives the other arm.
"""
import torch


def _no_range_test(run, name: str) -> None:
    if run.range_test is not None:
        raise RuntimeError(f"{name} needs --lr-min and --lr-max (no range test)")


def torch_init_classifier(run) -> None:
    """Re-draw the classifier with nn.Linear's default initialisation, seeded by --seed."""
    _no_range_test(run, "torch_init_classifier")
    torch.manual_seed(run.config.seed)
    run.module.fc.reset_parameters()


def zero_classifier(run) -> None:
    """A zero classifier: the untrained network predicts the uniform distribution (loss ln 10)."""
    _no_range_test(run, "zero_classifier")
    torch.nn.init.zeros_(run.module.fc.weight)
    torch.nn.init.zeros_(run.module.fc.bias)
