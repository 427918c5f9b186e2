"""The torchinfo model summary: the assignment's parameter count, printed once and saved, with nothing disturbed."""
from __future__ import annotations

import torch

from handlers.model_summary import FILE, model_summary, summary_text
from models import CustomResNet


def test_torchinfo_counts_the_assignments_parameters_at_width_64():
    model = CustomResNet(num_classes=10, width=64)
    rng = torch.get_rng_state()
    stats = model_summary(model)
    assert stats.total_params == 6_573_130 and stats.trainable_params == 6_573_130  # torchinfo's own totals
    text = summary_text(stats)
    assert "Total params: 6,573,130" in text
    for shape in ("[1, 64, 32, 32]", "[1, 128, 16, 16]", "[1, 256, 8, 8]", "[1, 512, 4, 4]", "[1, 10]"):
        assert shape in text  # output shapes of PrepLayer, Layer1, Layer2, Layer3 and the FC
    assert f"Multiply-adds per image: {stats.total_mult_adds:,}" in text and stats.total_mult_adds > 3e8
    assert model.training  # its train/eval mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # no random number drawn: a seeded run is unchanged


def test_a_run_prints_it_once_and_writes_the_file(tmp_path, capsys):
    from tests.conftest import LR, train

    assert train(tmp_path, "--epochs", "1", *LR) == 0
    text = (tmp_path / FILE).read_text()
    assert "Total params: 103,954" in text and "Multiply-adds per image" in text  # width 8 (conftest FAST)
    assert capsys.readouterr().out.count("Total params: 103,954") == 1
