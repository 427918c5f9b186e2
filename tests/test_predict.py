"""`python run.py predict`: a model trained on a separable folder names its held-out images; bad input is one line."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from PIL import Image

import run as run_module
from tests.conftest import run_cli
from tests.squares import trained_squares_model


@pytest.fixture(scope="module")
def squares_model(tmp_path_factory):
    """(folder dataset of coloured squares, its best-model file): trained by run.py, 2 epochs at width 8."""
    return trained_squares_model(tmp_path_factory)


def predict(capsys, *args) -> tuple[int, str, str]:
    code = run_module.main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_held_out_images_are_predicted_right(squares_model, tmp_path):
    data, model = squares_model
    proc = run_cli("predict", model, data / "test", "--csv", tmp_path / "p.csv", "--json", tmp_path / "p.json",
                   "--batch-size", 16, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and proc.stderr == ""
    right = sum(row["class_1"] == row["path"].split("/")[-2] for row in rows)  # DIR/test/<class>/<i>.png
    assert right / len(rows) >= 0.95, right  # 4 colours: chance is 25%; seen: 80 of 80
    assert len(proc.stdout.strip().splitlines()) == 1 + 80 + 1  # header, one row per image, the closing line
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["classes"] == ["blue", "green", "red", "yellow"] and result["skipped"] == []
    for image in result["images"]:
        p = [entry["probability"] for entry in image["top_k"]]
        assert len(p) == 3 and p == sorted(p, reverse=True) and 0.25 < p[0] and sum(p) <= 1 + 1e-6
    assert [image["top_k"][0]["class"] for image in result["images"]] == [row["class_1"] for row in rows]


def test_bad_files_are_one_line_each_and_the_rest_still_predicted(squares_model, tmp_path, capsys):
    data, model = squares_model
    folder = tmp_path / "mixed"
    (folder / "deeper").mkdir(parents=True)
    good = sorted((data / "test" / "red").glob("*.png"))[:2]
    shutil.copy(good[0], folder / "a.png")
    shutil.copy(good[1], folder / "deeper" / "b.png")  # folders are searched recursively
    (folder / "broken.png").write_text("not an image")
    Image.new("RGB", (40, 30), (255, 0, 0)).save(folder / "big.png")
    (folder / "notes.txt").write_text("not looked at: a folder is searched for image files only")
    code, out, err = predict(capsys, model, folder, tmp_path / "missing.png", "--top-k", 2)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped: ") for line in lines)
    assert "missing.png: no such file" in err and "broken.png is not a readable image" in err
    assert "big.png is 40x30, not 32x32: pass --resize" in err
    assert "a.png" in out and "b.png" in out and "2 image(s) predicted, 3 skipped" in out
    code, out, err = predict(capsys, model, folder, "--resize")  # now the 40x30 one is resized and predicted
    assert code == 0 and "3 image(s) predicted, 1 skipped" in out and "big.png" in out


def test_nothing_predictable_is_exit_2(squares_model, tmp_path, capsys):
    _, model = squares_model
    (tmp_path / "broken.png").write_text("no")
    code, out, err = predict(capsys, model, tmp_path / "broken.png", tmp_path / "empty_folder_missing")
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("error: no image could be predicted (2 skipped")


@pytest.mark.parametrize("case", ["training checkpoint", "bare state_dict", "top-k 0"])
def test_bad_model_or_flags_are_one_line(squares_model, tmp_path, capsys, case):
    data, model = squares_model
    args = [model, data / "test"]
    if case == "training checkpoint":
        args[0], expected = sorted(model.parent.glob("checkpoint_*.pt"))[-1], "is a training checkpoint"
    elif case == "bare state_dict":
        args[0], expected = tmp_path / "old.pt", "holds weights only"
        torch.save(torch.load(model, weights_only=True)["model"], args[0])
    else:
        args, expected = args + ["--top-k", 0], "--top-k 0 must be at least 1"
    code, out, err = predict(capsys, *args)
    assert code == 2 and expected in err and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_training_flags_are_not_predict_flags(squares_model):
    data, model = squares_model
    proc = run_cli("predict", model, data / "test", "--epochs", 3)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: unrecognized arguments: --epochs 3 (see python run.py predict --help)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")
def test_on_the_gpu_the_predictions_are_the_cpu_ones(squares_model, tmp_path):
    data, model = squares_model
    for device in ("cpu", "cuda"):
        assert run_cli("predict", model, data / "test", "--device", device, "--json", tmp_path / f"{device}.json",
                       ).returncode == 0
    cpu, gpu = (json.loads((tmp_path / f"{d}.json").read_text())["images"] for d in ("cpu", "cuda"))
    for a, b in zip(cpu, gpu):
        assert a["top_k"][0]["class"] == b["top_k"][0]["class"]
        assert a["top_k"][0]["probability"] == pytest.approx(b["top_k"][0]["probability"], abs=1e-3)

