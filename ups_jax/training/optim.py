"""Optimiser per stage, entirely from optax, and the warm-up of the parameter EMA (``optax.incremental_update``
in training/step.py). The non-finite guard is a select in the train step (training/step.py), not
``optax.apply_if_finite``: that one is a ``lax.cond`` whose predicate a GPU copies to the host every update.
Gradient accumulation is done in the train step too (the micro-batches of one update are scanned and their
gradients averaged), so the optimizer state, the EMA, the schedule and every cadence count optimizer updates.

Per stage (``stages.<name>``):

* ``optimizer``: ``'adamw'`` (decoupled weight decay, the default) or ``'adam_l2'`` — torch's
  ``Adam(weight_decay=wd)``: ``wd · θ`` is added to the gradient *before* the moments
  (``optax.chain(add_decayed_weights, adam)``), PDEBench's FNO recipe.
* ``schedule``: ``'warmup_cosine'`` (linear warm-up over ``warmup_steps``, cosine to ``lr · end_lr_factor`` at
  ``steps``; the default) or ``'step'`` — torch's ``StepLR``: ``lr · lr_gamma^⌊update / lr_step_every⌋``
  (PDEBench: ×0.5 every 100 epochs; ``lr_step_every`` counts updates, so 100 epochs = 100 × updates per epoch).
* ``ema_decay = 0`` turns the EMA off: the EMA then *is* the parameters (validation, checkpoints and the next
  stage use the raw weights).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from ups_jax.stage_kinds import OPTIMIZERS, SCHEDULES  # noqa: F401  (the vocabulary, below the checks)


def learning_rate_schedule(stage_cfg) -> optax.Schedule:
    kind = stage_cfg.get("schedule", "warmup_cosine")
    if kind == "step":
        return optax.exponential_decay(init_value=stage_cfg.lr, transition_steps=int(stage_cfg.lr_step_every),
                                       decay_rate=float(stage_cfg.lr_gamma), staircase=True)
    if kind != "warmup_cosine":
        raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")   # the config checks refuse it
    steps = max(int(stage_cfg.steps), 1)
    warmup = min(int(stage_cfg.warmup_steps), steps - 1) if steps > 1 else 0
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else stage_cfg.lr, peak_value=stage_cfg.lr, warmup_steps=warmup,
        decay_steps=steps, end_value=stage_cfg.lr * stage_cfg.end_lr_factor)


def make_optimizer(stage_cfg) -> optax.GradientTransformation:
    kind = stage_cfg.get("optimizer", "adamw")
    schedule = learning_rate_schedule(stage_cfg)
    if kind == "adamw":
        core = optax.adamw(schedule, b1=stage_cfg.b1, b2=stage_cfg.b2, weight_decay=stage_cfg.weight_decay)
    elif kind == "adam_l2":
        core = optax.chain(optax.add_decayed_weights(stage_cfg.weight_decay),
                           optax.adam(schedule, b1=stage_cfg.b1, b2=stage_cfg.b2))
    else:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")  # the config checks refuse it
    return optax.chain(
        optax.clip_by_global_norm(stage_cfg.grad_clip) if stage_cfg.grad_clip > 0 else optax.identity(),
        core,
    )


def ema_decay_at(step, decay: float):
    """Warm-up of the EMA decay, min(decay, (1+t)/(10+t)): without it a 0.999 EMA of a 200-step stage would
    still be ~80 % the random initialisation (the original's EMA had no warm-up). ``decay = 0``: no EMA."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))
