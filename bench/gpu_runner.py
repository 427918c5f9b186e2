"""Run one step of bench/gpu_report.py: a subprocess under its time budget, its output appended to its log;
returns the step's row for the report (status, seconds, results, and the log's last lines if it failed)."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from bench.gpu_steps import REPO, Run, log_name

GRACE_S = 20     # after the budget: Ctrl-C (pytest prints its summary, run.py saves a checkpoint), then kill
MIN_RUN_S = 10   # never start a run with less time than this (or than half its budget) left
TAIL_LINES = 30


def subprocess_env(extra: dict) -> dict:
    env = dict(os.environ)
    # This checkout first; what is already there (the wheels' --target folder on the GPU machine) stays.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg")  # unbuffered: a killed step's log still has its last lines
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def execute(run: Run, out: Path, time_left: float) -> dict:
    """Run one step's command under its budget (or less, if less is left); its row for the report."""
    row = {"step": run.step, "budget_s": run.budget, "log": log_name(run.step), "note": run.note}
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if run.skip:
        return {**row, "status": run.skip, "ok": True, "seconds": 0.0, "finished": now}
    timeout = min(run.budget, time_left - GRACE_S)
    # Started with a sliver of its budget, a run would only time out: leave it for another command.
    if timeout < run.budget and timeout < max(MIN_RUN_S, run.budget / 2):
        return {**row, "status": f"not run: {max(time_left, 0):.0f} s left of --time-limit (run it in another "
                                 f"command: --steps {run.step})", "ok": False, "seconds": 0.0, "finished": now}
    for path in run.stale:
        Path(path).unlink(missing_ok=True)
    log_path = out / row["log"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n===== {run.name}  {now}  budget {timeout:.0f} s\n$ {shlex.join(run.command)}\n")
        log.flush()
        start = log.tell()
        t0 = time.perf_counter()
        # Its own session (process group), so the budget ends the whole tree: run.py under bench_accuracy,
        # the processes of --nproc-per-node, DataLoader workers. Ctrl-C restored to its default: a process
        # started in the background by a shell inherits it ignored, and the budget's Ctrl-C would do nothing.
        proc = subprocess.Popen(run.command, cwd=REPO, env=subprocess_env(run.env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, interrupt(proc)
        except KeyboardInterrupt:  # Ctrl-C reaches only this process (the step has its own session)
            interrupt(proc)
            raise
        # Nothing of this step may still run (and use the GPU) when the next one starts.
        end_group(proc.pid, 0)
        seconds = time.perf_counter() - t0
    row.update(seconds=seconds, exit_code=code, command=shlex.join(run.command),
               finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    result, read_error = None, None
    if run.read is not None:  # after a timeout too: pytest writes its counts when interrupted
        try:
            result = run.read()
        except Exception as e:  # a result file missing or malformed: the step failed, whatever its exit code
            read_error = f"{type(e).__name__}: {e}"
    if timed_out:
        status = f"timed out after {timeout:.0f} s"
    elif code != 0:
        status = f"failed (exit {code})"
    elif read_error:
        status = f"failed: {read_error}"
    else:
        status = "ok"
    row.update(status=status, ok=status == "ok", result=result)
    if status != "ok":
        row["tail"] = log_tail(log_path, start)
    return row


def interrupt(proc: subprocess.Popen) -> int:
    """Ctrl-C to the step's process group (pytest prints its summary, run.py saves a checkpoint); after
    GRACE_S, kill what is left. Returns the step's exit code."""
    signal_group(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
    end_group(proc.pid, GRACE_S)  # e.g. run.py, still saving its checkpoint after its parent left
    return code


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the step's process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def end_group(pgid: int, wait: float) -> None:
    """Give what is left of the step's process group `wait` seconds to finish, then kill it."""
    deadline = time.monotonic() + wait
    while signal_group(pgid, 0):
        if time.monotonic() > deadline:
            signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)


def log_tail(path: Path, start: int, lines: int = TAIL_LINES) -> list[str]:
    """The last lines this run wrote to its log (which earlier runs of the step share)."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace").splitlines()[-lines:]
