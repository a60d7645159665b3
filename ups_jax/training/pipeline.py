"""``train_and_evaluate(cfg, workdir)``: data → model → every configured stage → test evaluation → report.

Re-running the same command resumes: finished stages are skipped (their best EMA weights reloaded), an
interrupted stage continues from its latest checkpoint with the same step sequence. SIGTERM checkpoints the
current step and raises ``errors.Preempted`` (the command line exits with 75); the same command resumes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import ups_jax
from ups_jax.data.default import ensure_default_data
from ups_jax.data.loader import WindowLoader
from ups_jax.data.pdebench import PDEBenchDataset, compute_normalization, make_splits
from ups_jax.errors import CheckpointError, ConfigError, Preempted
from ups_jax.eval.evaluate import evaluate, score, write_report
from ups_jax.eval.rollout import Rollout
from ups_jax.models import build_model, count_params
from ups_jax.training import checkpoints as ckpt
from ups_jax.training import preemption
from ups_jax.training.logging import RunLogger
from ups_jax.training.loop import LoopOptions, StageSpec, run_stage
from ups_jax.training.losses import make_stage_loss, window_frames

log = logging.getLogger(__name__)


class RunData:
    """The dataset with its splits, train-only normalisation and coordinates, as one object."""

    def __init__(self, cfg, paths=None):
        paths = list(paths) if paths else ensure_default_data(cfg)
        self.paths = paths
        self.dataset = PDEBenchDataset(paths, reduced_resolution=cfg.data.reduced_resolution,
                                       reduced_resolution_t=cfg.data.reduced_resolution_t)
        self.splits = make_splits(self.dataset, test_fraction=cfg.data.test_fraction,
                                  val_fraction=cfg.data.val_fraction)
        self.norm = compute_normalization(self.dataset, self.splits["train"])
        d = self.dataset
        self.Lx = float(d.x_max - d.x_min)
        self.x = np.asarray(d.x, np.float32)
        self.x01 = ((self.x - d.x_min) / self.Lx).astype(np.float32)

    def trajectories(self, split: str, limit: int = 0):
        idx = np.asarray(self.splits[split])
        if limit:
            idx = idx[:limit]
        return self.dataset.read(idx), np.asarray(self.dataset.nu)[idx].astype(np.float32)

    def fingerprint(self) -> dict:
        return self.dataset.fingerprint()

    def prepare_batch(self, batch: dict) -> dict:
        u = (np.asarray(batch["u"], np.float32) - self.norm["mean"]) / self.norm["std"]
        return {"u": jnp.asarray(u), "dt": jnp.asarray(batch["dt"], jnp.float32),
                "nu": jnp.asarray(batch["nu"], jnp.float32)}


def make_validator(stage_name: str, cfg, data: RunData, model):
    """Validation on the *val* split (never test): rollout nRMSE, or reconstruction nRMSE for the codec."""
    traj, nu = data.trajectories("val", cfg.eval.val_max_trajectories)
    dt = float(data.dataset.dt)
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(traj)),
                      mode=cfg.eval.rollout_mode)
    if stage_name == "codec":
        graphdef, _ = nnx.split(model)
        x01 = jnp.asarray(data.x01)
        h = int(model.context_frames)

        @jax.jit
        def recon(state, u_ctx):
            m = nnx.merge(graphdef, state)
            return m.decode(m.encode_frames(u_ctx, x01), x01)[..., 0]

        # windows of h frames ending at 8 evenly spaced frames of every val trajectory; the target is the newest
        ends = np.arange(h - 1, traj.shape[1], max(1, traj.shape[1] // 8))
        windows = np.stack([traj[:, e - h + 1:e + 1] for e in ends], 1).reshape(-1, h, traj.shape[-1])
        frames = windows[:, -1]                                                          # physical
        mean, std = data.norm["mean"], data.norm["std"]
        normed = jnp.asarray((windows - mean) / std, jnp.float32)

        def validate(m):
            pred = np.asarray(recon(nnx.state(m), normed)) * std + mean
            err = np.sqrt(np.mean((pred - frames) ** 2, -1)) / np.sqrt(np.mean(frames ** 2, -1))
            return {"val/recon_nrmse": float(np.mean(err))}

        return validate, "val/recon_nrmse"

    start = cfg.eval.initial_step - 1

    def validate(m):
        # the same per-trajectory definition as the test evaluation (eval.evaluate.score)
        model_m, pers_m, _ = score(rollout.set_model(m), traj, nu, dt, start, batch_size=len(traj))
        return {"val/nrmse": model_m["nrmse"], "val/persistence_nrmse": pers_m["nrmse"]}

    return validate, "val/nrmse"


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


def train_and_evaluate(cfg, workdir, *, fresh: bool = False, max_steps: int | None = None,
                       data_paths=None, on_checkpoint=None) -> dict:
    """Trains every stage of ``cfg.stage_order`` into ``workdir`` (resuming), then evaluates on the test split.

    ``on_checkpoint``: optional hook passed to every stage's loop (see ``loop.run_stage``), e.g. Ray Tune reporting;
    it is called after every complete checkpoint, including the one written on SIGTERM. In the main thread, SIGTERM
    checkpoints the current step and raises ``errors.Preempted`` (see ``training.preemption``).
    """
    with preemption.sigterm_checkpoints():
        return _train_and_evaluate(cfg, workdir, fresh=fresh, max_steps=max_steps, data_paths=data_paths,
                                   on_checkpoint=on_checkpoint)


def _stop_if_preempted(where: str) -> None:
    reason = preemption.requested()
    if reason:
        raise Preempted(f"{reason} {where}: no work in progress was lost; run the same command to resume")


def _train_and_evaluate(cfg, workdir, *, fresh, max_steps, data_paths, on_checkpoint) -> dict:
    t0 = time.time()
    workdir = Path(workdir).absolute()
    devices = preflight(cfg, data_paths)
    _check_writable(workdir)
    data = RunData(cfg, data_paths)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
    _check_workdir(workdir, cfg, data, model, fresh)
    _stop_if_preempted("before training started")
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {"version": ups_jax.__version__, "norm": data.norm, "fingerprint": data.fingerprint(),
            "splits": {k: len(v) for k, v in data.splits.items()}, "x_min": float(data.dataset.x_min),
            "x_max": float(data.dataset.x_max), "nx": int(data.dataset.nx), "dt": float(data.dataset.dt),
            "data_paths": [str(Path(p).absolute()) for p in data.paths]}
    ckpt.write_json(workdir / "config.json", cfg.to_dict())
    ckpt.write_json(workdir / "run_meta.json", meta)
    counts = count_params(model)
    log.info(f"ups_jax {ups_jax.__version__} | data: {data.dataset.num_trajectories} trajectories "
             f"{data.dataset.nt}x{data.dataset.nx} (train/val/test {meta['splits']}) | params: "
             + ", ".join(f"{k}={v:,}" for k, v in counts.items())
             + (f" | data parallel over {devices} devices" if devices > 1 else ""))
    offsets, total = {}, 0
    for name in cfg.stage_order:      # W&B's run-wide step: the stages one after the other
        offsets[name], total = total, total + int(cfg.stages[name].steps)
    logger = RunLogger(workdir, config=cfg.to_dict(), wandb_mode=cfg.logging.wandb_mode,
                       wandb_project=cfg.logging.wandb_project, stage_offsets=offsets)
    options = LoopOptions.from_config(cfg, data_parallel=devices)
    results = {"stages": {}}
    with logger:
        logger.log("run_start", version=ups_jax.__version__, stages=list(cfg.stage_order), params=counts,
                   device=jax.devices()[0].platform, data=data.fingerprint(), data_parallel=devices)
        x01 = jnp.asarray(data.x01)
        for i, name in enumerate(cfg.stage_order):
            _stop_if_preempted(f"before stage {name}")
            sc = cfg.stages[name]
            validate, val_metric = make_validator(name, cfg, data, model)
            spec = StageSpec(name=name, cfg=sc, val_metric=val_metric, validate=validate,
                             trainable=tuple(sc.trainable),
                             loss_fn=make_stage_loss(cfg, sc, x01=x01))
            loader = WindowLoader(data.dataset, data.splits["train"], window=window_frames(cfg, sc),
                                  batch_size=sc.batch_size, seed=cfg.seed + 1000 * i, prefetch=cfg.data.prefetch)
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
        _stop_if_preempted("before the final evaluation")
        results["eval"] = run_evaluation(model, cfg, data, workdir, logger)
        logger.log("run_end", wall_s=time.time() - t0)
    return results


def run_evaluation(model, cfg, data: RunData, workdir: Path, logger=None, split: str | None = None) -> dict:
    split = split or cfg.eval.split
    traj, nu = data.trajectories(split, cfg.eval.max_trajectories)
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(traj)),
                      mode=cfg.eval.rollout_mode)
    results, samples = evaluate(rollout, traj, nu, dt=float(data.dataset.dt), domain_length=data.Lx,
                                initial_step=cfg.eval.initial_step, batch_size=cfg.eval.batch_size,
                                corr_threshold=cfg.eval.corr_threshold, split=split,
                                keep_samples=cfg.eval.plot_trajectories)
    write_report(results, samples, data.x, workdir / "eval")
    m, p = results["model"], results["persistence"]
    log.info(f"[eval:{split}] {results['n_trajectories']} trajectories, {results['protocol']['steps']}-step rollout: "
          f"nRMSE (per-trajectory mean) model {m['nrmse']:.4f} vs persistence {p['nrmse']:.4f} "
          f"({results['improvement_over_persistence']:.1f}x better); rel-L2 {m['rel_l2']:.4f}; "
          f"report in {workdir / 'eval'}")
    if logger is not None:
        logger.log("eval", split=split, **{"model/nrmse": m["nrmse"], "persistence/nrmse": p["nrmse"],
                                           "model/rel_l2": m["rel_l2"]}, file=f"eval/{split}.json",
                   conventions_version=results["conventions"]["version"])
    return results
