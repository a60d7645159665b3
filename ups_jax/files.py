"""Atomic file writes: a temporary file in the same directory, then a rename, so that a crash or a full disk never
leaves a half-written report, JSON file, PNG or npz in place of the previous one (the temporary file is removed on
error). Each write has its own temporary name, so two writers of one file (two evaluations of one run) never
write into each other's temporary file; the last rename wins whole."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary path next to ``path``; when the block ends without an error it is renamed to
    ``path``, else removed. For writers that take a file name (``fig.savefig``) or a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, **dumps_kwargs) -> Path:
    dumps_kwargs.setdefault("indent", 1)
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))
