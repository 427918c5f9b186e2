#!/usr/bin/env python
"""Two small steps of bench/gpu_report.py, each run by it as a subprocess:

  env   the machine: GPUs (name, driver, memory free), torch/CUDA/cuDNN versions, the packages the
        project needs; JSON to --json, a readable summary to stdout.
  data  unpack the CIFAR-10 archive (or, with --fake N, a small archive of random images made first)
        and decode it once into the folder cache ($ERA_S10_CACHE), so the runs after it start at once.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Distribution names of what the project imports; the GPU machine lacks the last four (wheels).
PACKAGES = ("torch", "torchvision", "numpy", "pytorch-ignite", "albumentations", "tensorboardX", "torch-lr-finder")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def nvidia_smi() -> list[dict]:
    """One dict per GPU from nvidia-smi (driver, memory in MiB), or [] where it is missing."""
    fields = ("index", "name", "driver_version", "memory.total", "memory.free", "memory.used")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]


def environment() -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_total_mib": total / 2**20, "memory_free_mib": free / 2**20})
    smi = nvidia_smi()
    return {
        "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "gpu_count": len(gpus), "gpus": gpus,
        "driver": smi[0]["driver_version"] if smi else None, "nvidia_smi": smi,
        "device_name": gpus[0]["name"] if gpus else "cpu", "packages": versions,
        "missing": [name for name, v in versions.items() if v is None],
    }


def make_fake_archive(path: Path, n_train: int, seed: int = 0) -> Path:
    """A CIFAR-shaped archive of random JPEGs (train/<class>/*.jpg, test/<class>/*.jpg), n_train // 5 test."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    staging = path.with_name(path.name + ".staging")
    for split, n in (("train", n_train), ("test", max(len(CLASSES), n_train // 5))):
        for i in range(n):
            folder = staging / split / CLASSES[i % len(CLASSES)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=75)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(staging / split, arcname=split)
    shutil.rmtree(staging)
    return path


def prepare_data(archive: Path, dest: Path, fake: int | None) -> dict:
    from data.archive import unpack_cifar_archive
    from data.datasets import load_dataset

    t0 = time.perf_counter()
    if fake:
        archive = make_fake_archive(archive, fake)
    if not archive.is_file():
        raise SystemExit(f"error: no CIFAR-10 archive at {archive}: pass --archive PATH (the file, or the folder "
                         f"holding cifar10-jpeg.tar.gz)")
    unpacked = unpack_cifar_archive(archive, dest)
    t1 = time.perf_counter()
    data = load_dataset("folder", unpacked)  # decodes once into $ERA_S10_CACHE; later runs read the cache
    t2 = time.perf_counter()
    return {"archive": str(archive), "archive_mib": archive.stat().st_size / 2**20, "fake": bool(fake),
            "unpacked": str(unpacked), "train_images": len(data.train_y), "test_images": len(data.test_y),
            "classes": len(data.classes), "unpack_s": t1 - t0, "decode_s": t2 - t1}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="task", required=True)
    sub.add_parser("env").add_argument("--json", required=True)
    d = sub.add_parser("data")
    d.add_argument("--archive", required=True)
    d.add_argument("--dest", required=True)
    d.add_argument("--fake", type=int, help="first write a random archive of N train images at --archive")
    d.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if args.task == "env":
        result = environment()
        gpus = "; ".join(f"{g['name']} ({g['memory_free_mib'] / 1024:.1f} GiB free of "
                         f"{g['memory_total_mib'] / 1024:.1f})" for g in result["gpus"]) or "no CUDA GPU"
        print(f"{gpus}; driver {result['driver']}; torch {result['torch']}, CUDA {result['cuda']}, "
              f"cuDNN {result['cudnn']}; Python {result['python']}, {result['cpus']} CPUs")
        print("packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in result["packages"].items()))
        for line in result["nvidia_smi"]:
            print("nvidia-smi:", line)
    else:
        result = prepare_data(Path(args.archive), Path(args.dest), args.fake)
        print(json.dumps(result))
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
