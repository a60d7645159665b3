"""Atomic file writes: a temporary file in the same directory, then a rename, so that a crash or a full disk never
leaves a half-written report or JSON file in place of the previous one (the temporary file is removed on error)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json_atomic(path: str | os.PathLike, obj, **dumps_kwargs) -> Path:
    dumps_kwargs.setdefault("indent", 1)
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))
