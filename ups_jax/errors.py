"""User-facing errors and the one-line-error convention shared by every command-line entry point.

A ``UserError`` is a problem with the user's input (a file, a key, a value). Entry points wrap their
``main`` in :func:`run_cli`, which prints ``error: <message>`` on one line and exits non-zero; the traceback
is shown only with ``--debug``. Anything that is *not* a ``UserError`` is a bug and keeps its traceback.

Exit codes of every ``python -m ups_jax...`` command:

* 0: done; 2: bad input (``UserError``: a key, a value, a file, a workdir, an unwritable or full disk);
* 1: an internal error (a bug: traceback), a run that failed (``TrainingDiverged``), or — for the checking
  commands ``driver validate``/``validate-data`` — a check that failed;
* 75 (``PREEMPTED_EXIT_CODE``, EX_TEMPFAIL): SIGTERM received, a checkpoint at the current step was written;
  run the same command again to resume;
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import threading
from typing import Callable, Sequence

PREEMPTED_EXIT_CODE = 75      # sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"

# OSErrors that are the machine's state, not a bug: one line (exit 2), never a traceback.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}


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


class TrainingDiverged(UserError):
    """Too many consecutive non-finite steps: the run stops (exit 1) with the stage, step and what to change."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


class Preempted(Exception):
    """SIGTERM (or ``training.preemption.request``) stopped training after a checkpoint at the current step."""

    exit_code = PREEMPTED_EXIT_CODE


def environment_error(e: BaseException) -> OSError | None:
    """The disk-full / read-only / permission OSError in ``e``'s cause chain (orbax and tensorstore wrap them)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def storage_error_message(e: BaseException) -> str | None:
    """'<file>: <reason>; <fix>' when ``e`` is a disk-full / read-only / permission failure — a Python OSError,
    or tensorstore's (orbax's array writer) ``... [os_error_code='28']`` — else None."""
    env = environment_error(e)
    if env is not None:
        return describe_os_error(env)
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = re.search(r"os_error_code='?(\d+)", str(e))
        if m and int(m.group(1)) in _ENVIRONMENT_ERRNOS:
            code = int(m.group(1))
            f = re.search(r'(?:file|writing:?) "([^"]+)"', str(e))
            return describe_os_error(OSError(code, os.strerror(code), f.group(1) if f else None))
        e = e.__cause__ or e.__context__
    return None


def describe_os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    fix = {errno.EACCES: "check the permissions or choose another path",
           errno.EROFS: "the file system is read-only; choose another path"}.get(
        e.errno, "free disk space or choose another path (e.g. --workdir on a larger disk)")
    return f"{where}{e.strerror or e} [errno {e.errno}]; {fix}"


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (like logging's last-resort handler), so that redirecting it later
    (pytest's capture, ``contextlib.redirect_stderr``) is honoured."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _CliFormatter(logging.Formatter):
    """Status lines as they are; warnings and errors prefixed like the one-line errors."""

    def format(self, record):
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


@contextlib.contextmanager
def cli_logging(debug: bool = False):
    """What a command line shows while it runs: the ``ups_jax`` loggers' status lines and warnings on stderr
    (stdout stays for results such as ``--json``), and only errors from absl (orbax reports every save through
    it). Used by :func:`run_cli`; everything is restored on exit, so importing or calling ups_jax from Python
    changes no logging configuration."""
    pkg = logging.getLogger("ups_jax")
    quiet = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    saved = (pkg.level, pkg.propagate, [q.level for q in quiet], threading.excepthook, sys.excepthook,
             sys.unraisablehook)
    handler = _StderrHandler()
    handler.setFormatter(_CliFormatter("%(message)s"))
    pkg.addHandler(handler)
    pkg.setLevel(logging.DEBUG if debug else logging.INFO)
    pkg.propagate = False        # a library may have configured the root logger: no second copy of each line
    if not debug:
        for q in quiet:
            q.setLevel(logging.CRITICAL)
        threading.excepthook = _quiet_thread_exception
        sys.excepthook = _quiet_callback_exception     # tensorstore's callbacks after a failed write
        sys.unraisablehook = _quiet_unraisable
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(saved[0])
        pkg.propagate = saved[1]
        for q, level in zip(quiet, saved[2]):
            q.setLevel(level)
        threading.excepthook = saved[3]
        sys.excepthook = saved[4]
        sys.unraisablehook = saved[5]


# orbax reports every save through absl at INFO/WARNING, and a failed asynchronous save (a full disk) as error
# tracebacks from its background threads and asyncio; the failure itself reaches the caller as an exception.
_QUIET_LOGGERS = ("absl", "asyncio")


def _report_background(what: str, exc: BaseException | None) -> None:
    """A failure outside the main flow: the disk-full / read-only / permission failure of an asynchronous write
    (orbax's writer threads, tensorstore's callbacks) reaches the caller as an exception and is reported there
    in one line, so here it is shown only with --debug; anything else is shown as one error line (the traceback
    with --debug), never hidden."""
    log = logging.getLogger("ups_jax")
    text = f"{what} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if exc is not None and storage_error_message(exc) is not None:
        log.debug(text)
    else:
        log.error(text + " (--debug shows the traceback)")


def _quiet_callback_exception(exc_type, exc_value, tb) -> None:
    _report_background("a callback", exc_value)


def _quiet_unraisable(args) -> None:
    _report_background(f"ignored exception in {args.object!r}" if args.object is not None else "a finaliser",
                       args.exc_value)


def _quiet_thread_exception(args) -> None:
    _report_background(f"background thread {args.thread.name if args.thread else '?'}", args.exc_value)


def run_cli(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None, *,
            exit_at_once_after_storage_error: bool = False) -> int:
    """Runs ``main(argv)``; turns a UserError (or a full/read-only disk) into one line on stderr and its exit
    code, and a preemption into one line and ``PREEMPTED_EXIT_CODE``.

    ``exit_at_once_after_storage_error`` (``python -m ups_jax.train``): after a failed asynchronous checkpoint
    write, orbax's writer threads are left behind and report their failure again while the interpreter shuts
    down (pages of tracebacks, or a crash); the process then ends right after the one-line error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    message, code = None, 0
    try:
        with cli_logging(debug):
            return int(main(argv) or 0)
    except UserError as e:
        if debug:
            raise
        message, code = f"error: {e}", e.exit_code
        storage = storage_error_message(e) is not None   # e.g. a checkpoint write failed on a full disk
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — only the machine's state is turned into one line; bugs re-raise
        text = storage_error_message(e)
        if text is None or debug:
            raise
        message, code, storage = f"error: {text}", 2, True
    print(message, file=sys.stderr)
    if storage and exit_at_once_after_storage_error:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
