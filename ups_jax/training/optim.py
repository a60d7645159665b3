"""Optimiser per stage, entirely from optax: adamw + warmup/cosine schedule + global-norm clipping, and the
warm-up of the parameter EMA (``optax.incremental_update`` in training/step.py). The non-finite guard is a select
in the train step (training/step.py), not ``optax.apply_if_finite``: that one is a ``lax.cond`` whose predicate a
GPU copies to the host every update. Gradient accumulation is done in the train step too (the micro-batches of
one update are scanned and their gradients averaged), so the optimizer state, the EMA, the schedule and every
cadence count optimizer updates."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def learning_rate_schedule(stage_cfg) -> optax.Schedule:
    steps = max(int(stage_cfg.steps), 1)
    warmup = min(int(stage_cfg.warmup_steps), steps - 1) if steps > 1 else 0
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else stage_cfg.lr, peak_value=stage_cfg.lr, warmup_steps=warmup,
        decay_steps=steps, end_value=stage_cfg.lr * stage_cfg.end_lr_factor)


def make_optimizer(stage_cfg) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(stage_cfg.grad_clip) if stage_cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(learning_rate_schedule(stage_cfg), b1=stage_cfg.b1, b2=stage_cfg.b2,
                    weight_decay=stage_cfg.weight_decay),
    )


def ema_decay_at(step, decay: float):
    """Warm-up of the EMA decay, min(decay, (1+t)/(10+t)): without it a 0.999 EMA of a 200-step stage would
    still be ~80 % the random initialisation (the original's EMA had no warm-up)."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))
