"""`python run.py export`: the ONNX file computes the PyTorch model's logits and names its classes and normalisation."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import run as run_module
from data.datasets import load_dataset
from models import load_trained
from tests.squares import trained_squares_model


def need(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e .[export])")


@pytest.fixture(scope="module")
def squares_model(tmp_path_factory):
    return trained_squares_model(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(squares_model, tmp_path_factory):
    need("onnx"), need("onnxscript"), need("onnxruntime")
    _, model_file = squares_model
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert run_module.main(["export", str(model_file), "--onnx", str(out)]) == 0
    return model_file, out


def normalised(images: np.ndarray, meta: dict) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)


def test_onnx_runtime_gives_the_pytorch_logits(exported):
    import onnxruntime

    model_file, out = exported
    model, meta = load_trained(model_file)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    real = load_dataset("folder", model_file.parents[2] / "data", use_cache=False).test_x[:49]
    noise = torch.Generator().manual_seed(0)
    inputs = {"random, batch 1": torch.randn(1, 3, 32, 32, generator=noise),
              "random, batch 3": torch.randn(3, 3, 32, 32, generator=noise) * 3,
              "test images, batch 49": normalised(real, meta)}  # batch sizes the export never saw: dynamic axis
    for name, x in inputs.items():
        onnx_logits = session.run(["logits"], {"image": x.numpy()})[0]
        with torch.no_grad():
            torch_logits = model(x).numpy()
        assert onnx_logits.shape == torch_logits.shape
        assert np.abs(onnx_logits - torch_logits).max() <= 1e-4, name  # fp32; seen 1e-6 random, 1e-5 real (logits ~30)


def test_the_file_names_its_classes_normalisation_and_opset(exported):
    import onnx

    model_file, out = exported
    proto = onnx.load(str(out))
    _, meta = load_trained(model_file)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == meta["classes"]
    assert json.loads(props["mean"]) == meta["mean"] and json.loads(props["std"]) == meta["std"]
    assert (props["input_size"], props["source"]) == ("32", model_file.name)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    (image,) = proto.graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not list(out.parent.glob("*.data"))  # one file: the weights are inside


def test_a_missing_export_extra_is_one_line(squares_model, tmp_path, monkeypatch, capsys):
    _, model_file = squares_model
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    code = run_module.main(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "needs the optional package onnxscript" in err and "pip install -e .[export]" in err
    assert not (tmp_path / "m.onnx").exists()


def test_an_opset_the_exporter_cannot_write_is_one_line(squares_model, tmp_path, capsys):
    _, model_file = squares_model
    code = run_module.main(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx"), "--opset", "11"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--opset 11" in err and "--opset 18 or higher" in err
