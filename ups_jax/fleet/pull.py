"""``python -m ups_jax.fleet.pull --experiment PATH_OR_URI [--trial ID] [--metric val/nrmse --mode min] --to DIR``

Copies the best finished trial's (or the named trial's) latest checkpoint — a complete run directory: config,
run metadata, metrics log, every stage's orbax checkpoints — from the sweep's storage to DIR, so that
``python -m ups_jax.evaluate --workdir DIR [--data ...]`` works on any machine, CPU-only included. DIR must not
exist (or be empty); the copy appears there only when complete. ``DIR/pulled.json`` records where the run came
from: its data paths were those of the machine that trained it, so ``evaluate`` asks for ``--data`` when they
are not found here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from ups_jax.errors import UserError, run_cli


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m ups_jax.fleet.pull", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the sweep's directory: <storage>/<name> (path or URI)")
    p.add_argument("--trial", help="trial id (e.g. 3f2a1_00002) instead of the best finished trial")
    p.add_argument("--metric", help="ranking metric (default: the sweep's)")
    p.add_argument("--mode", choices=["min", "max"], help="(default: the sweep's)")
    p.add_argument("--to", required=True, help="local directory to create")
    args = p.parse_args(argv)
    from ups_jax.fleet import cluster
    from ups_jax.fleet import storage as st

    cluster.require_ray()
    dest = Path(args.to).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"--to {args.to}: exists and is not empty; pull into a new directory (nothing was changed)")
    described = st.read_json(st.join(args.experiment, "fleet_experiment.json"),
                             what="the sweep's experiment record") or {}
    metric = args.metric or described.get("metric", "val/nrmse")
    mode = args.mode or described.get("mode", "min")
    trial, row = choose_trial(args.experiment, metric, mode, args.trial)
    checkpoint = latest_checkpoint(args.experiment, trial, metric, mode)
    pull_checkpoint(checkpoint, dest, {
        "experiment": args.experiment, "trial_id": trial.trial_id, "status": trial.status, "metric": metric,
        "mode": mode, "best": row["best"], "best_step": row["best_step"], "checkpoint": str(checkpoint.path),
        "trained_on_host": row["hostname"], "pulled_on_host": socket.gethostname(),
        "git_commit": row.get("git_commit"), "image": row.get("image"),     # the code that trained it
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": "run_meta.json's data_paths are paths on the training machine; evaluate with --data if they "
                "are not present here"})
    best = f"{metric}={row['best']:.4g}" if row["best"] is not None else f"no finite {metric}"
    print(f"pulled trial {trial.trial_id} ({trial.status.lower()}, best {best}) to {dest}\n"
          f"evaluate it with: python -m ups_jax.evaluate --workdir {dest} [--data PATH...]")
    return 0


def choose_trial(experiment: str, metric: str, mode: str, trial_id: str | None):
    from ups_jax.fleet import summary as sm

    analysis = sm.open_analysis(experiment, metric, mode)
    rows = {r["trial_id"]: r for r in sm.read_trials(experiment, metric, mode)}
    trials = {t.trial_id: t for t in analysis.trials}
    if not trials:
        raise UserError(f"{experiment}: the sweep has no trials yet")
    if trial_id:
        match = [t for tid, t in trials.items() if tid == trial_id or tid.endswith(trial_id)]
        if len(match) != 1:
            raise UserError(f"--trial {trial_id}: {'no' if not match else 'more than one'} trial matches; trials: "
                            f"{', '.join(sorted(trials))}")
        return match[0], rows[match[0].trial_id]
    best_id = sm.best_trial_id(experiment, metric, mode)
    if best_id is None:
        states = ", ".join(f"{t.trial_id} {t.status.lower()}" for t in trials.values())
        raise UserError(f"{experiment}: no finished trial with a finite {metric} yet ({states}); wait for the sweep, "
                        f"or pull a running trial's latest checkpoint with --trial ID")
    return trials[best_id], rows[best_id]


def latest_checkpoint(experiment: str, trial, metric: str, mode: str):
    from ups_jax.fleet import summary as sm

    analysis = sm.open_analysis(experiment, metric, mode)
    checkpoint = analysis.get_last_checkpoint(trial=[t for t in analysis.trials if t.trial_id == trial.trial_id][0])
    if checkpoint is None:
        raise UserError(f"{experiment}: trial {trial.trial_id} has no checkpoint yet; wait for its first validation "
                        f"round or choose another --trial")
    return checkpoint


def pull_checkpoint(checkpoint, dest: Path, record: dict) -> None:
    """Downloads into a temporary sibling of ``dest`` and renames it into place when complete."""
    from ups_jax.fleet import storage as st

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest.parent))
    try:
        try:
            checkpoint.to_directory(str(tmp))
        except OSError as e:
            raise st.unreachable(str(checkpoint.path), e) from None
        missing = [n for n in ("config.json", "run_meta.json", "checkpoints") if not (tmp / n).exists()]
        if missing:
            raise UserError(f"{checkpoint.path}: not a ups_jax run snapshot (missing {', '.join(missing)}); was this "
                            f"sweep run by ups_jax.fleet?")
        (tmp / "pulled.json").write_text(json.dumps(record, indent=1))
        if dest.exists():
            dest.rmdir()                              # checked empty above
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
