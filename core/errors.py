"""The one exception type for mistakes a user can fix (bad flag, missing data, bad checkpoint).

`run.py` prints it as one line and exits non-zero; everything else is a bug and keeps its
traceback. It lives in a module with no imports so `data` and `handlers` can raise it
without pulling in the engines.
"""


class UserError(Exception):
    """A problem in the user's input; the message names the problem and the fix."""
