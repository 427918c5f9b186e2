"""The step's speed settings: bf16 autocast and channels_last chosen per device and CPU, and used in the step."""
import logging

import pytest
import torch
from torch import nn

import engine.trainer as trainer_module
from engine.config import Config
from engine.trainer import StepSpeed, create_evaluator, create_train_step
from models import CustomResNet

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(params=[True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def native_bf16(request, monkeypatch):
    """A CPU faked to have (or lack) native bf16, whatever this machine has."""
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_cpu_defaults_follow_the_instruction_set(native_bf16):
    speed = StepSpeed.for_device(CPU)
    assert speed.channels_last
    assert speed.amp is native_bf16  # bf16 only where the CPU computes it natively


def test_flags_override_the_cpu_defaults(native_bf16):
    assert StepSpeed.for_device(CPU, amp=False).amp is False
    assert StepSpeed.for_device(CPU, amp=True).amp is True  # the user's choice, even where it is emulated
    assert StepSpeed.for_device(CPU, channels_last=False).channels_last is False
    assert StepSpeed.for_device(CPU, compile=True).compile


def test_cuda_defaults_and_overrides():
    assert StepSpeed.for_device(CUDA) == StepSpeed(amp=True, channels_last=True)
    assert StepSpeed.for_device(CUDA, amp=False, channels_last=False) == StepSpeed()


def test_other_devices_stay_plain_fp32():
    assert StepSpeed.for_device(torch.device("meta")) == StepSpeed()


def test_describe_names_the_settings():
    assert StepSpeed(amp=True, channels_last=True).describe() == "bf16 autocast, channels_last"
    assert StepSpeed().describe() == "fp32, NCHW"


def _inputs_seen_by(model):
    seen = []
    model.prep.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    return seen


@pytest.mark.parametrize("speed", [StepSpeed(channels_last=True), StepSpeed(amp=True, channels_last=True)],
                         ids=["fp32", "bf16"])
def test_the_cpu_step_runs_channels_last_and_autocast(speed):
    torch.manual_seed(0)
    model = CustomResNet(width=4).to(memory_format=torch.channels_last)
    seen = _inputs_seen_by(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = create_train_step(model, optimizer, nn.CrossEntropyLoss(), CPU, speed)
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))  # an NCHW batch, as the CPU loader gives
    before = [p.detach().clone() for p in model.parameters()]
    step(None, batch)
    out = step(None, batch)
    x, activation = seen[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert activation.dtype == (torch.bfloat16 if speed.amp else torch.float32)
    assert out["y_pred"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.requires_grad)

    evaluator = create_evaluator(model, nn.CrossEntropyLoss(), CPU, speed)
    evaluator.run([batch])
    assert seen[-1][0].is_contiguous(memory_format=torch.channels_last)
    assert 0 <= evaluator.state.metrics["accuracy"] <= 1


def test_build_components_applies_the_settings(monkeypatch, caplog):
    from training.components import build_components

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr("training.components.cpu_has_native_bf16", lambda: False)
    cfg = dict(dataset="fake", subset=40, width=4, batch_size=8, workers=0, device="cpu", lr_min=1e-3, lr_max=1e-2)
    c = build_components(Config(**cfg))
    assert c.speed == StepSpeed(amp=False, channels_last=True)
    assert c.model.prep[0].weight.is_contiguous(memory_format=torch.channels_last)

    c = build_components(Config(**cfg, channels_last=False))
    assert not c.speed.channels_last and c.model.prep[0].weight.is_contiguous()

    with caplog.at_level(logging.WARNING):
        c = build_components(Config(**cfg, amp=True))
    assert c.speed.amp and "emulated" in caplog.text  # forced on a CPU without bf16: done, with a warning


def test_help_says_what_the_cpu_gets(capsys):
    from training.flags import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--channels-last, --no-channels-last" in text and "native bf16" in text
    assert parse_args(["--no-channels-last", "--no-amp"]).channels_last is False


def test_the_batched_data_path_is_the_default_and_older_names_still_read(tmp_path):
    from engine.config import config_file_values

    assert Config().augment == "batched"
    assert Config(augment="gpu").augment == Config(augment="auto").augment == "batched"
    assert Config(augment="cpu").augment == "albumentations"
    old = tmp_path / "config.yaml"
    old.write_text("augment: cpu\n")  # a config.yaml written before the rename
    assert Config(**config_file_values(old)).validate().augment == "albumentations"
    with pytest.raises(Exception, match="choose batched or albumentations"):
        Config(augment="tpu").validate()
