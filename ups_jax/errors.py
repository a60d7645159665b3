"""User-facing errors and the one-line-error convention shared by every command-line entry point.

A ``UserError`` is a problem with the user's input (a file, a key, a value). Entry points wrap their
``main`` in :func:`run_cli`, which prints ``error: <message>`` on one line and exits non-zero; the traceback
is shown only with ``--debug``. Anything that is *not* a ``UserError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input: the message names the file/key, what is wrong and the fix. ``exit_code`` defaults to 2."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """A config file, key or override value is wrong."""


class DataError(UserError):
    """A data file or directory is missing, unreadable or malformed."""


class CheckpointError(UserError):
    """A workdir's checkpoints do not match the config or dataset, or are missing."""


def run_cli(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)``; turns a UserError into one line on stderr and its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        return int(main(argv) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
