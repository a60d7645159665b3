"""The stage registry: stage name → loss builder, training window, the submodules its loss uses, its validator.

Every stage runs through the one loop (``loop.run_stage``); what differs is listed here, so the pipeline, the
driver's ``validate`` and ``dry-run`` read the same table instead of if-chains:

====================  ==========================================  ===============================  =================
stage                 loss (normalised fields)                    frozen teachers it needs         validation (val)
====================  ==========================================  ===============================  =================
codec                 losses.make_ups_loss (reconstruction)       —                                recon nRMSE
operator / fno /     losses.make_stage_loss (one-step, rollout)  encoder, decoder (operator)      rollout nRMSE
hybrid
corrector             refiner_losses: denoising (v-prediction)    encoder, operator                rollout nRMSE +corrector
 (kind 'field')       refiner_losses: corrected pushforward pairs encoder, operator, decoder       rollout nRMSE +corrector
student               refiner_losses: distillation               encoder, operator, corrector     rollout nRMSE +student
steady                refiner_losses: final frame                 encoder, decoder                 final-frame nRMSE
====================  ==========================================  ===============================  =================

"Frozen teachers" are the submodules the loss evaluates without training (``uses − trainable``); a stage may only
start when an earlier stage of the run trained each of them (``plan_stages``), never on random weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax import stage_kinds
from ups_jax.errors import CheckpointError, ConfigError
from ups_jax.eval.evaluate import score
from ups_jax.eval.metrics import per_sample_nrmse as _nrmse
from ups_jax.eval.rollout import Rollout
from ups_jax.stage_kinds import teachers
from ups_jax.training import checkpoints as ckpt
from ups_jax.training import refiner_losses
from ups_jax.training.losses import make_stage_loss

BASELINE = "baseline"   # pseudo-stage name for run selection: the FNO baseline run (cfg.baseline)


@dataclasses.dataclass(frozen=True)
class StageKind:
    """A stage's training parts. Its name, the submodules it uses and its window are ``ups_jax.stage_kinds``
    (read by the config checks without importing training)."""
    name: str
    loss: Callable          # (cfg, stage_cfg, x01, norm=None) -> loss_fn(model, batch, rng)
    validator: str          # 'recon' | 'rollout' | 'steady'
    refine: str = "none"    # the rollout validated: 'none' | 'corrector' | 'student'
    prepare: Callable | None = None   # (model) -> None before training (the student starts as its teacher)

    def uses(self, cfg, sc) -> set[str]:
        return stage_kinds.STAGES[self.name][0](cfg, sc)

    def window(self, cfg, sc, nt) -> int:
        return stage_kinds.STAGES[self.name][1](cfg, sc, nt)


def _student_init(model):
    from ups_jax.models.corrector import copy_weights

    copy_weights(model.corrector, model.student)   # a resumed or finished stage restores its own weights after


def _core_loss(cfg, sc, x01, norm=None):
    return make_stage_loss(cfg, sc, x01=x01, norm=norm)


def _refiner_loss(make, **stage_keys):
    """loss(cfg, sc, x01) for a refiner: ``make(x01=, context_frames=, **{arg: sc[key]})``."""
    return lambda cfg, sc, x01, norm=None: make(x01=x01, context_frames=stage_kinds.context_frames_of(cfg),
                                     **{arg: sc[key] for arg, key in stage_keys.items()})


def _corrector_loss(cfg, sc, x01, norm=None):
    """The latent diffusion corrector's denoising loss, or the field corrector's loss on pushforward pairs of the
    corrected rollout (``model.corrector.kind``)."""
    from ups_jax.models.field_corrector import corrector_kind

    if corrector_kind(cfg.model) == "field":
        return refiner_losses.make_field_corrector_loss(
            x01=x01, context_frames=stage_kinds.context_frames_of(cfg), pushforward_steps=sc.pushforward_steps,
            rollout_loss=str(sc.get("rollout_loss", "mse")), norm=norm)
    return _refiner_loss(refiner_losses.make_corrector_loss, pushforward_steps="pushforward_steps")(cfg, sc, x01)


KINDS: dict[str, StageKind] = {k.name: k for k in (
    StageKind("codec", _core_loss, validator="recon"),
    StageKind("operator", _core_loss, validator="rollout"),
    StageKind("fno", _core_loss, validator="rollout"),
    StageKind("hybrid", _core_loss, validator="rollout"),
    StageKind("corrector", _corrector_loss, validator="rollout", refine="corrector"),
    StageKind("student", _refiner_loss(refiner_losses.make_student_loss, pushforward_steps="pushforward_steps"),
              validator="rollout", refine="student", prepare=_student_init),
    StageKind("steady", _refiner_loss(refiner_losses.make_steady_loss, latent_weight="latent_weight"),
              validator="steady"),
)}
assert set(KINDS) == set(stage_kinds.STAGES), "ups_jax/stage_kinds.py and KINDS must name the same stages"


def stage_kind(name: str) -> StageKind:
    stage_kinds.check_known(name)
    return KINDS[name]


# ---------------------------------------------------------------------------------------------------------------
# which stages run, which are done (resume), which teachers exist
# ---------------------------------------------------------------------------------------------------------------

def finished_state(workdir, name: str) -> dict | None:
    """The JSON state of stage ``name``'s newest readable checkpoint when it marks the stage finished, else None."""
    if not ckpt.stage_dir(workdir, name).is_dir():
        return None
    mngr = ckpt.open_manager(workdir, name, read_only=True)
    try:
        found = ckpt.newest_readable_state(mngr)
    finally:
        mngr.close()
    return found[1] if found is not None and found[1].get("finished") else None


def stage_finished(workdir, name: str) -> bool:
    """True when ``WORKDIR/checkpoints/<name>`` holds the checkpoint of a finished stage."""
    return finished_state(workdir, name) is not None


def restore_modules(model, workdir, name: str, modules, *, step: int | None = None) -> int:
    """Loads ``modules`` (top-level submodule names) of ``model`` from the best (or ``step``) EMA checkpoint of
    stage ``name`` and only those, so that every module comes from the stage that trained it (a stage finished
    before another run retrained an earlier module never brings back its stale copy). Returns the step."""
    from ups_jax.training.loop import load_param_dict, param_dict

    pure = param_dict(model)
    mngr = ckpt.open_manager(workdir, name, read_only=True)
    try:
        # the modules not loaded are read as the checkpoint holds them: a stage's stale copy of a module it does
        # not train may have another layout (e.g. the latent corrector in an operator checkpoint, loaded into a
        # model with model.corrector.kind='field')
        at = mngr.best_step() if step is None else step
        target = {k: (pure[k] if k in modules else v)
                  for k, v in ckpt.checkpoint_like(workdir, name, at, "ema").items()}
        if step is None:
            step, ema = ckpt.restore_best_ema(mngr, name, target)   # one-line CheckpointError when unreadable
        else:
            ema = ckpt.restore(mngr, step, params_like=target, items=("ema",))["ema"]
    finally:
        mngr.close()
    for module in modules:
        pure[module] = ema[module]
    load_param_dict(model, pure)
    return step


def restore_finished(model, workdir, name: str, trainable, logger=None):
    """A finished stage, skipped: its trained modules from its best EMA; returns its ``StageResult``."""
    from ups_jax.training.loop import StageResult

    best = restore_modules(model, workdir, name, trainable)
    st = finished_state(workdir, name)
    if logger is not None:
        logger.log("stage_skip", stage=name, step=st["step"], best_step=best, reason="finished in an earlier run")
    return StageResult(name, best, st["best_val"], st["step"], st.get("stopped_early", False), True, 0.0,
                       st.get("nonfinite_total", 0))


def selected_stages(cfg, selection) -> tuple[str, ...]:
    """The run's selection (``--stages a,b``) checked against ``stage_order`` (+ 'baseline'); () = everything."""
    sel = tuple(s for s in (selection or ()) if s)
    known = tuple(cfg.stage_order) + (BASELINE,)
    bad = [s for s in sel if s not in known]
    if bad:
        raise ConfigError(f"--stages names {', '.join(map(repr, bad))}, not in stage_order; choose from "
                          f"{', '.join(known)}")
    return sel


def plan_stages(cfg, workdir, selection=()) -> dict[str, str]:
    """{stage: 'finished' | 'run' | 'not selected'} in stage order. Raises CheckpointError (before anything is
    written) when a stage to run needs a frozen teacher that no finished or earlier selected stage trains."""
    sel = selected_stages(cfg, selection)
    plan, trained_by = {}, {}
    for name in cfg.stage_order:
        stage_kind(name)
        sc = cfg.stages[name]
        if stage_finished(workdir, name):
            plan[name] = "finished"
        elif not sel or name in sel:
            missing = sorted(teachers(cfg, name) - set(trained_by))
            if missing:
                m = missing[0]
                owner = next((s for s in cfg.stage_order if m in cfg.stages[s].trainable), None)
                where = f"{Path(workdir) / 'checkpoints' / owner}" if owner else "the stage order"
                raise CheckpointError(
                    f"stage {name!r} needs the trained {m} as its frozen teacher, but "
                    + (f"stage {owner!r} has no finished checkpoint in {where}; run it first (--stages "
                       f"{owner},{name}, or every stage)" if owner else "no stage in stage_order trains it "
                                                                       "(stages.<name>.trainable)"))
            plan[name] = "run"
        else:
            plan[name] = "not selected"
        if plan[name] != "not selected":
            for m in sc.trainable:
                trained_by.setdefault(m, name)
    return plan


# ---------------------------------------------------------------------------------------------------------------
# validators (val split, never test)
# ---------------------------------------------------------------------------------------------------------------

def make_validator(name: str, cfg, data, model):
    """(validate(model) -> metrics, the metric that selects the best checkpoint) for stage ``name``.

    ``validate.warm_up(model)`` runs the smallest validation that calls every compiled program of the real one with
    the same shapes (one padded batch): the loop calls it at stage start, so that the first validation compiles
    nothing and any later compile is a recompile (training/loop.py)."""
    kind = stage_kind(name)
    traj, nu = data.trajectories("val", cfg.eval.val_max_trajectories)
    if kind.validator == "recon":
        return _recon_validator(traj, data, model)
    if kind.validator == "steady":
        return _steady_validator(traj, nu, data, model)
    return _rollout_validator(cfg, traj, nu, data, model, kind.refine)


def _recon_validator(traj, data, model):
    graphdef, _ = nnx.split(model)
    x01 = jnp.asarray(data.x01)
    h = int(model.context_frames)

    @jax.jit
    def recon(state, u_ctx):
        m = nnx.merge(graphdef, state)
        return m.decode(m.encode_frames(u_ctx, x01), x01)[..., 0]

    # windows of h frames ending every ⌊T/8⌋-th frame of every val trajectory (9 frames for T = 41 or 201, h = 1);
    # the target is the newest
    ends = np.arange(h - 1, traj.shape[1], max(1, traj.shape[1] // 8))
    windows = np.stack([traj[:, e - h + 1:e + 1] for e in ends], 1).reshape(-1, h, traj.shape[-1])
    frames = windows[:, -1]                                                          # physical
    mean, std = data.norm["mean"], data.norm["std"]
    normed = jnp.asarray((windows - mean) / std, jnp.float32)

    def validate(m):
        pred = np.asarray(recon(nnx.state(m), normed)) * std + mean
        return {"val/recon_nrmse": float(np.mean(_nrmse(pred, frames)))}

    validate.warm_up = validate          # one call of one shape: the warm-up is the validation
    return validate, "val/recon_nrmse"


def _rollout_validator(cfg, traj, nu, data, model, refine: str):
    dt = float(data.dataset.dt)
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(traj)),
                      mode=cfg.eval.rollout_mode, refine=refine, seed=cfg.seed)
    start = cfg.eval.initial_step - 1

    def validate(m, n: int | None = None):
        # the same per-trajectory definition as the test evaluation (eval.evaluate.score)
        model_m, pers_m, _ = score(rollout.set_model(m), traj[:n], nu[:n], dt, start, batch_size=len(traj))
        return {"val/nrmse": model_m["nrmse"], "val/persistence_nrmse": pers_m["nrmse"]}

    # one trajectory, padded to the rollout's fixed batch like every batch of the real validation
    validate.warm_up = lambda m: validate(m, 1)
    return validate, "val/nrmse"


def steady_predictor(model, data, batch_size: int):
    """predict(ctx (N, h, X) physical, ν (N,), horizon) → the prior's state at the horizon (N, X) physical,
    compiled once, in fixed-size padded batches."""
    graphdef, _ = nnx.split(model)
    x01 = jnp.asarray(data.x01)
    mean, std = float(data.norm["mean"]), float(data.norm["std"])

    @jax.jit
    def run(state, u_ctx, horizon, nu):
        return nnx.merge(graphdef, state).steady_state(u_ctx, x01, horizon, nu)

    def predict(m, ctx, nu, horizon):
        out = []
        for s in range(0, len(ctx), batch_size):
            c, n = ctx[s:s + batch_size], nu[s:s + batch_size]
            pad = batch_size - len(c)
            if pad:
                c, n = np.concatenate([c, np.repeat(c[-1:], pad, 0)]), np.concatenate([n, np.repeat(n[-1:], pad)])
            u = jnp.asarray((c - mean) / std, jnp.float32)
            res = run(nnx.state(m), u, jnp.full((batch_size,), horizon, jnp.float32), jnp.asarray(n, jnp.float32))
            out.append(np.asarray(res)[:batch_size - pad] * std + mean)
        return np.concatenate(out)

    return predict


def _steady_validator(traj, nu, data, model):
    h = int(model.context_frames)
    horizon = (traj.shape[1] - h) * float(data.dataset.dt)
    predict = steady_predictor(model, data, batch_size=len(traj))

    def validate(m):
        pred = predict(m, traj[:, :h], nu, horizon)
        return {"val/final_nrmse": float(np.mean(_nrmse(pred, traj[:, -1]))),
                "val/persistence_final_nrmse": float(np.mean(_nrmse(traj[:, h - 1], traj[:, -1])))}

    validate.warm_up = validate          # one padded batch: the warm-up is the validation
    return validate, "val/final_nrmse"
