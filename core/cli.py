"""What every command line of the project shares: one-line errors with exit code 2, and --help defaults."""
from __future__ import annotations

import argparse
import os
import sys
import time

# The exit status of a user error (a bad flag, a UserError), also of a spawned process that stopped on one.
USER_ERROR_EXIT = 2
# The exit status of a run stopped by Ctrl-C: the shell's code for a process ended by SIGINT (128 + 2).
SIGINT_EXIT = 130
# [dist] How long a rank other than 0 waits, on a user error every rank hits, for its launcher to stop it
# once rank 0 has reported (see rank0_reports). Seconds; the launcher cuts it short unless rank 0 did not fail.
OTHER_RANK_WAIT_S = 60.0


def launch_rank() -> int:
    """This process's global rank, also before idist is initialised (torchrun sets RANK; a launcher is 0).

    Here rather than in core.distributed, so that a bad flag is reported without importing torch: a process
    group exists only once ignite.distributed has been imported.
    """
    idist = sys.modules.get("ignite.distributed")
    if idist is not None and idist.get_world_size() > 1:
        return idist.get_rank()
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """How many processes this run has, also before idist is initialised (torchrun sets WORLD_SIZE)."""
    idist = sys.modules.get("ignite.distributed")
    if idist is not None and idist.get_world_size() > 1:
        return idist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def on_rank0_node() -> bool:
    """[dist] Whether this process shares its launcher (torchrun's agent, or idist.Parallel's spawn) with rank 0."""
    idist = sys.modules.get("ignite.distributed")
    if idist is not None and idist.get_world_size() > 1:
        return idist.get_node_rank() == 0
    return int(os.environ.get("GROUP_RANK", "0")) == 0  # torchrun's node rank


def rank0_reports(line: str) -> str | None:
    """[dist] The line this process prints for a user error that every process hits (None: none).

    Rank 0 prints it. The others do not exit at once if rank 0 runs under the same launcher: torchrun
    and torch.multiprocessing's spawn stop every process as soon as one fails, so a rank that left first could
    get rank 0 stopped before it had written its line (a bad flag under torchrun then ended with no `error:`
    line, 4 launches in 20 on a loaded 2-core machine). Such a rank waits, and the launcher stops it once rank 0
    has reported and exited. Still running after OTHER_RANK_WAIT_S, rank 0 has not failed: the error is this
    rank's alone, and it reports it, naming its rank. On another node, whose launcher does not watch rank 0,
    it leaves at once and says nothing. Not for Ctrl-C: every process gets that one, and no launcher is then
    stopping processes that fail.
    """
    rank = launch_rank()
    if rank == 0 or launch_world_size() <= 1:
        return line
    if not on_rank0_node():
        return None
    try:
        time.sleep(OTHER_RANK_WAIT_S)
    except KeyboardInterrupt:  # Ctrl-C while waiting: rank 0 has had its say
        return None
    return f"{line.rstrip()} [rank {rank} alone]\n" if line.endswith("\n") else f"{line} [rank {rank} alone]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except for switches ("--no-progress ... (default: True)" reads as if it were on),
    for None, which means "chosen at run time" and is spelled out in those flags' own help, and for []."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line `error: ... (see python run.py --help)` (no usage block), exit 2."""

    def help_hint(self) -> str:
        return "python run.py --help"

    def error(self, message: str):
        # [dist] under torchrun every process parses the same flags: rank 0 alone says so.
        self.exit(USER_ERROR_EXIT, rank0_reports(f"error: {message} (see {self.help_hint()})\n"))
