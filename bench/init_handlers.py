"""Handlers for benchmark runs (`python run.py --handler bench.init_handlers:FUNCTION`)."""
import torch


def torch_init_classifier(run) -> None:
    """Give the classifier nn.Linear's default initialisation instead of the model's zeros (seeded by --seed).

    For comparing the two at fixed --lr-min/--lr-max: with a range test, that test has already run on the
    model's own initialisation by the time handlers are attached.
    """
    if run.range_test is not None:
        raise RuntimeError("torch_init_classifier needs --lr-min and --lr-max (no range test)")
    torch.manual_seed(run.config.seed)
    run.module.fc.reset_parameters()
