"""``python -m ups_jax.train --config configs/burgers32.py[:cpu|:test] [--workdir DIR] [--config.a.b=v] [--fresh]
[--stages codec,operator,...]``

Flags only; the work is in ``ups_jax.training.pipeline.train_and_evaluate``. Re-running resumes (finished stages are
skipped). ``--stages`` (alias ``--config.stages=a,b``, since ``cfg.stages`` itself holds the per-stage sections)
runs a subset of ``stage_order`` plus ``baseline``; the evaluation table follows when the core stages are done.
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


def _stage_selection(overrides: list[str]) -> tuple[list[str], tuple[str, ...] | None]:
    """Pulls ``stages=a,b`` (not a key of the stages section) out of the overrides."""
    keep, selection = [], None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "stages":
            selection = tuple(v.strip() for v in value.strip("()[] ").replace("'", "").split(",") if v.strip())
        else:
            keep.append(item)
    return keep, selection


def main(argv) -> int:
    spec, overrides, rest = split_config_args(argv)
    overrides, selection = _stage_selection(overrides)
    parser = argparse.ArgumentParser(prog="python -m ups_jax.train", description=__doc__)
    parser.add_argument("--workdir", help="run directory (default runs/<config>_<variant>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing run in --workdir aside (never deleted)")
    parser.add_argument("--data", nargs="+", help="PDEBench HDF5 files/directories (default: cfg.data.paths)")
    parser.add_argument("--stages", help="comma-separated subset of stage_order (+ 'baseline') to run now; "
                                         "default: every stage")
    args = parser.parse_args(rest)
    if args.stages is not None:
        selection = tuple(v.strip() for v in args.stages.split(",") if v.strip())
    if spec is None:
        raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
    cfg = load_config(spec, overrides)
    from ups_jax.training.pipeline import train_and_evaluate  # heavy imports after argument errors

    train_and_evaluate(cfg, args.workdir or default_workdir(spec), fresh=args.fresh, data_paths=args.data,
                       stages=selection or ())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
