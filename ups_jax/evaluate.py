"""``python -m ups_jax.evaluate --workdir DIR [--data PATH...] [--split test]``

Restores the last stage's best EMA weights from DIR (config, normalisation and data fingerprint come from the
run itself) and writes ``DIR/eval/<split>.json`` plus plots. ``--data`` evaluates on other files with the
same grid; it is required when the run's recorded data paths do not exist here (e.g. a run pulled from a
Ray sweep with ``python -m ups_jax.fleet.pull``). Exit codes: 0 done; 2 bad input (one line on stderr; --debug for
the traceback); 1 a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ups_jax.cli import ArgumentParser
from ups_jax.errors import run_cli
from ups_jax.training.recorded_data import check_recorded_data


def main(argv) -> int:
    parser = ArgumentParser(prog="python -m ups_jax.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a training run directory")
    parser.add_argument("--data", nargs="+", help="PDEBench files/directories (default: the run's own data)")
    parser.add_argument("--split", default=None, choices=["train", "val", "test"])
    args = parser.parse_args(argv)
    if not args.data:
        check_recorded_data(Path(args.workdir))
    from ups_jax.compilation import enable_cache
    from ups_jax.training.pipeline import evaluate_workdir

    enable_cache("auto")        # the rollout programs of an earlier evaluation or training run are reused
    evaluate_workdir(args.workdir, data_paths=args.data, split=args.split)
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
