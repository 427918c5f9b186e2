"""bench/gpu_report.py as a --dry-run on CPU: every step runs; a failing and a hanging step are reported with
their logs' last lines while the steps after them still run; a later command continues the same report."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import gpu_report
from tests.conftest import REPO, TEST_DEVICE_VARIABLE

RUN_NAMES = ["env", "data", "tests", "throughput.eager", "throughput.compile", "accuracy.seed0", "plain", "multigpu"]


def gpu_report_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TEST_DEVICE_VARIABLE}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, str(REPO / "bench" / "gpu_report.py"), *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_dry_run_reports_every_step_and_carries_on_past_failures(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    first = gpu_report_cli("--dry-run", "--out", out, "--work", work, "--fail-step", "throughput.compile:hang",
                           "--budget", "throughput.compile=4", "--fail-step", "plain")
    assert first.returncode == 1, first.stdout + first.stderr  # 1: some step failed
    report = json.loads((out / "report.json").read_text())
    rows = report["steps"]
    assert sorted(rows) == sorted(RUN_NAMES)
    for name in ("env", "data", "tests", "throughput.eager", "accuracy.seed0"):
        assert rows[name]["status"] == "ok", (name, rows[name])
    hung, failed = rows["throughput.compile"], rows["plain"]
    assert hung["status"] == "timed out after 4 s" and not hung["ok"]
    assert "throughput.compile: hanging on purpose (--fail-step)" in hung["tail"]
    assert failed["status"] == "failed (exit 3)" and failed["tail"][-1] == "plain: a deliberate failure (--fail-step)"
    # What ran after the hang and after the failure: the accuracy run, and the multigpu step (one process).
    assert len(rows["accuracy.seed0"]["result"]["test_accuracy"]) == 1  # one epoch
    assert rows["multigpu"]["status"] == "skipped: 1 GPU"
    assert rows["tests"]["result"]["passed"] == 2 and rows["tests"]["result"]["device"] == "cpu"
    assert set(rows["throughput.eager"]["result"]["images_per_s"]) == {"a", "b", "c"}
    assert rows["data"]["result"]["train_images"] == 320

    md = (out / "report.md").read_text()
    assert "**DRY RUN**" in md
    for name in RUN_NAMES:
        assert f"| {name} | {rows[name]['status']} |" in md
    assert "### throughput.compile: timed out after 4 s" in md and "### plain: failed (exit 3)" in md
    assert "plain: a deliberate failure (--fail-step)" in md
    assert "| ours | default | 0 | cpu (" in md  # the accuracy table (bench_accuracy's columns; the device names its CPU)
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.parts) <= 2 for p in files), files  # what the GPU machine sends back

    # A later command into the same folder continues the report: plain runs again, the other rows stay.
    second = gpu_report_cli("--dry-run", "--out", out, "--work", work, "--steps", "plain")
    assert second.returncode == 1, second.stdout + second.stderr  # throughput.compile's row still failed
    again = json.loads((out / "report.json").read_text())
    assert again["steps"]["plain"]["status"] == "ok" and again["steps"]["plain"]["result"]["pipeline"] == "plain"
    assert again["steps"]["throughput.compile"] == hung and len(again["invocations"]) == 2
    assert (out / "logs" / "plain.log").read_text().count("===== plain") == 2


def test_lrsweep_runs_each_lrmax_on_a_validation_split_only_when_asked(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = gpu_report_cli("--dry-run", "--out", out, "--work", work, "--part", "4", "--lr-maxes", "2e-3", "5e-4")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((out / "report.json").read_text())["steps"]
    assert sorted(rows) == ["data", "env", "lrsweep.lrmax0.0005", "lrsweep.lrmax0.002"]
    for lr_max in (5e-4, 2e-3):
        run = rows[f"lrsweep.lrmax{lr_max:g}"]["result"]
        assert (run["lr_max"], run["lr_min"]) == pytest.approx((lr_max, lr_max / 100))
        assert len(run["val_accuracy"]) == 1 and run["final_val"] == run["val_accuracy"][-1]  # scored on validation
    md = (out / "report.md").read_text()
    table = md.split("### LRMAX at full width, on validation")[1].split("\n", 1)[1]  # below its heading
    assert "val final" in table and "test" not in table  # the sweep's table never shows test accuracy
    # ascending LRMAX, whatever order they were given in
    assert table.index("| 0.0005 | 5e-06 |") < table.index("| 0.002 | 2e-05 |")
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["accuracy.log", "setup.log"]


def fake_report(folder, steps: dict, dry_run=True):
    folder.mkdir()
    (folder / "logs").mkdir()
    (folder / "logs" / "setup.log").write_text(f"log of {folder.name}\n")
    rows = {name: {"step": name.split(".")[0], "status": status, "ok": status == "ok", "seconds": 1.0, "budget_s": 9.0,
                   "log": "logs/setup.log", "note": "", "machine": {"device": "cpu", "torch": "x", "date": "d"},
                   "result": None} for name, status in steps.items()}
    (folder / "report.json").write_text(json.dumps({"dry_run": dry_run, "invocations": [], "steps": rows}))


def test_merge_takes_the_later_rows_and_concatenates_logs(tmp_path):
    fake_report(tmp_path / "part1", {"env": "ok", "tests": "failed (exit 1)"})
    fake_report(tmp_path / "part2", {"env": "ok", "tests": "ok", "multigpu": "skipped: 1 GPU"})
    parts = [str(tmp_path / "part1"), str(tmp_path / "part2")]
    assert gpu_report.main(["--merge", *parts, "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "report.json").read_text())
    assert {n: r["status"] for n, r in merged["steps"].items()} == {"env": "ok", "tests": "ok",
                                                                    "multigpu": "skipped: 1 GPU"}
    assert (tmp_path / "all" / "logs" / "setup.log").read_text() == "log of part1\nlog of part2\n"
    assert "| tests | ok |" in (tmp_path / "all" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--steps", "tests,bogus"], "--steps: unknown bogus"),
    (["--budget", "tests=soon"], "--budget tests=soon: give RUN=SECONDS"),
    (["--archive", "no/such.tar.gz"], "--archive no/such.tar.gz: no such file"),
    (["--part", "4", "--lr-maxes", "2e-3", "0"], "--lr-maxes 0: give learning rates above 0 and below 1"),
    (["--merge", "no-such-folder"], "--merge: no report.json in no-such-folder"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert gpu_report.main(["--out", str(tmp_path / "out"), "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_folder_that_holds_something_else_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{not json")
    assert gpu_report.main(["--out", str(out), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out / 'report.json'} cannot be read as a report")
    fake_report(tmp_path / "part", {"env": "ok"})
    assert gpu_report.main(["--merge", str(tmp_path / "part"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --merge: {out} already holds a report")
