"""``python -m ups_jax.driver validate-data PATH... [--json] [--max-abs 1e3]``: check PDEBench-layout HDF5 files.

PATH: files or directories (every ``*.hdf5``/``*.h5`` inside). Prints a table (one row per file per check:
PASS/WARN/FAIL + detail) or, with ``--json``, ``{"ok": bool, "results": [rows]}``.
Exit status: 0 if nothing FAILed, 1 if something did, 2 for a usage error (e.g. a missing path).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ups_jax.cli import ArgumentParser
from ups_jax.errors import run_cli


def _parser() -> argparse.ArgumentParser:
    from ups_jax.data.validation import DEFAULT_MAX_ABS

    p = ArgumentParser(prog="python -m ups_jax.driver validate-data",
                description="Check PDEBench-layout HDF5 files (keys, shapes, coordinates, NaN/Inf over all "
                            "samples, bounds).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="HDF5 files or directories of shards")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--max-abs", type=float, default=DEFAULT_MAX_ABS,
                   help=f"FAIL if any |u| exceeds this (default {DEFAULT_MAX_ABS:g})")
    return p


def main(argv: Sequence[str]) -> int:
    from ups_jax.data.validation import format_table, has_failures, validate_files

    args = _parser().parse_args(list(argv))
    rows = validate_files(args.paths, max_abs=args.max_abs)
    failed = has_failures(rows)
    if args.json:
        print(json.dumps({"ok": not failed, "results": rows}, indent=2))
    else:
        print(format_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
