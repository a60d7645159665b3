"""Optimiser per stage, entirely from optax: adamw + warmup/cosine schedule + global-norm clipping,
optional gradient accumulation (optax.MultiSteps), parameter EMA (optax.incremental_update)."""

from __future__ import annotations

import optax


def learning_rate_schedule(stage_cfg) -> optax.Schedule:
    steps = max(int(stage_cfg.steps), 1)
    warmup = min(int(stage_cfg.warmup_steps), steps - 1) if steps > 1 else 0
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else stage_cfg.lr, peak_value=stage_cfg.lr, warmup_steps=warmup,
        decay_steps=steps, end_value=stage_cfg.lr * stage_cfg.end_lr_factor)


def make_optimizer(stage_cfg) -> optax.GradientTransformation:
    tx = optax.chain(
        optax.clip_by_global_norm(stage_cfg.grad_clip) if stage_cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(learning_rate_schedule(stage_cfg), b1=stage_cfg.b1, b2=stage_cfg.b2,
                    weight_decay=stage_cfg.weight_decay),
    )
    if stage_cfg.accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(stage_cfg.accum_steps))
    return tx


def ema_update(ema, params, decay: float):
    """θ_ema ← decay·θ_ema + (1−decay)·θ."""
    return optax.incremental_update(params, ema, step_size=1.0 - decay)
