"""The trained-model file: weights plus what inference needs, and the one function that loads it.

A best-model file (OUTPUT/checkpoints/best_model_<epoch>_<metric>=<value>.pt) holds
`{"model": state_dict, "meta": {...}}`; `meta` (see `model_meta`) has the class names, the
normalisation mean/std, width, num_classes, input size, the run's settings and the metric and epoch
the model was chosen on. Only plain types and tensors, so `torch.load(weights_only=True)` reads it
and no code in the file can run. Files saved before the metadata existed hold the bare state_dict:
they still load (width and classes are read from the weight shapes), with `meta["complete"] = False`.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch

from core.errors import UserError
from models.resnet import CustomResNet

log = logging.getLogger(__name__)

FORMAT = "era_s10.trained_model"
FORMAT_VERSION = 1
INPUT_SIZE = 32


def model_meta(*, classes, mean, std, width: int, config: dict, chosen_on: str, score: float,
               epoch: int) -> dict:
    """The `meta` entry of a trained-model file: plain Python types only (weights_only loads them)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "architecture": "CustomResNet",
        "classes": [str(c) for c in classes], "num_classes": len(classes),
        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
        "width": int(width), "input_size": INPUT_SIZE,
        # How an image becomes the model's input (what predict and the ONNX file's users must do).
        "input": "RGB, HxW = input_size, pixel/255, then (x - mean) / std per channel, NCHW float32",
        "output": "logits (softmax gives the class probabilities)",
        "chosen_on": chosen_on, "score": float(score), "epoch": int(epoch),
        "config": config, "complete": True,
    }


def read_model_file(path: str | Path) -> dict:
    """torch.load(weights_only=True) onto the CPU; UserError (one line) for a missing, damaged or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is not a file: give a best-model file, e.g. OUTPUT/checkpoints/best_model_*.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # a Python global it does not allow: stopped before running it
            raise UserError(f"refused to load {path}: it holds Python objects that could run code when loaded; "
                            f"nothing in it was run: use a best-model file this trainer wrote") from None
        raise UserError(f"cannot read {path} ({type(e).__name__}): the file is damaged or not a torch file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise UserError(f"cannot read {path} ({type(e).__name__}: {first}): the file is damaged or not a "
                        f"torch file: give another model file") from None


def _bare_meta(state: dict, path: Path) -> dict:
    """What the weights alone tell: width (PrepLayer's channels) and num_classes (the FC's rows)."""
    try:
        width = int(state["prep.0.weight"].shape[0])
        num_classes = int(state["fc.weight"].shape[0])
    except (KeyError, AttributeError, IndexError):
        raise UserError(f"{path} holds no CustomResNet weights (no prep.0.weight / fc.weight): give a best-model "
                        f"file of this trainer") from None
    return {"format": FORMAT, "format_version": 0, "architecture": "CustomResNet", "classes": None,
            "num_classes": num_classes, "mean": None, "std": None, "width": width, "input_size": INPUT_SIZE,
            "chosen_on": None, "score": None, "epoch": None, "config": None, "complete": False}


def load_trained(path: str | Path, device: str | torch.device = "cpu",
                 require_meta: bool = False) -> tuple[CustomResNet, dict]:
    """(model in eval() mode on `device`, meta) from a best-model file.

    A bare state_dict (saved before the metadata existed) loads with meta["complete"] False (classes,
    mean and std None) and a warning; with `require_meta` it is a UserError instead, for uses that
    cannot work without them (predict, export). A training checkpoint is refused with the fix.
    """
    path = Path(path)
    state = read_model_file(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a model: give a best-model file")
    if "run_state" in state and "optimizer" in state:
        raise UserError(f"{path} is a training checkpoint (for --resume), not a model file: use "
                        f"OUTPUT/checkpoints/best_model_*.pt")
    if isinstance(state.get("meta"), dict) and "model" in state:
        meta, weights = state["meta"], state["model"]
    else:
        meta, weights = _bare_meta(state, path), state
        if require_meta:
            raise UserError(f"{path} holds weights only (saved before model files carried class names and "
                            f"mean/std), so its images cannot be normalised or named: retrain to get a "
                            f"self-describing best_model file")
        log.warning("%s holds weights only: classes, mean and std unknown (meta['complete'] is False)", path)
    model = CustomResNet(num_classes=meta["num_classes"], width=meta["width"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise UserError(f"{path} does not fit a CustomResNet of width {meta['width']} with {meta['num_classes']} "
                        f"classes ({' '.join(lines[1:2])[:160]}): the file is not a model of this trainer") from None
    return model.to(device).eval(), meta
