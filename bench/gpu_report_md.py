"""report.json -> report.md: a row per step (what failed, with its log's last lines), then the rows that
paste into BENCHMARKS.md (GPU throughput, accuracy per seed and per epoch, several GPUs, the LRMAX sweep)."""
from __future__ import annotations

from bench.bench_accuracy import markdown as accuracy_markdown
from bench.gpu_steps import SWEEP_VAL_SPLIT, TARGET, order_key

THROUGHPUT_HEAD = ("| date | device | torch | settings | (a) img/s | (b) img/s | (c) img/s | a/b | a/c "
                   "| peak GPU memory | recipe projected | recipe measured |")
SWEEP_HEAD = ("| date | device | torch | settings | seed | LRMAX | LRMIN | val @5 | val @19 | val final "
              "| best val | train |")
SCALING_HEAD = ("| date | device | torch | GPUs | settings | train, 1 GPU | train, N GPUs | speedup | efficiency "
                "| final test accuracy, 1 GPU / N GPUs |")


def rule(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def write_markdown(report: dict) -> str:
    steps = report["steps"]
    lines = ["# GPU report", ""]
    if report.get("dry_run"):
        lines += ["> **DRY RUN** on CPU: a tiny model on a few hundred images, one epoch per run, a quick selection "
                  "of tests. It shows that every step of `bench/gpu_report.py` runs; its figures measure nothing. "
                  "Never paste them into BENCHMARKS.md.", ""]
    for inv in report["invocations"]:
        command = " ".join(["bench/gpu_report.py", *inv["argv"]])
        lines.append(f"- {inv['started']}: `{command}` on {machine_text(inv.get('machine'))}")
    ok = sum(row["ok"] for row in steps.values())
    lines += ["", f"{ok} of {len(steps)} runs ok.", "", "| step | status | time | budget | result |",
              "|---|---|---|---|---|"]
    for name in sorted(steps, key=order_key):
        row = steps[name]
        lines.append(f"| {name} | {row['status']} | {row['seconds']:.0f} s | {row['budget_s']:.0f} s "
                     f"| {cell(name, row)} |")
    failed = [(n, steps[n]) for n in sorted(steps, key=order_key) if not steps[n]["ok"] and steps[n].get("tail")]
    if failed:
        lines += ["", "## What failed", ""]
        for name, row in failed:
            lines += [f"### {name}: {row['status']}", "", f"`{row.get('command', '')}`; full log: `{row['log']}`. "
                      "Its last lines:", "", "```", *row["tail"], "```", ""]
    dry = bool(report.get("dry_run"))
    lines += ["", "## Rows for BENCHMARKS.md", ""] + throughput_rows(steps, dry) + accuracy_rows(steps) + \
        scaling_rows(steps, dry) + sweep_rows(steps, dry)
    return "\n".join(lines).rstrip() + "\n"


def machine_text(m: dict | None) -> str:
    if not m:
        return "an unknown machine (the env step failed)"
    gpus = "; ".join(f"{g['name']} ({g['memory_free_mib'] / 1024:.1f} GiB free of "
                     f"{g['memory_total_mib'] / 1024:.1f} GiB)" for g in m["gpus"]) or "no CUDA GPU"
    return (f"{m['host']}: {gpus}, driver {m['driver']}; torch {m['torch']} (CUDA {m['cuda']}, cuDNN {m['cudnn']}); "
            f"Python {m['python']}, {m['cpus']} CPUs")


def cell(name: str, row: dict) -> str:
    """One line of what the run found; never lets a malformed result stop the report."""
    if row.get("result") is None:
        return row.get("note", "")
    try:
        text = SUMMARIES[name.split(".")[0]](row["result"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        text = f"result unreadable ({type(e).__name__}: {e})"
    return "; ".join(filter(None, [text, row.get("note")]))


def env_cell(m: dict) -> str:
    return machine_text(m).split(": ", 1)[1]


def data_cell(d: dict) -> str:
    kind = "random images (dry run)" if d["fake"] else "CIFAR-10, JPEG q75 copy"
    return (f"{kind}: {d['train_images']:,} train / {d['test_images']:,} test images, {d['classes']} classes; "
            f"unpacked in {d['unpack_s']:.0f} s, decoded in {d['decode_s']:.0f} s")


def tests_cell(t: dict) -> str:
    text = (f"{t['passed']} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped, "
            f"on {t['device']}, in {t['seconds']:.0f} s")
    return text + (f": {', '.join(t['failed'][:5])}" + (" ..." if len(t["failed"]) > 5 else "") if t["failed"] else "")


def throughput_cell(t: dict) -> str:
    rate = t["images_per_s"]
    ac = f", a/c {t['ratio_a_c']:.2f}" if t.get("ratio_a_c") else ""
    return (f"(a) {rate['a']:,.0f} img/s, a/b {t['ratio_a_b']:.3f}{ac}, peak {memory(t)}, recipe projected "
            f"{t['recipe_projected_s']:.1f} s, measured {t['a_measured_wall_s']:.1f} s")


def accuracy_cell(run: dict) -> str:
    return (f"seed {run['seed']}: final {pct(run['final'])}, best {pct(run['best'])}, >= {TARGET:.0%} held from "
            f"epoch {run['held_from'] or 'never'}, train {run['train_s']:.0f} s")


def multigpu_cell(r: dict) -> str:
    run, base = r["run"], r.get("baseline")
    text = f"{r['gpus']} processes: train {run['train_s']:.0f} s, final {pct(run['final'])}"
    if base is None:
        return text + "; no one-process run of the same seed here (accuracy step): no speedup"
    return text + f"; 1 process: {base['train_s']:.0f} s: speedup {r['speedup']:.2f}, efficiency {r['efficiency']:.0%}"


def sweep_cell(run: dict) -> str:
    return (f"LRMAX {run['lr_max']:.3g}, LRMIN {run['lr_min']:.3g}, seed {run['seed']}: validation final "
            f"{pct(run['final_val'])}, best {pct(run['best_val'])}, train {run['train_s']:.0f} s")


SUMMARIES = {"env": env_cell, "data": data_cell, "tests": tests_cell, "throughput": throughput_cell,
             "accuracy": accuracy_cell, "plain": accuracy_cell, "multigpu": multigpu_cell,
             "lrsweep": sweep_cell}


def memory(t: dict) -> str:
    peak = t.get("peak_gpu_memory_mib") or {}
    if peak.get("a_and_b") is None:
        return "— (CPU)"
    return f"{peak['a_and_b']:,.0f} MiB (a+b)" + (f", {peak['c']:,.0f} MiB (c)" if peak.get("c") is not None else "")


def device_cell(row: dict, dry_run: bool) -> str:
    return row["machine"]["device"] + (" (DRY RUN, not a measurement)" if dry_run else "")


def throughput_settings(t: dict) -> str:
    full = t["train_size"] == 50_000 and t["width"] == 64 and t["epochs"] == 24
    size = "full size" if full else f"width {t['width']}, {t['train_size']:,} train images, {t['epochs']} epochs"
    return ", ".join(filter(None, [size, "bf16" if t["amp"] else "fp32", "channels_last" * t["channels_last"],
                                   "fused Adam" * t["device"].startswith("cuda"), "`--compile`" * t["compile"]]))


def throughput_rows(steps: dict, dry: bool) -> list[str]:
    rows = []
    eager = (steps.get("throughput.eager") or {}).get("result")
    for name in ("throughput.eager", "throughput.compile"):
        row = steps.get(name)
        if not row or row.get("result") is None:
            continue
        t, rate = row["result"], row["result"]["images_per_s"]
        c, ac, notes = rate.get("c"), t.get("ratio_a_c"), [row.get("note")]
        if c is None and eager and "c" in eager["images_per_s"] and eager["device_name"] == t["device_name"]:
            c = eager["images_per_s"]["c"]  # (c) has no compiled variant: the eager run's, on the same GPU
            ac = rate["a"] / c
            notes.append("(c) from the eager run")
        settings = throughput_settings(t) + "".join(f"; {n}" for n in notes if n)
        measured = f"{t['a_measured_wall_s']:.1f} s" + ("" if t["a_measured_is_full_recipe"]
                                                        else " (not the full recipe)")
        projected = f"{t['recipe_projected_s']:.1f} s (+{t['a_first_epoch_extra_s']:.1f} s first epoch)"
        rows.append(f"| {row['machine']['date']} | {device_cell(row, dry)} | {t['torch']} | {settings} "
                    f"| {rate['a']:,.0f} | {rate['b']:,.0f} | {'—' if c is None else f'{c:,.0f}'} "
                    f"| {t['ratio_a_b']:.3f} (paired {t['ratio_a_b_paired_median']:.3f}) "
                    f"| {'—' if ac is None else f'{ac:.2f}'} | {memory(t)} | {projected} | {measured} |")
    if not rows:
        return []
    return ["### Throughput: under \"## GPU\"", "", THROUGHPUT_HEAD, rule(THROUGHPUT_HEAD), *rows, ""]


def accuracy_rows(steps: dict) -> list[str]:
    runs = [steps[n]["result"] for n in sorted(steps, key=order_key)
            if steps[n]["step"] in ("accuracy", "plain") and steps[n].get("result")]
    multi = steps.get("multigpu", {}).get("result")
    runs += [multi["run"]] if multi else []
    if not runs:
        return []
    return ["### Accuracy on real CIFAR-10: under \"## GPU accuracy\"", "", accuracy_markdown(runs, TARGET), ""]


def scaling_rows(steps: dict, dry: bool) -> list[str]:
    row = steps.get("multigpu")
    if not row:
        return []
    if row.get("result") is None or row["result"].get("baseline") is None:
        return ["### Several GPUs: under \"## Several GPUs\"", "", f"{row['status']}" + (
            ": no one-process run of the same seed to compare with" if row.get("result") else ""), ""]
    r = row["result"]
    run, base = r["run"], r["baseline"]
    settings = f"width {run['width']}, {run['epochs']} epochs, seed {run['seed']}, `--nproc-per-node {r['gpus']}`"
    line = (f"| {row['machine']['date']} | {device_cell(row, dry)} | {run['torch']} | {r['gpus']} "
            f"| {settings} | {base['train_s']:.1f} s | {run['train_s']:.1f} s | {r['speedup']:.2f} "
            f"| {r['efficiency']:.0%} | {pct(base['final'])} / {pct(run['final'])} |")
    return ["### Several GPUs: under \"## Several GPUs\"", "", SCALING_HEAD, rule(SCALING_HEAD), line, ""]


def sweep_rows(steps: dict, dry: bool) -> list[str]:
    """The LRMAX sweep, scored on validation only: its test accuracy stays in report.json, never for choosing."""
    names = [n for n in sorted(steps, key=order_key) if steps[n]["step"] == "lrsweep" and steps[n].get("result")]
    if not names:
        return []
    lines = []
    for name in names:
        row, run = steps[name], steps[name]["result"]
        val = run.get("val_accuracy") or []
        at = {e: (val[e - 1] if len(val) >= e else None) for e in (5, 19)}
        settings = f"width {run['width']}, {run['epochs']} epochs, {SWEEP_VAL_SPLIT:.0%} validation split"
        lines.append(f"| {row['machine']['date']} | {device_cell(row, dry)} | {run['torch']} | {settings} "
                     f"| {run['seed']} | {run['lr_max']:.3g} | {run['lr_min']:.3g} | {pct(at[5])} | {pct(at[19])} "
                     f"| {pct(run['final_val'])} | {pct(run['best_val'])} | {run['train_s']:.0f} s |")
    return ["### LRMAX at full width, on validation: under \"## The range test's LRMAX reading (issue 18)\"", "",
            SWEEP_HEAD, rule(SWEEP_HEAD), *lines, ""]
