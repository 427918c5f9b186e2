"""Top-k predictions of a trained model for image files, in batches, on the model's device.

Each image is normalised with the mean/std stored in the model file (the training split's), as the
test set was during training. Results stay on the device until the last batch, then cross to the
host in one copy.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data.images import ImageProblem, find_images, read_image


@dataclass
class Predictions:
    files: list[Path]                     # the images predicted, in input order
    classes: list[list[str]]              # per image, the top-k class names, most probable first
    probabilities: list[list[float]]      # per image, their probabilities (softmax of the logits)
    skipped: list[str] = field(default_factory=list)  # one line per file or path that could not be used


def predict_images(model: torch.nn.Module, meta: dict, paths, top_k: int = 3, batch_size: int = 256,
                   resize: bool = False) -> Predictions:
    """Predict every image found in `paths` (files, folders searched recursively); bad files are skipped."""
    device = next(model.parameters()).device
    files, skipped = find_images(paths)
    size, k = meta["input_size"], min(top_k, meta["num_classes"])
    mean = torch.tensor(meta["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(1, 3, 1, 1)
    kept, top_p, top_i = [], [], []
    model.eval()
    for start in range(0, len(files), batch_size):  # read a batch at a time: memory stays bounded
        images = []
        for path in files[start:start + batch_size]:
            try:
                images.append(read_image(path, size, resize))
                kept.append(path)
            except ImageProblem as e:
                skipped.append(str(e))
        if not images:
            continue
        x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad():
            probabilities = model((x - mean) / std).float().softmax(dim=1)
        p, i = probabilities.topk(k, dim=1)
        top_p.append(p)
        top_i.append(i)
    if not kept:
        return Predictions([], [], [], skipped)
    p, i = torch.cat(top_p).cpu().tolist(), torch.cat(top_i).cpu().tolist()  # the one device-to-host copy
    names = meta["classes"]
    return Predictions(kept, [[names[c] for c in row] for row in i], p, skipped)


def table(result: Predictions) -> str:
    """A terminal table: one row per image, the top-k classes with their probabilities."""
    if not result.files:
        return ""
    k = len(result.classes[0])
    ordinal = ["1st", "2nd", "3rd"] + [f"{n}th" for n in range(4, k + 1)]
    cells = [[f"{c} ({p:.1%})" for c, p in zip(cs, ps)] for cs, ps in zip(result.classes, result.probabilities)]
    path_w = max(len("image"), *(len(str(f)) for f in result.files))
    cell_w = max(len(ordinal[0]), *(len(c) for row in cells for c in row))
    lines = [f"{'image':<{path_w}}  " + "  ".join(f"{o:<{cell_w}}" for o in ordinal[:k])]
    lines += [f"{str(f):<{path_w}}  " + "  ".join(f"{c:<{cell_w}}" for c in row) for f, row in zip(result.files, cells)]
    return "\n".join(line.rstrip() for line in lines)


def to_csv(result: Predictions) -> str:
    """path, class_1, probability_1, ..., class_k, probability_k: one row per image."""
    k = len(result.classes[0]) if result.files else 0
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path"] + [f"{name}_{n}" for n in range(1, k + 1) for name in ("class", "probability")])
    for f, cs, ps in zip(result.files, result.classes, result.probabilities):
        writer.writerow([str(f)] + [v for c, p in zip(cs, ps) for v in (c, f"{p:.6f}")])
    return out.getvalue()


def to_json(result: Predictions, model_path: Path, meta: dict) -> str:
    images = [{"path": str(f), "top_k": [{"class": c, "probability": p} for c, p in zip(cs, ps)]}
              for f, cs, ps in zip(result.files, result.classes, result.probabilities)]
    return json.dumps({"model": str(model_path), "classes": meta["classes"], "images": images,
                       "skipped": result.skipped}, indent=2)
