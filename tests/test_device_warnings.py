"""No silent CPU: a GPU torch cannot use is named with its fix, and a long CPU run says how long, measured."""
import logging

import pytest
import torch
from ignite.engine import Engine, Events

import core.device as device_module
from core.device import gpu_status
from handlers.cpu_time import LONG_SECONDS, MEASURED, WARMUP, CpuTimeEstimate


@pytest.fixture
def machine(monkeypatch):
    """Fake what torch and the driver report: (available, gpus, torch's CUDA version, torch's warning)."""
    def fake(available=False, gpus=(), cuda="13.0", warning=None):
        def is_available():
            if warning:
                import warnings
                warnings.warn(warning)
            return available
        monkeypatch.setattr(torch.cuda, "is_available", is_available)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(device_module, "nvidia_gpus", lambda: list(gpus))
        monkeypatch.setattr(torch.version, "cuda", cuda)
    return fake


def test_a_usable_gpu_is_named(machine):
    machine(available=True, gpus=["NVIDIA H200"])
    status = gpu_status()
    assert status.usable and "NVIDIA H200" in status.summary and status.warning is None


def test_no_gpu_is_no_warning(machine):
    machine(available=False, gpus=[])
    status = gpu_status()
    assert not status.usable and status.warning is None and "CPU" in status.summary


def test_a_cpu_only_torch_on_a_gpu_machine_names_the_fix(machine):
    machine(available=False, gpus=["NVIDIA A100-SXM4-40GB"], cuda=None)
    status = gpu_status()
    assert not status.usable and "CPU-only build" in status.warning and "NVIDIA A100" in status.warning
    assert "install a CUDA build of torch" in status.warning and "\n" not in status.warning


def test_a_driver_too_old_for_torchs_cuda_names_the_fix(machine):
    machine(available=False, gpus=["Tesla T4"], cuda="13.0",
            warning="The NVIDIA driver on your system is too old (found version 12040).")
    status = gpu_status()
    assert "too old (found version 12040)" in status.warning and "update the driver" in status.warning
    assert "CUDA 13.0" in status.warning and "\n" not in status.warning


def test_run_py_warns_once_and_trains_on_the_cpu(machine, monkeypatch, caplog, tmp_path):
    import training.components as components
    from run import main

    machine(available=False, gpus=["Tesla T4"], cuda=None)
    components._gpu_status.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert main(["--dataset", "fake", "--subset", "64", "--width", "4", "--batch-size", "16", "--epochs", "1",
                     "--lr-min", "1e-3", "--lr-max", "1e-2", "--workers", "0", "--no-progress",
                     "--output-dir", str(tmp_path / "run")]) == 0
    components._gpu_status.cache_clear()
    said = [r.getMessage() for r in caplog.records if "CPU-only build" in r.getMessage()]
    assert len(said) == 1


class Clock:
    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def run_estimate(seconds_per_iteration, epochs=24, iterations_per_epoch=98):
    clock = Clock(0.0)
    estimate = CpuTimeEstimate(epochs, width=64, clock=clock)
    engine = Engine(lambda e, b: None)

    def tick(e):  # each iteration "takes" seconds_per_iteration on the fake clock
        clock.now += seconds_per_iteration
    engine.add_event_handler(Events.ITERATION_STARTED, tick)
    estimate.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=WARMUP + MEASURED + 3), lambda e: e.terminate())
    engine.run(range(iterations_per_epoch), max_epochs=epochs)  # stopped after the measurement
    return estimate


def test_a_long_cpu_run_warns_with_the_measured_time(caplog):
    with caplog.at_level(logging.WARNING):
        estimate = run_estimate(3.3)  # the full network at batch 512 on a 2-core CPU
    assert estimate.message and "3.30 s per iteration" in estimate.message and "--width 16" in estimate.message
    assert len([r for r in caplog.records if "training on the CPU" in r.getMessage()]) == 1


def test_a_short_cpu_run_says_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        estimate = run_estimate(LONG_SECONDS / (2 * 24 * 98))
    assert estimate.message == "" and not caplog.records
