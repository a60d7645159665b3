"""``python -m ups_jax.driver validate --config FILE[:arg] [--config.x=y ...] [--workdir DIR] [--compile] [--json]``

Checks a config before any compute is spent: the checks ``train`` runs first (``ups_jax.checks``: architecture,
data, stages, hyper-parameters, logging, checkpoint cadence, runtime), plus, with ``--workdir``, whether the run
in DIR can be resumed by this config (grid, dataset, parameter shapes, optimizer state) and, with
``--compile``, XLA's memory for each stage's compiled step. Each check has a category, a severity (error /
warning / info), a one-line message (the value it checked, whether it passed or not) and the fix. Exit 0 when
no check fails with severity error, 1 when one does, 2 for a usage error (bad flag, unknown config key: one
line on stderr).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from ups_jax.checks import CATEGORIES, Check, Checks, errors, format_table, run_checks as config_checks, sort_checks
from ups_jax.cli import ArgumentParser
from ups_jax.config import load_config
from ups_jax.errors import UserError

__all__ = ["CATEGORIES", "Check", "errors", "format_table", "run_checks", "main"]


def check_workdir(cfg, c: Checks, workdir, nx):
    """A run already in ``workdir``: grid, dataset fingerprint and every checkpoint parameter shape vs this config
    (what ``train`` would refuse, without loading any array)."""
    C = "checkpoints"
    wd = Path(workdir)
    meta_path = wd / "run_meta.json"
    if not meta_path.exists():
        c.add(C, "workdir", True, f"{wd} {'holds no run yet' if wd.exists() else 'does not exist yet'} (a fresh "
              "run)", severity="info")
        return
    from flax import nnx

    from ups_jax.errors import CheckpointError
    from ups_jax.models import build_model

    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        c.add(C, "workdir", False, f"{meta_path}: unreadable ({e})", "use another --workdir or --fresh")
        return
    run_nx = meta.get("nx", nx)
    if isinstance(nx, tuple) or "grid" in meta:      # a 2-D run (run_meta "grid" [X, Y]; checks.grid's (X, Y))
        run_nx = tuple(meta["grid"]) if len(meta.get("grid", [])) > 1 else meta.get("nx", nx)
    if nx is not None and run_nx is not None:
        c.add(C, "grid", run_nx == nx, f"{wd} was trained on {run_nx} cells; this config gives {nx}",
              "use the run's data.reduced_resolution, another --workdir, or --fresh",
              passed=f"{wd} was trained on the same {nx}-cell grid")
    if "fingerprint" in meta and not any(x.category == "data" and not x.ok for x in c.items):
        try:
            from ups_jax.data.default import default_data_path
            from ups_jax.data.grids import open_run_dataset

            paths = list(cfg.data.paths) or ([str(default_data_path(cfg))] if default_data_path(cfg).exists()
                                             else [])
            if paths:
                d = open_run_dataset(cfg, paths)             # the reader of the config's dimension
                new, old = d.fingerprint(), meta["fingerprint"]
                d.close()
                new = json.loads(json.dumps(new, default=str))   # the stored one's JSON types
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                c.add(C, "dataset", not diff, f"{wd} was trained on a different dataset (differs in: "
                      f"{', '.join(diff)}); train refuses to resume it", "use another --workdir or --fresh",
                      passed=f"{wd} was trained on this dataset")
        except UserError as e:
            c.add(C, "dataset", False, str(e), "run validate-data on the files")
    if run_nx is None:
        return
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.resume import check_stage_resumable

    try:
        model = nnx.eval_shape(lambda: build_model(cfg, num_points=run_nx, rngs=nnx.Rngs(0)))
    except (ValueError, TypeError, UserError):
        return   # reported by the architecture checks
    for stage in ckpt.checkpointed_stages(wd):
        try:
            found = check_stage_resumable(wd, cfg, model, stage)
        except CheckpointError as e:
            c.add(C, f"{stage} shapes", False, str(e), "use the matching config, another --workdir, or --fresh")
            continue
        if found is None:
            c.add(C, f"{stage} shapes", False, f"{ckpt.stage_dir(wd, stage)}: no readable checkpoint",
                  "train resumes from the newest readable one or starts the stage over", severity="warning")
            continue
        step, finished = found
        c.add(C, f"{stage} shapes", True, f"{ckpt.stage_dir(wd, stage)}/{step}: every parameter shape matches this "
              "config" + ("; finished (train skips it)" if finished else "; optimizer state matches (train resumes "
                          "it)"), severity="info")


def check_memory(cfg, c: Checks):
    from ups_jax.driver.compiled_step import compiled_stage_memory, device_memory_bytes

    H = "hardware"
    limit = device_memory_bytes()
    for stage, mem in compiled_stage_memory(cfg).items():
        if mem["peak_bytes"] is None:       # XLA could not tell: say so, never a pass on a guess of 0 bytes
            c.add(H, f"{stage} memory", False, f"compiled {stage} step: memory unknown ({mem['memory_unknown']})",
                  "run the dry run on the target device (python -m ups_jax.driver dry-run)", severity="warning")
            continue
        c.add(H, f"{stage} memory", mem["peak_bytes"] < 0.9 * limit,
              f"compiled {stage} step needs {mem['peak_bytes'] / 2**20:.1f} MiB of {limit / 2**30:.1f} GiB",
              f"lower stages.{stage}.batch_size or use accum_steps")


def run_checks(cfg, *, workdir=None, compile: bool = False, skip_data: bool = False) -> list[Check]:
    """Every check, grouped by category (architecture, data, stages, hyper-parameters, logging, checkpoints,
    hardware). ``skip_data``: do not open any data file (grid from ``data.generate``)."""
    items, nx = config_checks(cfg, skip_data=skip_data)
    c = Checks()
    c.items = list(items)
    if workdir is not None:
        check_workdir(cfg, c, workdir, nx)
    if compile and not errors(c.items):
        check_memory(cfg, c)
    else:
        c.add("hardware", "memory", True, "compiled-memory check " + (
            "skipped: fix the errors first" if compile else "skipped (use --compile, or driver dry-run)"),
            severity="info")
    return sort_checks(c.items)


def main(argv) -> int:
    parser = ArgumentParser(prog="python -m ups_jax.driver validate", description=__doc__, config=True)
    parser.add_argument("--workdir", help="also check the run in DIR (grid, dataset, checkpoint shapes)")
    parser.add_argument("--compile", action="store_true", help="also compile each stage's step (memory check)")
    parser.add_argument("--json", action="store_true", help="a JSON list of checks")
    spec, overrides, args = parser.parse_with_config(argv)
    cfg = load_config(spec, overrides)
    checks = run_checks(cfg, workdir=args.workdir, compile=args.compile)
    if args.json:
        print(json.dumps([dataclasses.asdict(x) | {"status": x.status} for x in checks], indent=1))
    else:
        print(format_table(checks))
    return 1 if errors(checks) else 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
