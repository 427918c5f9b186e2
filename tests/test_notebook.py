"""notebooks/era_s10.ipynb runs end to end in smoke mode (random images, CPU), as CI runs it with papermill:
the platform install keeps torch, the GPU check speaks, training prints its table, the report, prediction pictures
and the ONNX export come out."""

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "era_s10.ipynb"


def outputs(cell) -> tuple[str, list[dict]]:
    """(the cell's text output, its rich outputs)."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")
    rich = [o["data"] for o in cell.get("outputs", []) if o["output_type"] in ("display_data", "execute_result")]
    return text, rich


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    papermill = pytest.importorskip("papermill")
    out = tmp_path_factory.mktemp("notebook")
    return papermill.execute_notebook(str(NOTEBOOK), str(out / "executed.ipynb"), cwd=str(NOTEBOOK.parent),
                                      parameters={"SMOKE": True, "OUTPUT": str(out / "run")}, progress_bar=False,
                                      kernel_name="python3"), out / "run"


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_first_cell_holds_the_parameters():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", []) and "SMOKE = False" in first.source


def test_the_notebook_runs_end_to_end_in_smoke_mode(executed):
    nb, run = executed
    cells = code_cells(nb)
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    def cell(marker):  # papermill adds a cell of its own after the parameters: find cells by what they do
        return outputs(next(c for c in cells if marker in c.source))
    install, gpu, train, report, predict, export = (cell(m) for m in (
        "checkout_root", "gpu_status()", "build_run(config", "srcdoc", "predict_images(", "export_onnx("))
    assert "torch" in install[0] and "(kept)" in install[0]  # the platform's torch stayed
    assert "CPU" in gpu[0] or "CUDA GPU" in gpu[0]
    assert "epoch" in train[0] and "test acc" in train[0] and "target 90%" in train[0]
    assert "<iframe srcdoc=" in report[1][0]["text/html"] and "LR range test" in report[1][0]["text/html"]
    assert "8 images predicted" in predict[0] and any("image/png" in r for r in predict[1])
    assert "logit difference" in export[0] and (run / "model.onnx").stat().st_size > 0
    assert (run / "summary.json").is_file() and (run / "report.html").is_file()
