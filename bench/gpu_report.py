#!/usr/bin/env python
"""One command for the GPU: environment, tests on CUDA, throughput (eager and compiled), accuracy on real
CIFAR-10 (3 seeds and the plain loop) and multi-GPU scaling, into OUT/report.md and OUT/report.json.

Each step is a subprocess with its own time budget; a step that fails or runs out of time is recorded
(what failed, the last lines of its log) and the next step runs. The report is rewritten after every
step, so whatever stops the command, what was done is in OUT. At most 8 files: report.md, report.json
and logs/<step>.log (env and data share logs/setup.log).

  python bench/gpu_report.py --part 1 --archive .cifar          # env, tests           (one 10-minute command)
  python bench/gpu_report.py --part 2                           # env, throughput
  python bench/gpu_report.py --part 3 --archive .cifar          # env, data, accuracy, plain, multigpu
  python bench/gpu_report.py --part 4 --archive .cifar --lr-maxes 7e-4 1.4e-3   # env, data, lrsweep (2 of 4 LRMAX)
  python bench/gpu_report.py --merge part1 part2 part3 --out gpu-report   # one report from three OUTs
  python bench/gpu_report.py --dry-run --out /tmp/dry           # every step, tiny, on CPU

An OUT that already holds a report is continued: the steps run now replace their rows, the others stay.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gpu_report_md import write_markdown  # noqa: E402
from bench.gpu_runner import execute  # noqa: E402
from bench.gpu_steps import (DEFAULT_STEPS, LR_SWEEP, NEEDS_DATA, PARTS, STEPS, SWEEP_LR_MIN_RATIO,  # noqa: E402
                             SWEEP_VAL_SPLIT, VARIANTS, Settings, order_key, plan)
from data.archive import ARCHIVE_NAME, find_cifar_archive  # noqa: E402

DEFAULT_TIME_LIMIT = 560  # the GPU machine stops a command at 600 s; this leaves time to install and write


class UserError(Exception):
    """A mistake in the command line or the setup: one line, exit code 2."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--part", choices=sorted(PARTS), help="; ".join(f"{k}: {','.join(v)}" for k, v in PARTS.items()))
    which.add_argument("--steps", help=f"comma list of {','.join(STEPS)} (or throughput.eager, throughput.compile); "
                                       f"default: all but lrsweep. env always runs; data runs before accuracy/plain/multigpu/lrsweep")
    which.add_argument("--merge", nargs="+", metavar="DIR", help="combine the reports in these folders into --out")
    p.add_argument("--out", default=os.environ.get("OUT"), help="report folder (default: $OUT)")
    p.add_argument("--archive", help=f"{ARCHIVE_NAME}, or the folder holding it (default: $ERA_S10_CIFAR_ARCHIVE, "
                                     f"../shared/data/, .cifar/)")
    p.add_argument("--work", help="scratch folder: unpacked data, cache, run outputs (default: "
                                  "/tmp/era_s10_gpu_report, or ..._dry)")
    p.add_argument("--seeds", type=int, nargs="+", help="accuracy seeds (default: 0 1 2; dry run: 0)")
    p.add_argument("--nproc", type=int, help="processes of the multigpu step (default: every GPU)")
    p.add_argument("--lr-maxes", type=float, nargs="+", default=list(LR_SWEEP), metavar="LR",
                   help=f"the lrsweep step's LRMAX values: the 24-epoch recipe at full width, seed = the first of "
                        f"--seeds, LRMIN = LRMAX/{SWEEP_LR_MIN_RATIO}, scored on a {SWEEP_VAL_SPLIT:.0%} validation "
                        f"split (issue 18: which LRMAX should the range test read at full width?)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the CPU data paths")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                   help="seconds for the whole command (0: none); a run gets at most what is left")
    p.add_argument("--budget", action="append", default=[], metavar="RUN=SECONDS", help="override a run's budget")
    p.add_argument("--dry-run", action="store_true", help="every step on CPU: tiny model, a few hundred images, "
                                                          "one epoch; a fast selection of tests")
    p.add_argument("--fail-step", action="append", default=[], metavar="NAME[:hang]",
                   help="for testing the report: make this step fail (or hang until its budget runs out)")
    return p.parse_args(argv)


def selected_steps(args) -> list[str]:
    if args.part:
        names = list(PARTS[args.part])
    elif args.steps:
        names = [n.strip() for n in args.steps.split(",") if n.strip()]
        unknown = [n for n in names if n not in STEPS and n not in VARIANTS]
        if unknown:
            raise UserError(f"--steps: unknown {', '.join(unknown)}: choose from {', '.join(STEPS)} "
                            f"(or throughput.eager, throughput.compile)")
    else:
        names = list(DEFAULT_STEPS)
    if any(n in NEEDS_DATA for n in names) and "data" not in names:
        names.insert(0, "data")
    names = ["env"] + [n for n in names if n != "env"]
    return sorted(dict.fromkeys(names), key=order_key)


def resolve_archive(value: str | None, dry_run: bool, needed: bool) -> Path | None:
    """The archive file; None in a dry run without --archive (a small random one is made) or when no step
    needs it (the tests' real-data file is then skipped, with its reason)."""
    if value is None:
        if dry_run:
            return None
        local = REPO / ".cifar" / ARCHIVE_NAME
        found = find_cifar_archive(REPO) or (local if local.is_file() else None)
        if found is None and needed:
            raise UserError(f"no CIFAR-10 archive: pass --archive PATH ({ARCHIVE_NAME} or its folder), e.g. "
                            f"--archive .cifar (README, On a GPU machine)")
        return found
    path = Path(value)
    path = path / ARCHIVE_NAME if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--archive {value}: no such file{f' (looked for {path})' if path != Path(value) else ''}")
    return path.resolve()


def settings_from(args, steps: list[str]) -> Settings:
    # The steps run in the checkout: every path they get is absolute.
    work = (Path(args.work) if args.work else Path(tempfile.gettempdir()) / (
        "era_s10_gpu_report" + ("_dry" if args.dry_run else ""))).resolve()
    fail = {}
    for item in args.fail_step:
        name, _, how = item.partition(":")
        if not known_run(name) or how not in ("", "hang"):
            raise UserError(f"--fail-step {item}: give a step name, or NAME:hang")
        fail[name] = how or "fail"
    archive = resolve_archive(args.archive, args.dry_run, needed="data" in steps)
    return Settings(dry_run=args.dry_run, work=work, archive=archive,
                    seeds=args.seeds or ([0] if args.dry_run else [0, 1, 2]), nproc=args.nproc,
                    workers=args.workers, fail=fail, lr_maxes=tuple(check_lr_maxes(args.lr_maxes)))


def check_lr_maxes(values: list[float]) -> list[float]:
    bad = [v for v in values if not 0 < v < 1]
    if bad:
        raise UserError(f"--lr-maxes {' '.join(f'{v:g}' for v in bad)}: give learning rates above 0 and below 1, "
                        f"e.g. --lr-maxes 7e-4 1.4e-3")
    return values


def known_run(name: str) -> bool:
    """A step, or one run of it: throughput.eager/compile, accuracy.seedN, lrsweep.lrmaxX."""
    step, _, variant = name.partition(".")
    return step in STEPS and (not variant or name in VARIANTS or (step == "accuracy" and variant[4:].isdigit()
                                                                   and variant.startswith("seed"))
                              or (step == "lrsweep" and is_sweep_tag(variant)))


def is_sweep_tag(variant: str) -> bool:
    """lrmaxX, X a number: one lrsweep run's name after the dot (gpu_steps.sweep_tag)."""
    try:
        return variant.startswith("lrmax") and float(variant[len("lrmax"):]) > 0
    except ValueError:
        return False


def budgets_from(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--budget {item}: give RUN=SECONDS, e.g. tests=300") from None
        if not known_run(name):
            raise UserError(f"--budget {item}: unknown run {name}")
    return out


def read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read as a report ({e}): give another --out") from None
    if not isinstance(report, dict) or not {"steps", "invocations"} <= set(report):
        raise UserError(f"{path} is not a report of bench/gpu_report.py: give another --out")
    return report


def load_report(out: Path, dry_run: bool) -> dict:
    path = out / "report.json"
    if not path.is_file():
        return {"tool": "bench/gpu_report.py", "dry_run": dry_run, "invocations": [], "steps": {}}
    report = read_report(path)
    if report.get("dry_run") != dry_run:
        raise UserError(f"{out} holds a {'dry-run' if report.get('dry_run') else 'GPU'} report: give another --out "
                        f"(a dry run and a GPU run never share one)")
    return report


def save_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.json", json.dumps(report, indent=2)), ("report.md", write_markdown(report))):
        tmp = out / f".{name}.partial"
        tmp.write_text(text)
        os.replace(tmp, out / name)  # a command killed mid-write leaves the previous report whole


def merge(folders: list[str], out: Path) -> dict:
    """Later folders' rows win; logs of the same name are concatenated."""
    if (out / "report.json").exists():
        raise UserError(f"--merge: {out} already holds a report: merge into a new --out folder")
    reports = []
    for folder in map(Path, folders):
        if not (folder / "report.json").is_file():
            raise UserError(f"--merge: no report.json in {folder}")
        reports.append((folder, read_report(folder / "report.json")))
    if len({r.get("dry_run") for _, r in reports}) > 1:
        raise UserError("--merge: dry-run and GPU reports do not mix")
    merged = {"tool": "bench/gpu_report.py", "dry_run": reports[0][1].get("dry_run"), "invocations": [], "steps": {}}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for folder, report in reports:
        merged["invocations"] += report["invocations"]
        merged["steps"].update(report["steps"])
        for log in sorted((folder / "logs").glob("*.log")):
            with open(out / "logs" / log.name, "a") as f, open(log) as src:
                shutil.copyfileobj(src, f)
    save_report(out, merged)
    return merged


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the report
    try:
        if not args.out:
            raise UserError("no report folder: pass --out DIR (or set $OUT)")
        out = Path(args.out)
        if args.merge:
            merge(args.merge, out)
            print(f"merged {len(args.merge)} reports into {out / 'report.md'}")
            return 0
        return run_steps(args, out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the running step was stopped too (gpu_runner.execute)
        print(f"interrupted: {args.out}/report.md holds the steps finished before Ctrl-C", file=sys.stderr)
        return 130


def run_steps(args, out: Path) -> int:
    steps = selected_steps(args)
    s, budgets = settings_from(args, steps), budgets_from(args.budget)
    report = load_report(out, args.dry_run)
    s.work.mkdir(parents=True, exist_ok=True)
    report["invocations"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": args.argv,
                                  "steps": steps, "work": str(s.work),
                                  "archive": str(s.archive) if s.archive else None})
    t_end = time.monotonic() + (args.time_limit or float("inf"))
    machine = None
    for step in steps:
        for run in plan(step.split(".")[0], s, machine, report["steps"]):
            if step in VARIANTS and run.name != step:
                continue  # --steps throughput.compile: only that variant
            run.budget = budgets.get(run.name, budgets.get(run.step, run.budget))
            if not run.skip:
                print(f"[gpu_report] {run.name}: running, budget {run.budget:.0f} s", flush=True)
            row = execute(run, out, t_end - time.monotonic())
            row["machine"] = machine_label(machine if run.name != "env" else row.get("result"))
            report["steps"][run.name] = row
            report["updated"] = row["finished"]
            save_report(out, report)
            print(f"[gpu_report] {run.name}: {row['status']} ({row['seconds']:.0f} s)", flush=True)
            if run.name == "env":
                machine = row.get("result")
                report["invocations"][-1]["machine"] = machine
                check_machine(machine, args.dry_run)
    save_report(out, report)
    print(f"[gpu_report] report: {out / 'report.md'}")
    return 0 if all(report["steps"][n]["ok"] for n in report["steps"]) else 1


def machine_label(machine: dict | None) -> dict:
    if not machine:
        return {"device": "unknown (env step failed)", "torch": "unknown", "date": time.strftime("%Y-%m-%d")}
    return {"device": machine["device_name"], "torch": machine["torch"], "date": machine["date"]}


def check_machine(machine: dict | None, dry_run: bool) -> None:
    """Stop at once, before any long step, where the machine cannot run the rest."""
    if machine is None:
        return  # the env step failed: its row says why; the steps after it still try
    if machine["missing"]:
        raise UserError(f"{', '.join(machine['missing'])} not installed: on the GPU machine install the wheels "
                        f"first (README, On a GPU machine)")
    if not dry_run and not machine["cuda_available"]:
        raise UserError("torch sees no CUDA GPU here: this report is for a GPU machine (--dry-run runs it on CPU)")


if __name__ == "__main__":
    sys.exit(main())
