"""``python -m ups_jax.evaluate --workdir DIR [--data PATH...] [--split test]``

Restores the last stage's best EMA weights from DIR (config, normalisation and data fingerprint come from the
run itself) and writes ``DIR/eval/<split>.json`` plus plots. ``--data`` evaluates on other files with the
same grid; it is required when the run's recorded data paths do not exist here (e.g. a run pulled from a
Ray sweep with ``python -m ups_jax.fleet.pull``). Exit codes: 0 done; 2 bad input (one line on stderr; --debug for
the traceback); 1 a bug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ups_jax.cli import ArgumentParser
from ups_jax.errors import DataError, run_cli


def check_recorded_data(workdir: Path) -> None:
    """Without --data the run's own data paths are used; they are paths on the machine that trained it (a run
    pulled from a sweep, a copied directory). If they are not here, say so in one line and ask for --data."""
    try:
        paths = json.loads((workdir / "run_meta.json").read_text()).get("data_paths") or []
    except (OSError, ValueError):
        return                                    # not a run directory: load_run gives that error
    missing = [p for p in paths if not Path(p).exists()]
    if not missing:
        return
    origin = ""
    pulled = workdir / "pulled.json"
    if pulled.is_file():
        record = json.loads(pulled.read_text())
        origin = f" (trained on host {record.get('trained_on_host')}, pulled from {record.get('experiment')})"
    raise DataError(f"{workdir}: the run's data {missing[0]} is not on this machine{origin}; pass --data PATH... "
                    f"(the same files, or any with the training grid)")


def main(argv) -> int:
    parser = ArgumentParser(prog="python -m ups_jax.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a training run directory")
    parser.add_argument("--data", nargs="+", help="PDEBench files/directories (default: the run's own data)")
    parser.add_argument("--split", default=None, choices=["train", "val", "test"])
    args = parser.parse_args(argv)
    if not args.data:
        check_recorded_data(Path(args.workdir))
    from ups_jax.training.restore import evaluate_workdir

    evaluate_workdir(args.workdir, data_paths=args.data, split=args.split)
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
