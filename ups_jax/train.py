"""``python -m ups_jax.train --config configs/burgers32.py[:cpu|:test] [--workdir DIR] [--config.a.b=v] [--fresh]
[--stages codec,operator,...]``

Trains every stage of the config (finished stages are skipped), the FNO baseline of ``cfg.baseline``, then
evaluates on the test split and writes the comparison table (``WORKDIR/eval/table.{json,md}``). ``--stages``
(alias ``--config.stages=a,b``, since ``cfg.stages`` itself holds the per-stage sections) runs a subset of
``stage_order`` plus ``baseline``; the evaluation follows when the core stages are done. Re-running the same
command resumes from the newest complete checkpoint (a damaged one is set aside with a warning). Exit codes: 0
done; 2 bad input (one line on stderr; --debug for the traceback); 1 a bug or a run stopped by the NaN guard; 75
preempted (SIGTERM: a checkpoint at the current step was written; run the same command to resume); 130 Ctrl-C.

The work is in ``ups_jax.training.pipeline.train_and_evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ups_jax.cli import ArgumentParser
from ups_jax.config import load_config, run_name
from ups_jax.errors import run_cli


def default_workdir(spec: str) -> str:
    return str(Path("runs") / run_name(spec))


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
    parser = ArgumentParser(prog="python -m ups_jax.train", description=__doc__, config=True)
    parser.add_argument("--workdir", help="run directory (default runs/<config>_<variant>)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing run in --workdir aside (never deleted)")
    parser.add_argument("--data", nargs="+", help="PDEBench HDF5 files/directories (default: cfg.data.paths)")
    parser.add_argument("--stages", help="comma-separated subset of stage_order (+ 'baseline') to run now; "
                                         "default: every stage")
    spec, overrides, args = parser.parse_with_config(argv)
    overrides, selection = _stage_selection(overrides)
    if args.stages is not None:
        selection = tuple(v.strip() for v in args.stages.split(",") if v.strip())
    cfg = load_config(spec, overrides)
    from ups_jax.training.pipeline import train_and_evaluate  # heavy imports after argument errors

    train_and_evaluate(cfg, args.workdir or default_workdir(spec), fresh=args.fresh, data_paths=args.data,
                       stages=selection or ())
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main, exit_at_once_after_storage_error=True))


if __name__ == "__main__":
    cli()
