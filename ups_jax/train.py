"""``python -m ups_jax.train --config configs/burgers32.py[:cpu|:test] [--workdir DIR] [--config.a.b=v] [--fresh]``

Trains every stage of the config, then evaluates on the test split. Re-running the same command resumes from
the newest complete checkpoint (a damaged one is set aside with a warning). Exit codes: 0 done; 2 bad input
(one line on stderr; --debug for the traceback); 1 a bug or a run stopped by the NaN guard; 75 preempted
(SIGTERM: a checkpoint at the current step was written; run the same command to resume); 130 Ctrl-C.

The work is in ``ups_jax.training.pipeline.train_and_evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ups_jax.cli import ArgumentParser
from ups_jax.config import load_config
from ups_jax.errors import run_cli


def default_workdir(spec: str) -> str:
    path, _, arg = spec.partition(":")
    return str(Path("runs") / (Path(path).stem + (f"_{arg}" if arg else "")))


def main(argv) -> int:
    parser = ArgumentParser(prog="python -m ups_jax.train", description=__doc__, config=True)
    parser.add_argument("--workdir", help="run directory (default runs/<config>_<variant>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing run in --workdir aside (never deleted)")
    parser.add_argument("--data", nargs="+", help="PDEBench HDF5 files/directories (default: cfg.data.paths)")
    spec, overrides, args = parser.parse_with_config(argv)
    cfg = load_config(spec, overrides)
    from ups_jax.training.pipeline import train_and_evaluate  # heavy imports after argument errors

    train_and_evaluate(cfg, args.workdir or default_workdir(spec), fresh=args.fresh, data_paths=args.data)
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main, exit_at_once_after_storage_error=True))


if __name__ == "__main__":
    cli()
