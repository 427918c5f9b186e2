"""The steps of bench/gpu_report.py: the command each runs (with its own time budget) and what it reads back.

Every step is one or more Runs; a Run is a subprocess whose results are read from the files it writes in
the work folder, so a step that fails or is killed leaves the others untouched.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_accuracy import summarise  # noqa: E402

STEPS = ("env", "data", "tests", "throughput", "accuracy", "plain", "multigpu", "lrsweep")
DEFAULT_STEPS = STEPS[:-1]  # lrsweep (issue 18's question, not the report's) runs only when asked: its own part
VARIANTS = ("throughput.eager", "throughput.compile")  # --steps may name one; accuracy runs one run per seed
# Each part fits one 10-minute command on the GPU machine; env runs in every part (it names the machine).
PARTS = {"1": ("env", "tests"), "2": ("env", "throughput"), "3": ("env", "data", "accuracy", "plain", "multigpu"),
         "4": ("env", "data", "lrsweep")}
NEEDS_DATA = {"accuracy", "plain", "multigpu", "lrsweep"}
# Seconds a run may take: (on a GPU machine, in --dry-run). Each accuracy run is one seed's 24-epoch recipe.
BUDGETS = {"env": (60, 60), "data": (240, 60), "tests": (520, 60), "throughput.eager": (240, 90),
           "throughput.compile": (360, 90), "accuracy": (200, 90), "plain": (300, 90), "multigpu": (360, 90),
           "lrsweep": (200, 90)}
DRY_TESTS = ["tests/test_schedule.py", "-k", "milestones or fractional"]  # a quick selection: the path, not the suite
# run.py flags in a dry run: tiny data, a short range test and warm-up
DRY_RUN_FLAGS = ("--batch-size", "64", "--lr-find-iters", "5", "--lr-find-warmup", "2")
TARGET = 0.90
# lrsweep: the 24-epoch recipe at full width with a fixed LRMAX (LRMIN = LRMAX/100, where the range test's clip
# puts it on CIFAR-10), chosen on a validation split, never the test set. The grid doubles from about what the
# range test reads at width 64 (guess80 6.9e-4 and 1.7e-3, minimum 7.6e-4 and 1.3e-3, seeds 0 and 1) to past
# what trained best at width 16 (1.7e-3 to 2.5e-3): which LRMAX should a reading give at full width? (issue 18)
LR_SWEEP = (7e-4, 1.4e-3, 2.8e-3, 5.6e-3)
SWEEP_VAL_SPLIT = 0.1
SWEEP_LR_MIN_RATIO = 100


def order_key(name: str) -> tuple[int, int]:
    """Runs in step order; throughput eager before compile, accuracy by seed, lrsweep by LRMAX."""
    step, _, variant = name.partition(".")
    if step == "lrsweep" and variant:
        return STEPS.index(step), float(variant[len("lrmax"):])
    return STEPS.index(step), (int(variant[4:]) if variant.startswith("seed") else int(variant == "compile"))


def log_name(step: str) -> str:
    """env and data share one log, accuracy and lrsweep another: with report.md and report.json, at most 8 files
    come back."""
    return {"env": "logs/setup.log", "data": "logs/setup.log", "lrsweep": "logs/accuracy.log"}.get(step,
                                                                                                 f"logs/{step}.log")


@dataclass
class Settings:
    dry_run: bool
    work: Path                      # scratch: unpacked data, decoded cache, the benchmarks' own outputs
    archive: Path | None            # None in a dry run: a small random archive is made
    seeds: list[int]
    nproc: int | None = None        # processes of the multigpu step; None: every GPU the env step saw
    workers: int = 8                # DataLoader workers of the CPU data paths (the plain loop, (c))
    lr_maxes: tuple[float, ...] = LR_SWEEP  # the lrsweep step's LRMAX values (seed: the first of seeds)
    fail: dict[str, str] = field(default_factory=dict)  # run or step name -> "fail" | "hang" (--fail-step)

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def data_dir(self) -> Path:
        return self.work / ("fake-cifar10" if self.archive is None else "cifar10-jpeg")

    @property
    def cache(self) -> Path:
        return self.work / "cache"


@dataclass
class Run:
    name: str
    step: str
    budget: float
    command: list[str] | None = None
    env: dict = field(default_factory=dict)      # added to (None: removed from) the environment
    skip: str | None = None                      # not run; the row says this
    read: Callable[[], dict] | None = None       # its results, from the files it wrote
    stale: list[Path] = field(default_factory=list)  # deleted first, so an old file is never read as new
    note: str = ""                               # said next to the result (e.g. what was reused)


def python(*args) -> list[str]:
    return [sys.executable, *map(str, args)]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def accuracy_command(s: Settings, pipeline: str, seeds: list[int], out: Path, tag: str = "default",
                     run_flags: tuple[str, ...] = (), bench_flags: tuple = ()) -> list[str]:
    width, epochs, workers = (8, 1, 0) if s.dry_run else (64, 24, s.workers)
    cmd = python(REPO / "bench" / "bench_accuracy.py", "--pipelines", pipeline, "--seeds", *seeds,
                 "--width", width, "--epochs", epochs, "--device", s.device, "--workers", workers,
                 "--data-dir", s.data_dir, "--out", out, "--tag", tag, *bench_flags)
    if s.dry_run:
        cmd += ["--plain-finder-iters", "20"]  # the plain loop's own range test, short like ours (DRY_RUN_FLAGS)
    if s.dry_run and s.archive is not None:
        cmd += ["--subset", "500"]  # the real archive in a dry run: a slice of it
    extra = [*(DRY_RUN_FLAGS if s.dry_run else ()), *run_flags]
    return cmd + (["--", *extra] if extra else [])


def accuracy_runs(folder: Path, pipeline: str, tag: str, seeds: list[int]) -> list[dict]:
    found = [folder / f"{pipeline}-{tag}-seed{seed}.json" for seed in seeds]
    missing = [p.name for p in found if not p.is_file()]
    if missing:
        raise RuntimeError(f"no result file {', '.join(missing)} in {folder}")
    return [summarise(read_json(p), TARGET) for p in found]


def reused(folder: Path, pipeline: str, tag: str, seeds: list[int]) -> str:
    """bench_accuracy runs a seed only once per folder: say which results an earlier command left."""
    old = [str(seed) for seed in seeds if (folder / f"{pipeline}-{tag}-seed{seed}.json").is_file()]
    return f"seed {', '.join(old)} reused from an earlier command in {folder}" if old else ""


def plan(step: str, s: Settings, machine: dict | None, rows: dict) -> list[Run]:
    """The runs of `step`; `machine` is the env step's result (None if it failed), `rows` the report's rows."""
    budget = lambda name: BUDGETS[name][1 if s.dry_run else 0]  # noqa: E731
    w = s.work
    if step == "env":
        runs = [Run("env", step, budget("env"),
                    python(REPO / "bench" / "gpu_tasks.py", "env", "--json", w / "env.json"),
                    read=lambda: read_json(w / "env.json"), stale=[w / "env.json"])]
    elif step == "data":
        archive = s.archive or w / "fake-cifar10.tar.gz"
        runs = [Run("data", step, budget("data"),
                    python(REPO / "bench" / "gpu_tasks.py", "data", "--archive", archive, "--dest", s.data_dir,
                           "--json", w / "data.json", *(["--fake", 320] if s.archive is None else [])),
                    env={"ERA_S10_CACHE": str(s.cache)}, read=lambda: read_json(w / "data.json"),
                    stale=[w / "data.json"])]
    elif step == "tests":
        on_gpu = not s.dry_run and bool(machine and machine.get("cuda_available"))
        selection = DRY_TESTS if s.dry_run else ["--durations", "10"]
        runs = [Run("tests", step, budget("tests"),
                    python("-m", "pytest", "-q", "--junitxml", w / "tests.xml", *selection),
                    env={"ERA_S10_TEST_DEVICE": "cuda" if on_gpu else None,
                         "ERA_S10_CIFAR_ARCHIVE": str(s.archive) if s.archive and not s.dry_run else None},
                    read=lambda: junit_counts(w / "tests.xml", "cuda" if on_gpu else "cpu"), stale=[w / "tests.xml"])]
    elif step == "throughput":
        small = ["--device", "cpu", "--width", 8, "--train-size", 128, "--batch-size", 64, "--epochs", 2,
                 "--seed-epochs", 1, "--workers", 0] if s.dry_run else ["--workers", s.workers]
        runs = []
        for variant, flags in (("eager", []), ("compile", ["--compile", "--skip-seed-style"])):
            out = w / f"throughput-{variant}.json"
            # A dry run checks the report's path, not torch.compile (minutes on a CPU): compile is disabled.
            env = {"TORCH_COMPILE_DISABLE": "1"} if s.dry_run and variant == "compile" else {}
            runs.append(Run(f"throughput.{variant}", step, budget(f"throughput.{variant}"),
                            python(REPO / "bench" / "bench_throughput.py", *small, *flags, "--json", out), env=env,
                            read=lambda out=out: read_json(out), stale=[out],
                            note="torch.compile disabled (dry run)" if env else ""))
    elif step in ("accuracy", "plain"):
        # One run per seed: each has its own budget and row, so a seed that runs out of time loses only itself,
        # and seeds may be split over commands (--steps accuracy --seeds 2).
        pipeline, seeds = ("ours", s.seeds) if step == "accuracy" else ("plain", s.seeds[:1])
        folder = w / "accuracy"
        runs = [Run(f"accuracy.seed{seed}" if step == "accuracy" else "plain", step, budget(step),
                    accuracy_command(s, pipeline, [seed], folder), env={"ERA_S10_CACHE": str(s.cache)},
                    note=reused(folder, pipeline, "default", [seed]),
                    read=lambda seed=seed: accuracy_runs(folder, pipeline, "default", [seed])[0]) for seed in seeds]
    elif step == "multigpu":
        # A dry run uses no GPU: one process unless --nproc asks for several (gloo, on CPU).
        gpus = s.nproc if s.nproc is not None else 1 if s.dry_run else (machine or {}).get("gpu_count")
        if gpus is None:
            return [Run("multigpu", step, 0, skip="skipped: GPU count unknown (the env step failed)")]
        if gpus <= 1:
            return [Run("multigpu", step, 0, skip="skipped: 1 GPU")]
        tag, seed = f"gpus{gpus}", s.seeds[0]
        folder = w / "multigpu"
        runs = [Run("multigpu", step, budget("multigpu"),
                    accuracy_command(s, "ours", [seed], folder, tag, ("--nproc-per-node", str(gpus))),
                    env={"ERA_S10_CACHE": str(s.cache)}, note=reused(folder, "ours", tag, [seed]),
                    read=lambda: scaling(gpus, accuracy_runs(folder, "ours", tag, [seed])[0],
                                         baseline(w, seed, rows, machine)))]
    elif step == "lrsweep":
        folder, seed = w / "lrsweep", s.seeds[0]
        runs = []
        for lr_max in s.lr_maxes:
            tag = sweep_tag(lr_max)
            flags = ("--lr-max", f"{lr_max:g}", "--lr-min", f"{lr_max / SWEEP_LR_MIN_RATIO:g}")
            runs.append(Run(f"lrsweep.{tag}", step, budget(step),
                            accuracy_command(s, "ours", [seed], folder, tag, flags,
                                             ("--val-split", SWEEP_VAL_SPLIT)),
                            env={"ERA_S10_CACHE": str(s.cache)}, note=reused(folder, "ours", tag, [seed]),
                            read=lambda tag=tag: accuracy_runs(folder, "ours", tag, [seed])[0]))
    else:
        raise ValueError(f"unknown step {step!r}")
    return [inject_failure(run, s.fail) for run in runs]


def sweep_tag(lr_max: float) -> str:
    """The name of an lrsweep run (lrsweep.lrmax0.0014) and its bench_accuracy --tag."""
    return f"lrmax{lr_max:g}"


def baseline(work: Path, seed: int, rows: dict, machine: dict | None) -> dict | None:
    """The one-process run of `seed`: this machine's accuracy output, else an earlier row from the same GPU."""
    path = work / "accuracy" / f"ours-default-seed{seed}.json"
    if path.is_file():
        return summarise(read_json(path), TARGET)
    row = rows.get(f"accuracy.seed{seed}", {})
    same_gpu = machine is not None and row.get("machine", {}).get("device") == machine["device_name"]
    return row["result"] if same_gpu and row.get("result") else None


def scaling(gpus: int, run: dict, base: dict | None) -> dict:
    """N processes against one, same recipe and seed (the one-process run is the accuracy step's)."""
    result = {"gpus": gpus, "run": run, "baseline": base}
    if base is not None:
        result.update(speedup=base["train_s"] / run["train_s"], efficiency=base["train_s"] / run["train_s"] / gpus)
    return result


def junit_counts(path: Path, device: str) -> dict:
    """Counts from pytest's --junitxml (written also when pytest is interrupted)."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"], "failed": failed,
            "seconds": float(suite.get("time", 0)), "device": device}


def inject_failure(run: Run, fail: dict[str, str]) -> Run:
    """--fail-step NAME[:hang]: a run that fails (or never ends), to see the report carry on past it."""
    how = fail.get(run.name) or fail.get(run.step)
    if how is None or run.skip:
        return run
    if how == "hang":
        code = f'import time; print("{run.name}: hanging on purpose (--fail-step)", flush=True); time.sleep(10**6)'
    else:
        code = (f'import sys; print("{run.name}: about to fail"); '
                f'print("{run.name}: a deliberate failure (--fail-step)"); sys.exit(3)')
    run.command, run.read, run.note = python("-c", code), None, "deliberate failure (--fail-step)"
    return run
