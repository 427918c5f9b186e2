"""What the machine offers torch, said plainly: a usable CUDA GPU, none, or one that torch cannot use (and why).

A CPU-only torch wheel, or a CUDA build newer than the NVIDIA driver supports, leaves torch.cuda.is_available()
False on a machine with a GPU; torch's own warning about the driver scrolls past among the start-up lines, and the
run then trains on the CPU. `gpu_status` finds that case and names the fix.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

INSTALL_HELP = "https://pytorch.org/get-started/locally/"


@dataclass(frozen=True)
class GpuStatus:
    usable: bool            # torch can train on a CUDA GPU
    summary: str            # one line: what was found
    warning: str | None     # set when a GPU is there but torch cannot use it: the problem and the fix


def nvidia_gpus() -> list[str]:
    """The NVIDIA GPUs the driver lists (nvidia-smi -L), or, without nvidia-smi, the device files; [] for none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line.split(" (UUID")[0].split(": ", 1)[-1] for line in out.splitlines() if line.startswith("GPU ")]
        if gpus:
            return gpus
    return [p.name for p in sorted(Path("/dev").glob("nvidia[0-9]*"))]


def gpu_status() -> GpuStatus:
    with warnings.catch_warnings(record=True) as caught:  # torch warns here when the driver is too old
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        name = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
        return GpuStatus(True, f"CUDA GPU: {name}{f' (and {count - 1} more)' if count > 1 else ''}, torch "
                               f"{torch.__version__} built for CUDA {torch.version.cuda}", None)
    gpus = nvidia_gpus()
    if not gpus:
        return GpuStatus(False, f"no CUDA GPU: torch {torch.__version__} trains on the CPU", None)
    found = f"this machine has an NVIDIA GPU ({gpus[0]})"
    if torch.version.cuda is None:
        return GpuStatus(False, f"GPU present but unusable: torch {torch.__version__} is a CPU-only build",
                         f"{found} but torch {torch.__version__} is a CPU-only build, so training runs on the CPU: "
                         f"install a CUDA build of torch ({INSTALL_HELP}), or on Colab/Kaggle keep the platform's "
                         f"torch (README, Notebook)")
    said = " ".join(str(caught[-1].message).split())[:160] if caught else "torch.cuda.is_available() is False"
    return GpuStatus(False, f"GPU present but unusable by torch {torch.__version__} (CUDA {torch.version.cuda})",
                     f"{found} but torch {torch.__version__}, built for CUDA {torch.version.cuda}, cannot use it "
                     f"({said}), so training runs on the CPU: the NVIDIA driver is probably older than CUDA "
                     f"{torch.version.cuda} needs: update the driver, or install a torch build for the CUDA version "
                     f"`nvidia-smi` shows ({INSTALL_HELP})")


def cpu_name() -> str:
    """The CPU's model name: /proc/cpuinfo's on Linux, platform.processor() elsewhere; '' where neither says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_facts(device: torch.device) -> dict:
    """What a run's figures depend on beyond its settings: the chip it ran on and torch's build and threads.

    Benchmarks from different sessions land on different machines (an AVX2-only CPU trains in fp32, one with
    native bf16 under bf16 autocast): summary.json keeps these so a figure can always name its machine.
    """
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
            "torch": str(torch.__version__)}  # str: TorchVersion would not load with weights_only=True
