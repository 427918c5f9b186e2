"""What every command line of the project shares: one-line errors with exit code 2, and --help defaults."""
from __future__ import annotations

import argparse
import os
import sys

# The exit status of a user error (a bad flag, a UserError), also of a spawned process that stopped on one.
USER_ERROR_EXIT = 2
# The exit status of a run stopped by Ctrl-C: the shell's code for a process ended by SIGINT (128 + 2).
SIGINT_EXIT = 130


def launch_rank() -> int:
    """This process's global rank, also before idist is initialised (torchrun sets RANK; a launcher is 0).

    Here rather than in core.distributed, so that a bad flag is reported without importing torch: a process
    group exists only once ignite.distributed has been imported.
    """
    idist = sys.modules.get("ignite.distributed")
    if idist is not None and idist.get_world_size() > 1:
        return idist.get_rank()
    return int(os.environ.get("RANK", "0"))


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
        self.exit(USER_ERROR_EXIT,
                  f"error: {message} (see {self.help_hint()})\n" if launch_rank() == 0 else None)
