"""``python -m ups_jax.evaluate --workdir DIR [--data PATH...] [--split test]``

Restores the last stage's best EMA weights from DIR (config, normalisation and data fingerprint come from the
run itself) and writes ``DIR/eval/<split>.json`` plus plots. ``--data`` evaluates on other files with the
same grid.
"""

from __future__ import annotations

import argparse
import sys

from ups_jax.errors import run_cli


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m ups_jax.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data", nargs="+", help="PDEBench files/directories (default: the run's own data)")
    parser.add_argument("--split", default=None, choices=["train", "val", "test"])
    args = parser.parse_args(argv)
    from ups_jax.training.restore import evaluate_workdir

    evaluate_workdir(args.workdir, data_paths=args.data, split=args.split)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
