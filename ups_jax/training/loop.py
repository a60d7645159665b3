"""The one generic stage loop. A stage = a loss function, the submodules it trains, and a validation function.

Pattern B from jax-stack-notes §1: ``nnx.split`` the model once into (trainable params, everything else),
then a plain ``jax.jit`` step differentiates the trainable params only — ~3× faster than ``nnx.jit`` for
small models on CPU and identical in NNX graph and tree mode. Frozen teachers/submodules simply live in
``rest``. EMA params are kept beside the live params; validation, checkpoint selection and the weights
handed to the next stage are the EMA ones.

One loop iteration = one dispatch of ``runtime.steps_per_dispatch`` optimizer updates (training/step.py: flat
donated state, device-resident data, ``lax.scan``); with ``accum_steps`` = A each update scans A micro-batches and
averages their gradients, so the EMA, the learning-rate schedule and every cadence (``log_every``, ``eval_every``,
checkpoints, the progress bar, ``steps``) count optimizer updates, and land between dispatches.

Reliability (issue 10):

* exact resume: params, EMA, optimizer state, step, RNG, data-loader position and early-stopping state are
  checkpointed; a killed run resumes from the newest complete checkpoint and, on CPU, ends bitwise identical to
  an uninterrupted one. Resume points besides the validations: ``checkpoint_every_steps`` and
  ``checkpoint_every_minutes``; a damaged newest checkpoint falls back to the previous one
  (``checkpoints.restore_for_resume``);
* preemption: a SIGTERM (``preemption``) checkpoints the current step and raises ``errors.Preempted``;
* NaN guard: a non-finite loss or gradient skips the update (a select in training/step.py; the EMA and the
  optimizer state are not moved either), is counted in the ``train`` records, and ``max_nonfinite_steps`` in a
  row stop the run (``errors.TrainingDiverged``, checked between dispatches); non-finite weights are never
  checkpointed;
* data parallel: with ``data_parallel`` = N > 1 the batch is split over a 1-D ``jax.sharding`` mesh of N local
  devices and the train state is replicated (XLA inserts the gradient all-reduce);
* mixed precision: ``compute_dtype='bfloat16'`` runs the forward/backward pass in bf16; params, gradients,
  optimizer state and EMA stay float32.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ups_jax.compilation import RecompileWatch
from ups_jax.errors import CheckpointError, ConfigError, Preempted, TrainingDiverged, storage_error_message
from ups_jax.models import param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training import preemption
from ups_jax.training.faults import fault_from_env, inject_fault
from ups_jax.training.optim import learning_rate_schedule, make_optimizer
from ups_jax.dispatch import resolve_steps_per_dispatch
from ups_jax.training.step import StageStep


log = logging.getLogger(__name__)



@dataclasses.dataclass
class StageSpec:
    name: str
    cfg: Any                                        # cfg.stages[name]
    loss_fn: Callable                               # (model, batch, rng) -> (loss, {name: scalar})
    validate: Callable[[nnx.Module], dict]          # (model with EMA params) -> metrics, incl. val_metric
    val_metric: str                                 # e.g. 'val/nrmse'
    trainable: tuple[str, ...]                      # top-level submodule names trained in this stage


@dataclasses.dataclass
class LoopOptions:
    """Run-wide settings of the loop (``cfg.runtime`` and ``cfg.checkpoint``; see configs/burgers32.py)."""
    data_parallel: int = 1                  # devices the batch is split over (resolved by the caller)
    compute_dtype: str = "float32"          # or 'bfloat16' (forward/backward only)
    max_nonfinite_steps: int = 20           # consecutive skipped non-finite updates before the run stops
    checkpoint_every_steps: int = 0         # extra resume points (0 = only at validations)
    checkpoint_every_minutes: float = 0.0   # extra resume points by wall clock (0 = off)
    steps_per_dispatch: Any = "auto"        # optimizer updates per compiled call ('auto': training/step.py)

    @classmethod
    def from_config(cls, cfg, data_parallel: int = 1) -> "LoopOptions":
        return cls(data_parallel=data_parallel, compute_dtype=str(cfg.runtime.compute_dtype),
                   max_nonfinite_steps=int(cfg.runtime.max_nonfinite_steps),
                   checkpoint_every_steps=int(cfg.checkpoint.every_steps),
                   checkpoint_every_minutes=float(cfg.checkpoint.every_minutes),
                   steps_per_dispatch=cfg.runtime.get("steps_per_dispatch", "auto"))


@dataclasses.dataclass
class StageResult:
    name: str
    best_step: int
    best_val: float
    steps_done: int                                 # optimizer updates
    stopped_early: bool
    skipped: bool                                   # already finished in an earlier run (resume)
    wall_s: float
    nonfinite_steps: int = 0                        # updates skipped by the NaN guard (whole stage)


def trainable_filter(names):
    return nnx.All(nnx.Param, nnx.Any(*[nnx.PathContains(n) for n in names]))


def param_dict(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def load_param_dict(model: nnx.Module, pure: dict) -> None:
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)


# ------------------------------------------------------------------------------------------------ devices
def make_mesh(data_parallel: int) -> Mesh | None:
    """A 1-D ('data',) mesh over the first ``data_parallel`` local devices; None for one device."""
    n = int(data_parallel)
    if n <= 1:
        return None
    devices = jax.local_devices()
    if n > len(devices):
        raise ConfigError(f"runtime.data_parallel={n} but this machine has {len(devices)} local device(s)")
    return Mesh(np.array(devices[:n]), ("data",))


# ------------------------------------------------------------------------------------------------ the loop
def run_stage(model: nnx.Module, spec: StageSpec, loader, *, prepare_batch: Callable[[dict], dict], workdir,
              logger, seed: int, ckpt_metadata: dict | None = None, keep_latest: int = 2, keep_best: int = 2,
              progress: bool = True, check_resume: Callable[[int, dict], None] | None = None,
              max_steps: int | None = None, on_checkpoint: Callable[[dict], None] | None = None,
              options: LoopOptions | None = None) -> StageResult:
    """Trains ``spec.trainable`` of ``model`` in place; on return the model holds the stage's best EMA params.

    Resumes from the newest readable checkpoint in ``WORKDIR/checkpoints/<stage>`` (same step sequence: params,
    EMA, optimizer, RNG and data-iterator position are restored); ``check_resume(step, state)`` may refuse it
    (``CheckpointError``: written by another config). ``max_steps`` stops early (tests: simulated interruption).
    ``on_checkpoint(info)`` is called after every checkpoint has been fully written (orbax
    ``wait_until_finished``), with ``info = {'stage', 'step', 'finished', 'val_metric', 'metrics', 'dir',
    'kind'}`` (kind: 'eval', 'end', 'resume_point', 'preempt', 'interrupted'): the hook a Ray Tune trial uses to
    report metrics together with a checkpoint directory. Raises ``Preempted`` after the checkpoint of a preemption
    and ``TrainingDiverged`` after ``options.max_nonfinite_steps`` consecutive non-finite updates.

    Updates run ``steps_per_dispatch`` at a time (training/step.py); logging, validation, checkpoints and the
    SIGTERM check happen between dispatches, i.e. on multiples of it (the config checks make it divide every
    cadence, and ``max_steps`` or a stage end off that grid run the remainder one update at a time).
    """
    c, opts = spec.cfg, options or LoopOptions()
    t_start = time.time()
    filt = trainable_filter(spec.trainable)
    _, params, _ = nnx.split(model, filt, ...)
    if not jax.tree.leaves(params):  # a config error (stages.<name>.trainable), not a bug
        raise ConfigError(f"stage {spec.name!r}: stages.{spec.name}.trainable={spec.trainable} selects no "
                          f"parameters")
    tx = make_optimizer(c)
    mngr = ckpt.open_manager(workdir, spec.name, keep_latest=keep_latest, keep_best=keep_best,
                             metadata=ckpt_metadata)
    try:
        result = _run(model, spec, loader, prepare_batch, workdir, logger, seed, mngr, tx, progress, check_resume,
                      max_steps, on_checkpoint, opts, t_start)
        mngr.close()    # waits for a save in flight: a write error surfaces here at the latest
        return result
    except Exception as e:
        try:
            mngr.close()
        except Exception:  # noqa: BLE001 — the same failed save again; the first error is the one reported
            pass
        if isinstance(e, CheckpointError):    # already one line (e.g. a read error on resume): not a failed save
            raise
        message = storage_error_message(e)
        if message is None:
            raise
        done = sorted(int(p.name) for p in ckpt.stage_dir(workdir, spec.name).iterdir() if p.name.isdigit())
        raise CheckpointError(f"writing a checkpoint of stage {spec.name} failed: {message}; the complete checkpoints "
                              f"are untouched (newest: step {done[-1] if done else 'none'}): run the same command "
                              f"again to resume") from e


def _run(model, spec, loader, prepare_batch, workdir, logger, seed, mngr, tx, progress, check_resume, max_steps,
         on_checkpoint, opts: LoopOptions, t_start: float):
    c, name = spec.cfg, spec.name
    total_steps, A = int(c.steps), int(c.accum_steps)
    filt = trainable_filter(spec.trainable)
    step, key = 0, jax.random.key(seed)
    best_val, best_step, evals_since_best, stopped_early = math.inf, -1, 0, False

    def warn_unreadable(msg):
        log.warning(msg)
        logger.log("checkpoint_unreadable", stage=name, message=msg)

    shapes = param_shapes(model)
    opt_like = (lambda: abstract_opt_state(model, spec.trainable, tx))

    def check(step_, state):   # a checkpoint of another config: one line, before any array is read
        ckpt.check_compatible(workdir, name, step_, state, model_shapes=shapes, opt_like=opt_like,
                              stage_cfg=c.to_dict())
        if check_resume is not None:
            check_resume(step_, state)

    found = ckpt.restore_for_resume(mngr, workdir, name, params_like=param_dict(model), opt_like=opt_like,
                                    check=check, warn=warn_unreadable)
    last_saved, resumed = None, None
    if found is not None:
        latest, st, items = found
        if st.get("finished"):
            load_param_dict(model, items["ema"])
            best = mngr.best_step()
            logger.log("stage_skip", stage=name, step=st["step"], best_step=best, reason="finished in an earlier run")
            return StageResult(name, best, st["best_val"], st["step"], st.get("stopped_early", False), True, 0.0,
                               st.get("nonfinite_total", 0))
        ema_model = nnx.merge(*nnx.split(model), copy=True)
        load_param_dict(ema_model, items["ema"])
        load_param_dict(model, items["params"])
        resumed = (nnx.split(ema_model, filt, ...)[1], items["opt"], st)
        step = last_saved = int(st["step"])
        key = jax.random.wrap_key_data(jnp.asarray(np.array(st["rng"], dtype=np.uint32)))
        best_val, best_step = st["best_val"], st["best_step"]
        evals_since_best = st["evals_since_best"]
        loader.restore(st["loader"])
        logger.log("resume", stage=name, step=step)

    mesh = make_mesh(opts.data_parallel)
    per_dispatch = resolve_steps_per_dispatch(opts.steps_per_dispatch, c, opts.checkpoint_every_steps)
    runner = StageStep(model, filt, spec.loss_fn, tx, float(c.ema_decay), loader=loader,
                       prepare_batch=prepare_batch, accum_steps=A, compute_dtype=opts.compute_dtype, mesh=mesh,
                       steps_per_dispatch=per_dispatch)
    if resumed is None:
        train = runner.initial_state()
    else:
        ema_params, opt_saved, st = resumed
        guard = st.get("guard", [0, st.get("nonfinite_total", 0)])
        train = runner.state_from(nnx.split(model, filt, ...)[1], ema_params, opt_saved, guard)
    key = runner.place(key)
    schedule = jax.jit(learning_rate_schedule(c))    # one program (eagerly: ~13, compiled at the first log)
    bar = _progress(total_steps, step, name, progress)
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    fault = fault_from_env()
    pending: list[dict] = []           # the stacked step outputs (device arrays) since the last train record
    t_log, t_ckpt = time.perf_counter(), time.monotonic()
    batch_size = int(c.batch_size)
    watch = RecompileWatch(f"stage {name}")
    log.info(f"[{name}] {runner.num_params:,} trainable parameters; {per_dispatch} update(s) per dispatch"
             + ("" if runner.window is None else "; training split resident on the device"))

    def nonfinite() -> tuple[int, int]:
        consecutive, total = jax.device_get((train.guard.consecutive, train.guard.total))
        return int(consecutive), int(total)

    def stop_if_diverged():
        consecutive, total = nonfinite()
        if consecutive >= opts.max_nonfinite_steps:
            mngr.wait_until_finished()
            where = f"; the newest checkpoint is step {last_saved}" if last_saved is not None else ""
            raise TrainingDiverged(
                f"stage {name}: {consecutive} consecutive non-finite steps (steps {step - consecutive + 1}.."
                f"{step}, each skipped; runtime.max_nonfinite_steps={opts.max_nonfinite_steps}){where}; lower "
                f"stages.{name}.lr, set stages.{name}.grad_clip, or check the data with "
                f"python -m ups_jax.driver validate-data")

    def log_interval():
        nonlocal t_log
        stacked = jax.device_get(pending)   # the only host sync between evals
        pending.clear()
        vals = {k: np.concatenate([np.atleast_1d(o[k]) for o in stacked]) for k in stacked[0]}
        n = len(vals["skipped"])
        now = time.perf_counter()
        sps = n / max(now - t_log, 1e-9)
        t_log = now
        ok = ~vals["skipped"].astype(bool)
        means = {k: float(np.mean(v[ok])) if ok.any() else math.nan for k, v in vals.items() if k != "skipped"}
        consecutive, total = nonfinite()
        if not ok.all():
            log.warning(f"stage {name}: {int((~ok).sum())} non-finite step(s) skipped in steps "
                        f"{step - n + 1}..{step} ({total} in this stage so far)")
        logger.log("train", stage=name, step=step, lr=float(schedule(step - total)), steps_per_sec=sps,
                   samples_per_sec=sps * batch_size * A, step_time_ms=1e3 / sps, skipped_steps=int((~ok).sum()),
                   nonfinite_total=total, **means)
        if bar is not None:
            bar.set_postfix(loss=f"{means['loss']:.3e}", it_s=f"{sps:.1f}")
        watch.check()
        stop_if_diverged()

    def validation_model():
        return nnx.merge(runner.graphdef, runner.unravel(train.ema), runner.rest_state())

    def warm_up():
        """Compiles, right after the first dispatch was issued (on an accelerator, while it runs), everything else
        the stage will run — the validation (its fixed-shape programs, on one padded batch), the checkpoint's
        copies and checks, the log's learning rate — and arms the recompile watch: from here on, any compile is a
        shape or dtype that changed, and is logged."""
        t0 = time.perf_counter()
        getattr(spec.validate, "warm_up", spec.validate)(validation_model())
        t1 = time.perf_counter()
        snapshot()
        float(schedule(0))
        watch.arm()
        log.info(f"[{name}] compiled: the first dispatch {t_first - t_start:.1f} s after stage start, the validation "
                 f"{t1 - t0:.1f} s, the checkpoint's and the log's programs {time.perf_counter() - t1:.1f} s")

    def snapshot():
        """What a checkpoint writes, as fresh arrays: the donated train state may be overwritten while orbax
        still writes them."""
        rest = runner.rest_state()
        return (param_dict(nnx.merge(runner.graphdef, runner.unravel(train.params), rest)),
                param_dict(nnx.merge(runner.graphdef, runner.unravel(train.ema), rest)),
                runner.copy(train.opt), runner.finite(train))

    def checkpoint(kind: str) -> bool:
        """Validates (kind 'eval'/'end'), checkpoints, calls on_checkpoint; True when the stage is over.

        Other kinds ('resume_point', 'preempt', an interruption by max_steps) are resume points only, off the
        eval_every grid: not validated and never a best candidate (val=inf), so that early stopping and the best
        step — and the weights handed to the next stage — are the same as in an uninterrupted run."""
        nonlocal best_val, best_step, evals_since_best, stopped_early, last_saved, t_ckpt
        if kind in ("eval", "end"):
            metrics = spec.validate(validation_model())
            val = float(metrics[spec.val_metric])
            is_best = val < best_val
            if is_best:
                best_val, best_step, evals_since_best = val, step, 0
            else:
                evals_since_best += 1
            if kind == "eval" and c.patience and evals_since_best >= int(c.patience):
                stopped_early = True
            logger.log("val", stage=name, step=step, val_metric=spec.val_metric, is_best=is_best, **metrics)
        else:
            metrics, val = {}, math.inf
        stop_if_diverged()
        finished = kind == "end" or stopped_early
        consecutive, total = nonfinite()
        params, ema, opt_state, finite = snapshot()
        ckpt.save(mngr, step, params=params, ema=ema, opt_state=opt_state, val=val, finite=finite, state=dict(
                      step=step, rng=np.asarray(jax.random.key_data(key)).tolist(), best_val=best_val,
                      best_step=best_step, evals_since_best=evals_since_best, loader=loader.state(),
                      finished=finished, stopped_early=stopped_early, stage=name, metrics=metrics,
                      nonfinite_total=total, guard=[consecutive, total], stage_config=c.to_dict(),
                      format=ckpt.TRAIN_STATE_FORMAT))
        last_saved, t_ckpt = step, time.monotonic()
        watch.check()
        inject_fault(fault, name, step, "save")
        if on_checkpoint is not None or kind == "preempt":
            mngr.wait_until_finished()   # the hook may copy the directory: it must be complete
        if on_checkpoint is not None:
            on_checkpoint({"stage": name, "step": step, "finished": finished, "val_metric": spec.val_metric,
                           "metrics": metrics, "dir": str(ckpt.stage_dir(workdir, name)), "kind": kind})
        return finished

    def preempt(reason: str):
        if step > 0 and step != last_saved:
            checkpoint("preempt")
        mngr.wait_until_finished()
        if pending:
            log_interval()
        logger.log("preempted", stage=name, step=step, reason=reason, checkpoint_step=last_saved)
        saved = (f"checkpoint {ckpt.stage_dir(workdir, name)}/{last_saved} is complete" if last_saved is not None
                 else f"no step of stage {name} was done yet")
        raise Preempted(f"{reason} at stage {name} step {step}: {saved}; run the same command to resume")

    def resume_point_due() -> bool:
        every, minutes = opts.checkpoint_every_steps, opts.checkpoint_every_minutes
        return bool((every and step % every == 0) or (minutes and time.monotonic() - t_ckpt >= 60 * minutes))

    try:
        while step < stop_at:
            reason = preemption.requested()
            if reason:
                preempt(reason)
            # a full dispatch when it fits before the stop, else single updates (max_steps off the grid)
            n = per_dispatch if step % per_dispatch == 0 and step + per_dispatch <= stop_at else 1
            train, out = runner.run(train, key, step, runner.next_inputs(n))
            if watch.base is None:
                t_first = time.time()
                warm_up()
            step += n
            pending.append(out)
            for s in range(step - n + 1, step + 1):
                inject_fault(fault, name, s, "step")
            if step % int(c.log_every) == 0 or step == stop_at:
                log_interval()
            if bar is not None:
                bar.update(n)
            if step < total_steps:
                if step % int(c.eval_every) == 0:
                    if checkpoint("eval"):
                        break
                elif resume_point_due():
                    checkpoint("resume_point")
        reason = preemption.requested()
        if reason and step < total_steps and not stopped_early:
            preempt(reason)
    finally:
        if bar is not None:
            bar.close()
    finished = stopped_early
    if step >= total_steps:
        finished = checkpoint("end")
    elif not stopped_early and step != last_saved and step > 0:   # interrupted (max_steps): keep the resume point
        checkpoint("interrupted")
    mngr.wait_until_finished()
    consecutive, total_nonfinite = nonfinite()
    if finished:
        best, best_ema = ckpt.restore_best_ema(mngr, name, param_dict(model))
        load_param_dict(model, best_ema)
        logger.log("stage_end", stage=name, step=step, best_step=best, best_val=best_val,
                   val_metric=spec.val_metric, stopped_early=stopped_early, nonfinite_total=total_nonfinite,
                   wall_s=time.time() - t_start)
    else:
        nnx.update(model, runner.unravel(train.params))
    return StageResult(name, best_step, best_val, step, stopped_early, False, time.time() - t_start,
                       total_nonfinite)


def abstract_opt_state(model, trainable, tx):
    """The optimizer state a stage training ``trainable`` keeps (shapes only): optax's state over the flat
    parameter vector (training/step.py)."""
    _, params, _ = nnx.split(model, trainable_filter(tuple(trainable)), ...)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return jax.eval_shape(tx.init, jax.ShapeDtypeStruct((n,), jnp.float32))


def _progress(total, initial, name, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, dynamic_ncols=True, mininterval=1.0)
