"""Optimiser per stage, entirely from optax: adamw + warmup/cosine schedule + global-norm clipping, wrapped in
``optax.apply_if_finite`` (a non-finite gradient skips the update and is counted), and the parameter EMA
(``optax.incremental_update``). Gradient accumulation is done in the train step (``loop.make_train_step``: the
micro-batches of one update are scanned and their gradients averaged), so the optimizer state, the EMA, the
schedule and every cadence count optimizer updates."""

from __future__ import annotations

import jax.numpy as jnp
import optax

# apply_if_finite lets an update through after this many consecutive non-finite ones; the loop stops the run
# much earlier (runtime.max_nonfinite_steps), so a non-finite update is never applied.
_NEVER = 2**30


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
    return optax.apply_if_finite(tx, max_consecutive_errors=_NEVER)


def nonfinite_counts(opt_state) -> tuple:
    """(consecutive, total) skipped non-finite updates, from ``apply_if_finite``'s state (device scalars)."""
    return opt_state.notfinite_count, opt_state.total_notfinite


def last_update_applied(opt_state):
    """True when the last ``tx.update`` was applied (its gradient was finite)."""
    return opt_state.last_finite


def ema_decay_at(step, decay: float):
    """Warm-up of the EMA decay, min(decay, (1+t)/(10+t)): without it a 0.999 EMA of a 200-step stage would
    still be ~80 % the random initialisation (the original's EMA had no warm-up)."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema, params, decay: float, step=None):
    """θ_ema ← d·θ_ema + (1−d)·θ with d = ema_decay_at(step, decay) (or ``decay`` when step is None)."""
    d = decay if step is None else ema_decay_at(step, decay)
    return optax.incremental_update(params, ema, step_size=1.0 - d)
