"""Preemption: SIGTERM (what clouds, Kubernetes and Ray send before taking a node) asks the trainer to stop.

The handler only records the request; the stage loop checks it after every step, writes a checkpoint at the
current step, waits for it to be complete, calls ``on_checkpoint`` and raises ``errors.Preempted`` — the command
line then exits with ``errors.PREEMPTED_EXIT_CODE`` (75) and the same command resumes. Code that runs training
outside the main thread (where Python cannot install signal handlers, e.g. a Ray Tune function trainable) can
call :func:`request` itself.
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


@contextlib.contextmanager
def sigterm_checkpoints():
    """While active (main thread only; elsewhere a no-op), SIGTERM requests a checkpoint-and-stop instead of
    killing the process. The previous handler is restored on exit."""
    clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log.warning("SIGTERM received: checkpointing at the current step, then stopping")
        request("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
