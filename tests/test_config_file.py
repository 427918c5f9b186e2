"""--config FILE.yaml: settings from a file, flags override it, every run writes config.yaml that repeats it."""
import yaml

import pytest

from engine.config import PER_INVOCATION, Config
from tests.conftest import FAST, LR, read_summary, run_cli


def history(out):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_summary(out)["history"]]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cfg") / "first"
    proc = run_cli(*FAST, "--epochs", 2, "--seed", 3, "--lr-find-iters", 10, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_config_yaml_repeats_the_run(first_run, tmp_path):
    saved = yaml.safe_load((first_run / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["epochs"] == 2 and saved["width"] == 8
    assert set(saved) == {f for f in Config().to_dict() if f not in PER_INVOCATION}
    again = tmp_path / "again"
    proc = run_cli("--config", first_run / "config.yaml", "--output-dir", again)
    assert proc.returncode == 0, proc.stderr
    assert history(again) == history(first_run)  # the same seed on CPU: the same numbers
    assert read_summary(again)["lr_max"] == read_summary(first_run)["lr_max"]


def test_flags_override_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: fake\nsubset: 256\nbatch-size: 64\nwidth: 8\ndevice: cpu\nworkers: 0\n"
                      "epochs: 3\nlr_min: 0.001\nlr_max: 0.01\nprogress: false\n")
    out = tmp_path / "out"
    proc = run_cli("--config", config, "--epochs", 1, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["epochs"] == 1 and s["batch_size"] == 64 and s["lr_max"] == 0.01


@pytest.mark.parametrize("text, expected", [
    ("epoch: 2\n", "unknown setting 'epoch': did you mean 'epochs'?"),
    ("epochs: two\n", "epochs is 'two' (str); it must be int"),
    ("lr_max: [1, 2]\n", "lr_max is [1, 2] (list); it must be float or null"),
    ("epochs: 2\n  bad: : indent\n", "not valid YAML at line"),
    ("- epochs\n- 2\n", "not a mapping of settings"),
])
def test_a_bad_file_is_one_line(tmp_path, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    proc = run_cli("--config", config, *LR, "--output-dir", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(config) in lines[0], proc.stderr
    assert not out.exists()


def test_a_missing_file_is_one_line(tmp_path):
    proc = run_cli("--config", tmp_path / "none.yaml", "--output-dir", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot read it" in proc.stderr
