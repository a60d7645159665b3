"""Preemption: SIGTERM (what clouds, Kubernetes and Ray send before taking a node) asks the trainer to stop.

The handler only records the request; the stage loop checks it after every step, writes a checkpoint at the
current step, waits for it to be complete, calls ``on_checkpoint`` and raises ``errors.Preempted`` — the command
line then exits with ``errors.PREEMPTED_EXIT_CODE`` (75) and the same command resumes.

Training outside the main thread (a Ray Tune function trainable runs in a thread of the worker process, where
Python cannot install signal handlers): whoever owns the main thread installs the process-wide handler with
:func:`handle_sigterm` (Ray runs an actor's tasks, e.g. a trainable's ``setup``, on the main thread; see
``ups_jax.fleet.trainable``). Any thread may also call :func:`request`. The request is a process-wide flag that
the loop polls every update (``requested()``); a thread other than the main one never clears it on entry, so a
SIGTERM that arrives while the trial is still restoring its checkpoint is not lost.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)
_requested = threading.Event()
_reason: list[str] = []


def request(reason: str = "stop requested") -> None:
    """Asks the running stage loop to checkpoint and stop at the next step boundary (thread-safe)."""
    if not _requested.is_set():
        _reason[:] = [reason]
    _requested.set()


def requested() -> str | None:
    """The reason when a stop was requested (e.g. 'SIGTERM'), else None."""
    return _reason[0] if _requested.is_set() and _reason else None


def clear() -> None:
    _requested.clear()
    _reason.clear()


def _handler(signum, frame):
    log.warning("SIGTERM received: checkpointing at the current step, then stopping")
    request("SIGTERM")


def handle_sigterm():
    """Main thread only: from now on SIGTERM requests a checkpoint-and-stop (for training in any thread of this
    process) instead of ending the process. Returns the previous handler (``signal.signal(SIGTERM, previous)``
    restores it). Raises ValueError off the main thread (Python's rule for signal handlers)."""
    return signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def sigterm_checkpoints():
    """While active, SIGTERM requests a checkpoint-and-stop instead of killing the process; the previous handler
    is restored on exit. Off the main thread it installs nothing and keeps a pending request (the process-wide
    handler, if any, comes from :func:`handle_sigterm`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    previous = handle_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
