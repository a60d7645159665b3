"""``train_and_evaluate(cfg, workdir)``: data → model → every configured stage → the FNO baseline (if configured)
→ test evaluation → the comparison table (training/comparison.py).

Re-running the same command resumes: finished stages are skipped (their best EMA weights reloaded), an
interrupted stage continues from its latest checkpoint with the same step sequence. ``stages=('corrector',)``
runs a subset (the others are loaded when finished; a frozen teacher that no finished stage trained is an error
before anything is written). Stage names → loss, window, teachers, validator: training/stages.py. SIGTERM
checkpoints the current step and raises ``errors.Preempted`` (the command line exits with 75); the same command
resumes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import ups_jax
from ups_jax.data.loader import WindowLoader
from ups_jax.errors import CheckpointError, ConfigError, Preempted
from ups_jax.paths import code_version
from ups_jax.eval.evaluate import evaluate, write_report
from ups_jax.eval.rollout import Rollout
from ups_jax.models import build_model, count_params, model_kind
from ups_jax.training import checkpoints as ckpt
from ups_jax.training import preemption
from ups_jax.training.logging import RunLogger
from ups_jax.training.restore import check_value_range, load_run
from ups_jax.training.run_data import RunData
from ups_jax.training.loop import LoopOptions, StageSpec, run_stage
from ups_jax.training.stages import (BASELINE, make_validator, plan_stages, restore_finished, selected_stages,
                                    stage_finished, stage_kind)

log = logging.getLogger(__name__)


def _check_writable(workdir: Path) -> None:
    """Refuses (before any compute, nothing written) a --workdir that cannot be created or written."""
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CheckpointError(f"{workdir}: cannot create the workdir, {existing} is a file; choose another --workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"{workdir}: cannot write in {existing} (permission denied); choose another --workdir")


def _check_workdir(workdir: Path, cfg, data: RunData, model, fresh: bool) -> None:
    """Refuses a workdir written by another config/dataset unless --fresh (which sets the old run aside). Runs
    before anything is written: a refused run leaves the workdir byte-identical."""
    from ups_jax.training.resume import check_resumable

    meta_path = workdir / "run_meta.json"
    if not meta_path.exists():
        return
    if fresh:
        moved = ckpt.set_aside(workdir)
        log.info(f"--fresh: previous run moved to {moved}")
        return
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: unreadable ({type(e).__name__}); use another --workdir or pass --fresh "
                              f"to set the old run aside") from e
    if meta.get("fingerprint") != data.fingerprint():
        old, new = meta.get("fingerprint", {}), data.fingerprint()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CheckpointError(f"{workdir}: was trained on a different dataset (differs in: {', '.join(diff)}); "
                              f"use another --workdir or pass --fresh to set the old run aside")
    check_resumable(workdir, cfg, model)


def preflight(cfg, data_paths=None) -> int:
    """The same checks as ``driver validate``: refuse to start on any error, show warnings. Returns the number of
    devices the batch is split over (``runtime.data_parallel``)."""
    import jax

    from ups_jax.checks import data_parallel_size, errors, run_checks

    if data_paths:
        with cfg.unlocked():
            cfg.data.paths = tuple(str(p) for p in data_paths)
    checks, _ = run_checks(cfg)
    for c in checks:
        if not c.ok and c.severity == "warning":
            log.warning(f"[{c.category}] {c.name}: {c.message}" + (f" → {c.fix}" if c.fix else ""))
    errs = errors(checks)
    if errs:
        first = errs[0]
        more = f" (+{len(errs) - 1} more; run python -m ups_jax.driver validate)" if len(errs) > 1 else ""
        raise ConfigError(f"[{first.category}] {first.name}: {first.message} → {first.fix}{more}")
    n, _ = data_parallel_size(cfg.runtime.data_parallel, [cfg.stages[s].batch_size for s in cfg.stage_order],
                              jax.local_device_count())
    return n


def stage_offsets(cfg) -> dict[str, int]:
    """The run-wide step axis: optimizer updates done before each stage of ``cfg.stage_order`` starts (a stage's
    ``steps`` count updates, whatever its ``accum_steps``). W&B's step and the fleet's ASHA time use it."""
    offsets, total = {}, 0
    for name in cfg.stage_order:
        offsets[name], total = total, total + int(cfg.stages[name].steps)
    return offsets


def total_steps(cfg) -> int:
    """Optimizer updates of the whole staged run (the end of the run-wide step axis)."""
    last = cfg.stage_order[-1]
    return stage_offsets(cfg)[last] + int(cfg.stages[last].steps)


def train_and_evaluate(cfg, workdir, *, fresh: bool = False, max_steps: int | None = None,
                       data_paths=None, on_checkpoint=None, stages=()) -> dict:
    """Trains every stage of ``cfg.stage_order`` into ``workdir`` (resuming), the FNO baseline of
    ``cfg.baseline`` into its own workdir, then evaluates on the test split and writes the comparison table.

    ``stages``: a subset of ``stage_order`` (+ 'baseline') to run now; () = everything.
    ``on_checkpoint``: optional hook passed to every stage's loop (see ``loop.run_stage``), e.g. Ray Tune reporting;
    it is called after every complete checkpoint, including the one written on SIGTERM. In the main thread, SIGTERM
    checkpoints the current step and raises ``errors.Preempted`` (see ``training.preemption``).
    """
    with preemption.sigterm_checkpoints():
        return _train_and_evaluate(cfg, workdir, fresh=fresh, max_steps=max_steps, data_paths=data_paths,
                                   on_checkpoint=on_checkpoint, stages=stages)


def _stop_if_preempted(where: str) -> None:
    reason = preemption.requested()
    if reason:
        raise Preempted(f"{reason} {where}: no work in progress was lost; run the same command to resume")


def _train_and_evaluate(cfg, workdir, *, fresh, max_steps, data_paths, on_checkpoint, stages) -> dict:
    t0 = time.time()
    from ups_jax.compilation import enable_cache_from_config

    enable_cache_from_config(cfg)
    workdir = Path(workdir).absolute()
    devices = preflight(cfg, data_paths)
    selection = selected_stages(cfg, stages)
    _check_writable(workdir)
    data = RunData(cfg, data_paths)
    model = build_model(cfg, num_points=data.model_grid, rngs=nnx.Rngs(cfg.seed))
    _check_workdir(workdir, cfg, data, model, fresh)
    plan = plan_stages(cfg, workdir, selection)          # refuses a missing teacher before anything is written
    _stop_if_preempted("before training started")
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"version": ups_jax.__version__, "norm": data.norm, "fingerprint": data.fingerprint(),
            "splits": {k: len(v) for k, v in data.splits.items()}, "x_min": float(data.dataset.x_min),
            "x_max": float(data.dataset.x_max), "nx": int(data.dataset.nx), "grid": list(data.grid),
            "dt": float(data.dataset.dt),
            "data_paths": [str(Path(p).absolute()) for p in data.paths], "code": code_version()}
    ckpt.write_json(workdir / "config.json", cfg.to_dict())
    ckpt.write_json(workdir / "run_meta.json", meta)
    counts = count_params(model)
    log.info(f"ups_jax {ups_jax.__version__} | data: {data.dataset.num_trajectories} trajectories "
             f"{data.dataset.nt}x{data.dataset.nx} (train/val/test {meta['splits']}) | params: "
             + ", ".join(f"{k}={v:,}" for k, v in counts.items())
             + (f" | data parallel over {devices} devices" if devices > 1 else ""))
    logger = RunLogger(workdir, config=cfg.to_dict(), wandb_mode=cfg.logging.wandb_mode,
                       wandb_project=cfg.logging.wandb_project, stage_offsets=stage_offsets(cfg))
    options = LoopOptions.from_config(cfg, data_parallel=devices)
    results = {"stages": {}, "plan": plan}
    with logger:
        logger.log("run_start", version=ups_jax.__version__, stages=list(cfg.stage_order), params=counts,
                   device=jax.devices()[0].platform, data=data.fingerprint(), data_parallel=devices, plan=plan)
        x01 = jnp.asarray(data.x01)
        done = set()
        for i, name in enumerate(cfg.stage_order):
            _stop_if_preempted(f"before stage {name}")
            if plan[name] == "not selected":
                log.info(f"[{name}] not selected (--stages) and not finished: skipped")
                continue
            sc, kind = cfg.stages[name], stage_kind(name)
            if plan[name] == "finished":   # reload the modules it trained from its best EMA checkpoint
                res = restore_finished(model, workdir, name, tuple(sc.trainable), logger)
                results["stages"][name] = res.__dict__
                log.info(f"[{name}] skipped (done); best val={res.best_val:.4g} at step {res.best_step}")
                done.add(name)
                continue
            if kind.prepare is not None:
                kind.prepare(model)       # e.g. the student starts as its teacher (a checkpoint overrides it)
            validate, val_metric = make_validator(name, cfg, data, model)
            loader = WindowLoader(data.dataset, data.splits["train"], window=kind.window(cfg, sc, data.dataset.nt),
                                  batch_size=sc.batch_size, seed=cfg.seed + 1000 * i, prefetch=cfg.data.prefetch)
            spec = StageSpec(name=name, cfg=sc, val_metric=val_metric, validate=validate,
                             trainable=tuple(sc.trainable), loss_fn=kind.loss(cfg, sc, x01, norm=data.norm))
            try:
                res = run_stage(model, spec, loader, prepare_batch=data.prepare_batch, workdir=workdir,
                                logger=logger, seed=cfg.seed + i, ckpt_metadata={"config": cfg.to_dict(), **meta},
                                keep_latest=cfg.checkpoint.keep_latest, keep_best=cfg.checkpoint.keep_best,
                                progress=cfg.logging.progress, max_steps=max_steps, on_checkpoint=on_checkpoint,
                                options=options)
            finally:
                if hasattr(loader, "close"):
                    loader.close()
            results["stages"][name] = res.__dict__
            log.info(f"[{name}] {'skipped (done)' if res.skipped else f'{res.steps_done} steps'}; "
                     f"best {val_metric}={res.best_val:.4g} at step {res.best_step}"
                     + (f"; {res.nonfinite_steps} non-finite step(s) skipped" if res.nonfinite_steps else ""))
            if max_steps is not None and not res.skipped and res.steps_done < sc.steps and not res.stopped_early:
                return results  # interrupted on purpose (tests); re-running resumes
            done.add(name)
        baseline = run_baseline(cfg, workdir, data, selection)
        core = [n for n in cfg.stage_order if stage_kind(n).refine == "none" and stage_kind(n).validator != "steady"]
        if not all(n in done for n in core):
            log.info(f"evaluation skipped: the core stages {core} are not all finished in {workdir}")
        else:
            _stop_if_preempted("before the final evaluation")
            results["eval"] = run_evaluation(model, cfg, data, workdir, logger, done=done)
        if "eval" in results and model_kind(cfg) == "ups":   # a baseline run is a row of its caller's table
            from ups_jax.training.comparison import run_comparison
            from ups_jax.eval.table import markdown

            results["table"] = run_comparison(model, cfg, data, workdir, done, baseline)
            print(markdown(results["table"]), flush=True)      # the run's result, on stdout (also eval/table.md)
            logger.log("table", file="eval/table.json",
                       **{f"{r['row']}/nrmse": r["protocol"]["nrmse"] for r in results["table"]["rows"]})
        logger.log("run_end", wall_s=time.time() - t0)
    return results


def baseline_workdir(cfg, workdir) -> Path:
    """Where the run's baseline lives: ``baseline.workdir`` relative to the run's WORKDIR (never to the directory
    a command happens to start in: train, evaluate and the fleet's workers must all find the same one), absolute
    as given; default WORKDIR/baselines/fno."""
    given = str(cfg.baseline.workdir)
    return Path(workdir).absolute() / (Path(given).expanduser() if given else Path("baselines") / "fno")


def run_baseline(cfg, workdir: Path, data: RunData, selection=()):
    """Trains (or resumes, or just loads) the baseline of ``cfg.baseline`` (``config``: a config spec such as
    'configs/fno_burgers.py:cpu'; ``workdir``: :func:`baseline_workdir`) on this run's data and evaluation
    protocol. Returns (model, norm) for the comparison table, or None when not configured / not available."""
    from ups_jax.checks import baseline_spec

    spec = baseline_spec(cfg)
    if not spec:
        return None
    bwd = baseline_workdir(cfg, workdir)
    if not selection or BASELINE in selection:
        bcfg = baseline_config(cfg, spec)
        log.info(f"[baseline] {spec} → {bwd}")
        _train_and_evaluate(bcfg, bwd, fresh=False, max_steps=None, data_paths=data.paths, on_checkpoint=None,
                            stages=())      # inside this run's SIGTERM handling
    elif not (bwd / "run_meta.json").is_file():
        return None
    _, bdata, bmodel, _, _ = load_run(bwd, data.paths)
    return bmodel, bdata.norm


def baseline_config(cfg, spec: str):
    """The baseline's config: its own model and stages, this run's data, evaluation protocol and seed (a run with
    ``--config.seed=S`` gets the baseline's seed-S run, so that seeds pair up in the comparison table)."""
    from ups_jax.config import load_config

    bcfg = load_config(spec)
    with bcfg.unlocked():                # never a nested baseline, no refiner in the baseline
        bcfg.seed = cfg.seed
        bcfg.data = type(cfg.data)(cfg.data.to_dict())
        bcfg.eval = type(cfg.eval)(cfg.eval.to_dict())
        bcfg.eval.ttc_preset = ""
        bcfg.baseline.config = ""
    return bcfg


def eval_refiner(cfg, done, use: str = "evaluated") -> str:
    """The refiner the run's headline evaluation applies: ``eval.refine`` ('none', 'corrector', 'student') when
    that stage is finished (``done``); else 'none', said in the log (e.g. a run trained with ``--stages operator``);
    ``use``: what happens to the operator then, for that line ('evaluated'; infer: 'used')."""
    refine = str(cfg.eval.get("refine", "none") or "none")
    if refine != "none" and refine not in done:
        log.info(f"eval.refine={refine!r} but stage '{refine}' is not finished: the operator alone is {use} "
                 f"(train it on this workdir, or set --config.eval.refine=none)")
        return "none"
    return refine


def run_evaluation(model, cfg, data: RunData, workdir: Path, logger=None, split: str | None = None,
                   done=()) -> dict:
    """The headline evaluation (``WORKDIR/eval/<split>.json``): the operator's rollout, refined by
    :func:`eval_refiner`'s stage; ``results['predictor']`` names which ('operator', 'operator+corrector'; a
    baseline's run: its model kind)."""
    split = split or cfg.eval.split
    traj, nu = data.trajectories(split, cfg.eval.max_trajectories)
    refine = eval_refiner(cfg, set(done))
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(traj)),
                      mode=cfg.eval.rollout_mode, refine=refine, seed=cfg.seed)
    results, samples = evaluate(rollout, traj, nu, dt=float(data.dataset.dt), domain_length=data.Lx,
                                initial_step=cfg.eval.initial_step, batch_size=cfg.eval.batch_size,
                                corr_threshold=cfg.eval.corr_threshold, split=split,
                                keep_samples=cfg.eval.plot_trajectories)
    base = "operator" if model_kind(cfg) == "ups" else model_kind(cfg)        # a baseline's own run: 'fno', ...
    results["predictor"] = base + (f"+{refine}" if refine != "none" else "")
    write_report(results, samples, data.x, workdir / "eval", y=data.y)
    m, p = results["model"], results["persistence"]
    log.info(f"[eval:{split}] {results['n_trajectories']} trajectories, {results['protocol']['steps']}-step rollout: "
          f"nRMSE (per-trajectory mean) model ({results['predictor']}) {m['nrmse']:.4f} vs persistence {p['nrmse']:.4f} "
          f"({results['improvement_over_persistence']:.1f}x better); rel-L2 {m['rel_l2']:.4f}; "
          f"report in {workdir / 'eval'}")
    if logger is not None:
        logger.log("eval", split=split, **{"model/nrmse": m["nrmse"], "persistence/nrmse": p["nrmse"],
                                           "model/rel_l2": m["rel_l2"]}, file=f"eval/{split}.json",
                   predictor=results["predictor"],
                   conventions_version=results["conventions"]["version"])
    return results


def evaluate_workdir(workdir, data_paths=None, split=None) -> dict:
    """``python -m ups_jax.evaluate``: the finished run's best weights on ``split`` (default ``eval.split``) of its
    own data or of ``data_paths`` (checked against the run's grid and value range first)."""
    cfg, data, model, stage, step = load_run(workdir, data_paths)
    split = split or cfg.eval.split
    if data_paths:
        traj, _ = data.trajectories(split, cfg.eval.max_trajectories)
        check_value_range(traj, data.norm, f"{data.paths[0]} ({split} split)")
    log.info(f"restored {stage} step {step} from {workdir}")
    done = {name for name in cfg.stage_order if stage_finished(workdir, name)}
    return run_evaluation(model, cfg, data, Path(workdir), split=split, done=done)
