"""Issue 18, defect 3: a command's exception hooks keep the storage failures of asynchronous writes (reported once
by the caller) to --debug, and show every other background-thread exception as one error line."""

from __future__ import annotations

import errno
import threading

from ups_jax.errors import cli_logging


def _in_thread(exc: BaseException) -> None:
    def boom():
        raise exc

    t = threading.Thread(target=boom, name="writer-7")
    t.start()
    t.join()


def test_a_background_thread_exception_is_shown_in_one_line(capsys):
    with cli_logging():
        _in_thread(KeyError("a bug in a worker thread"))
    err = capsys.readouterr().err
    assert err == ("error: background thread writer-7 failed: KeyError: 'a bug in a worker thread' "
                   "(--debug shows the traceback)\n")


def test_a_failed_asynchronous_write_is_left_to_the_caller(capsys):
    with cli_logging():
        _in_thread(OSError(errno.ENOSPC, "No space left on device", "/ckpt/params/d/1"))
    assert capsys.readouterr().err == ""          # the caller reports it in one line (errors.run_cli)
    before = threading.excepthook
    with cli_logging(debug=True):                 # --debug: Python's own hook (the full traceback) stays
        assert threading.excepthook is before
