"""``python -m ups_jax.fleet.sweep --experiment experiments/smoke.py [--address auto] [--num-samples N]
[--storage PATH_OR_URI] [--name NAME] [--resume]``

Runs the experiment file's Tune sweep (every trial is the staged trainer; see ``ups_jax.fleet.trainable``),
then prints and saves the fleet table (``<storage>/<name>/fleet_summary.{md,json}``). ``--resume`` continues an
interrupted sweep and retries errored trials from their last checkpoints. Exit codes: 0 all trials ended, 1 some
trials failed, 2 bad input, 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import sys

from ups_jax.config import config_from_dict
from ups_jax.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ups_jax.fleet.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="experiments/*.py file defining get_experiment()")
    p.add_argument("--address", help="Ray cluster: 'auto', host:6379 or ray://host:10001 (default: inside a Ray "
                                     "job its cluster, else a local instance)")
    p.add_argument("--num-samples", type=int, help="override the experiment's num_samples")
    p.add_argument("--storage", help="results/checkpoints: local or shared path, s3://bucket/prefix, gs://... "
                                     "(multi-node clusters need shared or cloud storage)")
    p.add_argument("--name", help="override the experiment's name (its directory under the storage)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name>")
    p.add_argument("--budget-usd", type=float, help="stop the sweep cleanly once its worker nodes cost this much "
                                                    "(whole nodes while busy, priced by cfg.cost.price_per_hour; "
                                                    "counted over --resume too)")
    return p


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    from ups_jax.fleet import cluster
    from ups_jax.fleet import experiment as ex

    cluster.require_ray()
    exp = ex.load_experiment(args.experiment)
    if args.num_samples is not None:
        exp.num_samples = args.num_samples
    if args.name:
        exp.name = args.name
    cfg = exp.base_config()
    ex.validate(exp, cfg)
    storage = ex.resolve_storage(args.storage, from_cli=True) if args.storage else \
        ex.resolve_storage(exp.storage, from_cli=False)
    path = ex.experiment_dir(storage, exp.name)
    from ray import tune

    from ups_jax.fleet import storage as st

    if args.resume:
        if not (st.exists(path) and tune.Tuner.can_restore(path)):
            raise UserError(f"{path}: no sweep state to resume there; run without --resume to start it")
    elif st.exists(path):
        raise UserError(f"{path}: a sweep named '{exp.name}' already exists there; continue it with --resume, or "
                        f"pass --name NEW (nothing was changed)")
    record = ex.describe(exp, cfg)
    if args.budget_usd is not None and args.budget_usd <= 0:
        raise UserError(f"--budget-usd {args.budget_usd:g}: give a positive amount in US dollars")
    spent = 0.0
    if args.resume:
        record = frozen_experiment(path, record, exp.source)
        cfg = config_from_dict(record["base_config"])
        if args.budget_usd is not None:
            spent = _spent(path)
            if spent >= args.budget_usd:
                raise UserError(f"--budget-usd {args.budget_usd:g}: this sweep's nodes already cost ${spent:.2f} "
                                f"(python -m ups_jax.fleet.status --experiment {path}); raise the budget to continue "
                                f"(nothing was changed)")
    cluster.connect(args.address)
    import jax   # the driver never needs a GPU: keep its JAX (data generation, checks) off the trials' GPUs

    jax.config.update("jax_platforms", "cpu")
    from ups_jax.fleet import preflight

    preflight.run(storage, cpus=exp.cpus, gpus=exp.gpus, allow_cpu_fallback=bool(exp.allow_cpu_fallback))
    if args.resume:
        entries = record.get("data")
    else:
        entries = _prepare_data(cfg, path, upload=st.is_uri(storage))
        record["data"] = entries       # frozen with the experiment: trials fetch and check these hashes
        st.write_text(st.join(path, "fleet_experiment.json"), json.dumps(record, indent=1))
    trainable = make_trainable(exp, cfg, entries)
    stopper = None
    if args.budget_usd is not None and not args.resume:
        stopper = budget_stopper(args.budget_usd, record, spent)
    elif args.budget_usd is not None:          # Tuner.restore keeps the run config (and stopper) of the start
        print(f"note: --resume continues with the budget stopper saved when the sweep started (if any); "
              f"--budget-usd {args.budget_usd:g} only checked the ${spent:.2f} already spent", file=sys.stderr)
    if args.resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=dict(exp.search_space), tune_config=tune_config(exp, cfg),
                           run_config=run_config(exp, storage, stopper))
    tuner.fit()
    if stopper is not None and stopper.reached:
        print(f"budget: the sweep's nodes cost ${stopper.spent():.2f} >= --budget-usd {args.budget_usd:g}; the "
              f"trials were stopped at their last report (checkpoints kept)", file=sys.stderr)
    return report(exp, path)


def frozen_experiment(path: str, current: dict, source: str) -> dict:
    """The experiment as the sweep started it (``fleet_experiment.json``). ``--resume`` continues that sweep: an
    experiment file (or base config) edited since then is an error naming what changed, nothing is written."""
    from ups_jax.fleet import storage as st

    where = st.join(path, "fleet_experiment.json")
    frozen = st.read_json(where, what="the sweep's experiment record")
    if frozen is None:
        raise UserError(f"{where}: missing; this sweep was not started by ups_jax.fleet.sweep (nothing was changed)")
    changed = sorted(k for k in set(frozen) | set(current) if k not in ("source", "data")
                     and frozen.get(k) != current.get(k))
    if changed:
        raise UserError(f"{source}: changed since the sweep in {path} started ({', '.join(changed)} differ); "
                        f"--resume continues the sweep as it was started: restore the file (the started version "
                        f"is recorded in {where}), or start a new sweep with --name NEW (nothing was changed)")
    return frozen


def _spent(path: str) -> float:
    from ups_jax.fleet import summary as sm

    return float(sm.load(path)["totals"].get("cost") or 0.0)


def budget_stopper(budget_usd: float, record: dict, spent_before: float):
    from ups_jax.fleet.cost import BudgetStopper

    t = record["table"]
    return BudgetStopper(budget_usd, t.get("prices", {}), t["accelerator"], spent_before)


def _prepare_data(cfg, path: str, *, upload: bool) -> list[dict]:
    """Generates the default dataset once here, before the trials start (they would all race to make it), runs
    the trainer's preflight checks (the ones ``driver validate`` runs) on the base config, and stages the data
    for the trials (``fleet.datasets``: hashed; uploaded once into the sweep's cloud storage)."""
    from ups_jax.fleet import datasets
    from ups_jax.training.pipeline import preflight

    paths = tuple(cfg.data.paths)
    if not paths:
        from ups_jax.data.default import ensure_default_data

        paths = tuple(ensure_default_data(cfg))
    entries = datasets.stage(paths, path, upload=upload)
    local = config_from_dict(cfg.to_dict())
    local.data.paths = tuple(e["path"] for e in entries)     # URIs: the driver's cached copy
    preflight(local)
    return entries


def make_trainable(exp, cfg, data: list[dict] | None = None):
    from ray import tune

    from ups_jax.fleet.trainable import run_trial

    spec = {"metric": exp.metric, "gpus": exp.gpus, "allow_cpu_fallback": bool(exp.allow_cpu_fallback),
            # staged data replaces the base config's paths in every trial that keeps them
            "data": data, "data_for": list(cfg.data.paths), "sweep": exp.name}
    return tune.with_resources(tune.with_parameters(run_trial, base=cfg.to_dict(), spec=spec),
                               {"cpu": exp.cpus, "gpu": exp.gpus})


def tune_config(exp, cfg):
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ups_jax.fleet.experiment import build_scheduler

    search = BasicVariantGenerator(random_state=exp.search_seed) if exp.search_seed is not None else None
    return tune.TuneConfig(metric=exp.metric, mode=exp.mode, num_samples=exp.num_samples, search_alg=search,
                           scheduler=build_scheduler(exp, cfg), max_concurrent_trials=exp.max_concurrent_trials,
                           trial_dirname_creator=trial_dirname)


def trial_dirname(trial) -> str:
    return trial_dirname_of(trial.trial_id)


def trial_dirname_of(trial_id: str) -> str:
    return f"trial_{trial_id}"


def run_config(exp, storage: str, stopper=None):
    from ray import tune

    return tune.RunConfig(name=exp.name, storage_path=storage, callbacks=list(exp.callbacks), stop=stopper,
                          failure_config=tune.FailureConfig(max_failures=exp.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=exp.checkpoints_to_keep))


def report(exp, path: str) -> int:
    from ups_jax.fleet import storage as st
    from ups_jax.fleet import summary as sm

    summary = sm.load(path)
    rows = summary["trials"]
    print(sm.format_table(summary))
    md, js = sm.save(summary, path)
    print(f"saved {md} and {js}")
    best_id = sm.best_trial_id(path, exp.metric, exp.mode)
    best = next((r for r in rows if r["trial_id"] == best_id), None)
    if best is not None:
        print(f"best: {best['trial_id']} {exp.metric}={best['best']:.4g} at global step {best['best_step']}; "
              f"pull it with: python -m ups_jax.fleet.pull --experiment {path} --to runs/{exp.name}_best")
    unfinished = [r for r in summary["trials"] if r["status"] not in ("TERMINATED", "ERROR")]
    if unfinished:
        print(f"error: sweep interrupted with {len(unfinished)} unfinished trial(s); its state is saved in {path}; "
              f"continue with --resume", file=sys.stderr)
        return 130
    failed = [r for r in summary["trials"] if r["status"] == "ERROR"]
    if failed:
        r = failed[0]
        print(f"error: {len(failed)} of {len(rows)} trial(s) failed; {r['trial_id']} ({r['failures']} failure(s), "
              f"max_failures={exp.max_failures}): {r['error']} (traceback: "
              f"{st.join(path, trial_dirname_of(r['trial_id']), 'error.txt')}); fix the cause and rerun the errored "
              f"trials with --resume", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
