"""Where a generator writes: one helper shared by the 1-D and 2-D generators (data/generate.py,
data/ns2d_generate.py), in its own module so that neither imports the other."""

from __future__ import annotations

import os
from pathlib import Path

from ups_jax.errors import DataError


def output_path_named(out_dir, name: str, overwrite: bool) -> Path:
    """``out_dir/name``, refused if it exists and not ``overwrite``; creates ``out_dir``."""
    out_dir = Path(out_dir)
    out = out_dir / name
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out_dir}: cannot create output directory ({e.strerror or e})") from e
    return out


def first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Atomic rename into place; without ``overwrite`` never replaces a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)                       # atomic and fails if ``out`` exists
    except FileExistsError as e:
        raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out") from e
    except OSError:                             # filesystem without hard links
        if out.exists():
            raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
        os.replace(tmp, out)
