"""The one generic stage loop. A stage = a loss function, the submodules it trains, and a validation function.

Pattern B from jax-stack-notes §1: ``nnx.split`` the model once into (trainable params, everything else),
then a plain ``jax.jit`` step differentiates the trainable params only — ~3× faster than ``nnx.jit`` for
small models on CPU and identical in NNX graph and tree mode. Frozen teachers/submodules simply live in
``rest``. EMA params are kept beside the live params; validation, checkpoint selection and the weights
handed to the next stage are the EMA ones.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ups_jax.training import checkpoints as ckpt
from ups_jax.training.optim import ema_update, learning_rate_schedule, make_optimizer


@dataclasses.dataclass
class StageSpec:
    name: str
    cfg: Any                                        # cfg.stages[name]
    loss_fn: Callable                               # (model, batch, rng) -> (loss, {name: scalar})
    validate: Callable[[nnx.Module], dict]          # (model with EMA params) -> metrics, incl. val_metric
    val_metric: str                                 # e.g. 'val/nrmse'
    trainable: tuple[str, ...]                      # top-level submodule names trained in this stage


@dataclasses.dataclass
class StageResult:
    name: str
    best_step: int
    best_val: float
    steps_done: int
    stopped_early: bool
    skipped: bool                                   # already finished in an earlier run (resume)
    wall_s: float


def trainable_filter(names):
    return nnx.All(nnx.Param, nnx.Any(*[nnx.PathContains(n) for n in names]))


def param_dict(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def load_param_dict(model: nnx.Module, pure: dict) -> None:
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)


def place_on_device(tree):
    """Commits every array of the train state to this process's first device. Weights restored by orbax (or
    handed on from the previous stage) arrive committed while fresh ones are not; without this, the jitted step
    sees a different input placement on its second call and compiles a second time (a whole operator compile)."""
    return jax.device_put(tree, jax.devices()[0])


def make_train_step(graphdef, loss_fn, tx, ema_decay: float):
    traces = []

    @jax.jit
    def train_step(params, opt_state, ema, rest, batch, rng, step):
        # One compile per stage: a retrace means a batch shape or dtype changed, i.e. a bug that would
        # silently cost a recompile every time. (chex.assert_max_traces counts per code location, so it
        # cannot tell the closures of two stages apart.)
        traces.append(1)
        if len(traces) > 1:
            raise AssertionError("train_step traced twice: batch shapes/dtypes must be fixed within a stage")
        def loss_of(p):
            return loss_fn(nnx.merge(graphdef, p, rest), batch, rng)

        (loss, terms), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = ema_update(ema, params, ema_decay, step)
        return params, opt_state, ema, {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}

    return train_step


def run_stage(model: nnx.Module, spec: StageSpec, loader, *, prepare_batch: Callable[[dict], dict], workdir,
              logger, seed: int, ckpt_metadata: dict | None = None, keep_latest: int = 2, keep_best: int = 2,
              progress: bool = True, check_shapes: Callable | None = None,
              max_steps: int | None = None, on_checkpoint: Callable[[dict], None] | None = None) -> StageResult:
    """Trains ``spec.trainable`` of ``model`` in place; on return the model holds the stage's best EMA params.

    Resumes from ``WORKDIR/checkpoints/<stage>`` if present (same step sequence: params, EMA, optimizer,
    RNG and data-iterator position are restored). ``max_steps`` stops early (tests: simulated interruption).
    ``on_checkpoint(info)`` is called after every checkpoint has been fully written (orbax
    ``wait_until_finished``), with ``info = {'stage', 'step', 'finished', 'val_metric', 'metrics', 'dir'}``:
    the hook a Ray Tune trial uses to report metrics together with a checkpoint directory.
    """
    c = spec.cfg
    total_steps = int(c.steps) * int(c.accum_steps)   # micro-steps; c.steps counts optimizer updates
    t_start = time.time()
    mngr = ckpt.open_manager(workdir, spec.name, keep_latest=keep_latest, keep_best=keep_best,
                             metadata=ckpt_metadata)
    step, rng = 0, jax.random.key(seed)
    best_val, best_step, evals_since_best, stopped_early = math.inf, -1, 0, False

    latest = mngr.latest_step()
    tx = make_optimizer(c)
    if latest is not None:
        if check_shapes is not None:
            check_shapes(spec.name, latest)
        r = ckpt.restore(mngr, latest, params_like=param_dict(model), items=("params", "state"))
        st = r["state"]
        if st.get("finished"):
            best = mngr.best_step()
            load_param_dict(model, ckpt.restore(mngr, best, params_like=param_dict(model), items=("ema",))["ema"])
            logger.log("stage_skip", stage=spec.name, step=st["step"], best_step=best,
                       reason="finished in an earlier run")
            mngr.close()
            return StageResult(spec.name, best, st["best_val"], st["step"], st.get("stopped_early", False),
                               True, 0.0)
        load_param_dict(model, r["params"])

    graphdef, params, rest = nnx.split(model, trainable_filter(spec.trainable), ...)
    if not jax.tree.leaves(params):  # a config error (stages.<name>.trainable), not a bug
        raise ValueError(f"stage {spec.name!r}: trainable={spec.trainable} selects no parameters")
    opt_state = tx.init(params)
    ema = params
    if latest is not None:
        r = ckpt.restore(mngr, latest, params_like=param_dict(model), opt_state_like=opt_state,
                         items=("ema", "opt"))
        ema_model = nnx.merge(graphdef, params, rest, copy=True)   # without copy, merge aliases `params`' Variables
        load_param_dict(ema_model, r["ema"])                          # and this would overwrite them with the EMA
        _, ema, _ = nnx.split(ema_model, trainable_filter(spec.trainable), ...)
        opt_state = r["opt"]
        step = st["step"]
        rng = jax.random.wrap_key_data(jnp.asarray(np.array(st["rng"], dtype=np.uint32)))
        best_val, best_step = st["best_val"], st["best_step"]
        evals_since_best = st["evals_since_best"]
        loader.restore(st["loader"])
        logger.log("resume", stage=spec.name, step=step)

    params, opt_state, ema, rest = place_on_device((params, opt_state, ema, rest))
    train_step = make_train_step(graphdef, spec.loss_fn, tx, float(c.ema_decay))
    schedule = learning_rate_schedule(c)
    bar = _progress(total_steps, step, spec.name, progress)
    it: Iterator = iter(loader)
    t_log, steps_since_log = time.perf_counter(), 0
    batch_size = None
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    start_step = step

    def evaluate_and_checkpoint(end_of_stage: bool, interrupted: bool = False) -> bool:
        """Validates the EMA params, checkpoints, and returns True when the stage is over.

        ``interrupted``: a resume point only (max_steps), off the eval_every grid. It is not validated and never
        a best candidate (val=inf), so that early stopping and the best step — and the weights handed to the
        next stage — are the same as in an uninterrupted run."""
        nonlocal best_val, best_step, evals_since_best, stopped_early
        if interrupted:
            metrics, val = {}, math.inf
        else:
            metrics = spec.validate(nnx.merge(graphdef, ema, rest))
            val = float(metrics[spec.val_metric])
            is_best = val < best_val
            if is_best:
                best_val, best_step, evals_since_best = val, step, 0
            else:
                evals_since_best += 1
            if not end_of_stage and c.patience and evals_since_best >= int(c.patience):
                stopped_early = True
            logger.log("val", stage=spec.name, step=step, val_metric=spec.val_metric, is_best=is_best, **metrics)
        finished = end_of_stage or stopped_early
        ckpt.save(mngr, step, params=param_dict(nnx.merge(graphdef, params, rest)),
                  ema=param_dict(nnx.merge(graphdef, ema, rest)), opt_state=opt_state, val=val, state=dict(
                      step=step, rng=np.asarray(jax.random.key_data(rng)).tolist(), best_val=best_val,
                      best_step=best_step, evals_since_best=evals_since_best, loader=loader.state(),
                      finished=finished, stopped_early=stopped_early, stage=spec.name, metrics=metrics))
        if on_checkpoint is not None:
            mngr.wait_until_finished()   # the hook may copy the directory: it must be complete
            on_checkpoint({"stage": spec.name, "step": step, "finished": finished, "val_metric": spec.val_metric,
                           "metrics": metrics, "dir": str(ckpt.stage_dir(workdir, spec.name))})
        return finished

    while step < stop_at:
        batch = prepare_batch(next(it))
        batch_size = batch["u"].shape[0]
        rng, sub = jax.random.split(rng)
        params, opt_state, ema, out = train_step(params, opt_state, ema, rest, batch, sub, jnp.float32(step))
        step += 1
        steps_since_log += 1
        if step % int(c.log_every) == 0 or step == stop_at:
            out = jax.device_get(out)   # the only host sync between evals
            now = time.perf_counter()
            sps = steps_since_log / (now - t_log)
            t_log, steps_since_log = now, 0
            if not np.isfinite(out["loss"]):
                raise FloatingPointError(f"stage {spec.name}: loss became {out['loss']} at step {step}; "
                                         f"lower stages.{spec.name}.lr or grad_clip")
            logger.log("train", stage=spec.name, step=step, lr=float(schedule(step // int(c.accum_steps))),
                       steps_per_sec=sps, samples_per_sec=sps * batch_size, step_time_ms=1e3 / sps,
                       **{k: float(v) for k, v in out.items()})
            if bar is not None:
                bar.set_postfix(loss=f"{float(out['loss']):.3e}", it_s=f"{sps:.1f}")
        if bar is not None:
            bar.update(1)
        if step % int(c.eval_every) == 0 and step < total_steps:
            if evaluate_and_checkpoint(end_of_stage=False):
                break
    if bar is not None:
        bar.close()
    finished = stopped_early
    if step >= total_steps:
        finished = evaluate_and_checkpoint(end_of_stage=True)
    elif not stopped_early and step % int(c.eval_every) != 0 and step != start_step:   # interrupted
        evaluate_and_checkpoint(end_of_stage=False, interrupted=True)                 # keep the resume point
    mngr.wait_until_finished()
    if finished:
        best = mngr.best_step()
        load_param_dict(model, ckpt.restore(mngr, best, params_like=param_dict(model), items=("ema",))["ema"])
        logger.log("stage_end", stage=spec.name, step=step, best_step=best, best_val=best_val,
                   val_metric=spec.val_metric, stopped_early=stopped_early, wall_s=time.time() - t_start)
    else:
        nnx.update(model, nnx.state(nnx.merge(graphdef, params, rest)))
    mngr.close()
    return StageResult(spec.name, best_step, best_val, step, stopped_early, False, time.time() - t_start)


def _progress(total, initial, name, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, dynamic_ncols=True, mininterval=1.0)
