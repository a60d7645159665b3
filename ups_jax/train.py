"""``python -m ups_jax.train --config configs/burgers32.py[:cpu|:test] [--workdir DIR] [--config.a.b=v] [--fresh]``

Flags only; the work is in ``ups_jax.training.pipeline.train_and_evaluate``. Re-running resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ups_jax.config import load_config, split_config_args
from ups_jax.errors import ConfigError, run_cli


def default_workdir(spec: str) -> str:
    path, _, arg = spec.partition(":")
    return str(Path("runs") / (Path(path).stem + (f"_{arg}" if arg else "")))


def main(argv) -> int:
    spec, overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(prog="python -m ups_jax.train", description=__doc__)
    parser.add_argument("--workdir", help="run directory (default runs/<config>_<variant>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing run in --workdir aside (never deleted)")
    parser.add_argument("--data", nargs="+", help="PDEBench HDF5 files/directories (default: cfg.data.paths)")
    args = parser.parse_args(rest)
    if spec is None:
        raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
    cfg = load_config(spec, overrides)
    from ups_jax.training.pipeline import train_and_evaluate  # heavy imports after argument errors

    train_and_evaluate(cfg, args.workdir or default_workdir(spec), fresh=args.fresh, data_paths=args.data)
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
