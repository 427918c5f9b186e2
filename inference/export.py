"""Export a trained model to ONNX, with its class names and normalisation in the file's metadata.

Needs the optional `export` extra (onnx, onnxscript, onnxruntime: `pip install -e .[export]`); they
are imported here only, so training never needs them.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError

# Opset 18: the opset torch's ONNX exporter (torch.onnx.export(dynamo=True), via onnxscript's torchlib)
# writes natively, so no version-conversion pass runs over the graph (torch's default, 20, needs one);
# every operator this network uses (Conv, BatchNormalization, MaxPool, Relu, Add, Gemm) is older than
# it, and ONNX Runtime has run opset 18 since 1.14 (2023), so older runtimes can load the file too.
OPSET = 18
INSTALL = "pip install -e .[export]"


def _require(*modules: str):
    import importlib

    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            raise UserError(f"ONNX export needs the optional package {name}, which is not installed: {INSTALL} "
                            f"(onnx, onnxscript, onnxruntime)") from None
    return loaded


def metadata(meta: dict, source: Path) -> dict[str, str]:
    """The ONNX metadata_props: strings only, lists and numbers as JSON."""
    keep = ("classes", "mean", "std", "input_size", "num_classes", "width", "input", "output", "chosen_on",
            "score", "epoch", "architecture")
    props = {k: (meta[k] if isinstance(meta[k], str) else json.dumps(meta[k])) for k in keep}
    props["source"] = Path(source).name
    return props


def export_onnx(model: torch.nn.Module, meta: dict, out: Path, source: Path, opset: int = OPSET) -> Path:
    """Write `out` (one file, weights inside) with a dynamic batch axis; input "image", output "logits"."""
    if opset < OPSET:
        raise UserError(f"--opset {opset}: torch's exporter writes opset {OPSET} and newer (older ones need a "
                        f"conversion that fails for this graph): give --opset {OPSET} or higher")
    onnx, _ = _require("onnx", "onnxscript")
    model = model.cpu().eval()
    size = meta["input_size"]
    example = torch.zeros(2, 3, size, size)
    try:
        with warnings.catch_warnings():
            # torch's exporter trips a FutureWarning of torch's own (LeafSpec): noise to a user, not a problem.
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                                        output_names=["logits"], external_data=False, verbose=False,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    except Exception as e:  # noqa: BLE001 - an exporter failure is reported as what it is, with the opset
        raise UserError(f"torch.onnx.export failed at opset {opset} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}): try another --opset") from None
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:  # torch keeps its own opset when a conversion fails, with a warning only
        raise UserError(f"--opset {opset}: the exporter could only write opset {written}: give --opset {written}")
    for key, value in metadata(meta, source).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"ERA S10 CustomResNet (width {meta['width']}, {meta['num_classes']} classes) from "
                        f"{Path(source).name}; input: {meta['input']}; output: {meta['output']}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save_model(proto, str(tmp))
    os.replace(tmp, out)  # a reader never sees half a file
    return out


def check_with_onnxruntime(model: torch.nn.Module, path: Path, size: int = 32, images: int = 8,
                           seed: int = 0) -> float | None:
    """max |logits(ONNX Runtime) - logits(PyTorch)| on random inputs; None if onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"image": x.numpy()})[0]
    with torch.no_grad():
        torch_logits = model.cpu().eval()(x).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())
