"""Losses of the stages after the operator: the diffusion residual corrector, its distilled student, the steady
prior. Each trains one submodule (``stages.<name>.trainable``) with the earlier ones frozen as teachers; they run
through the one stage loop (``loop.run_stage``) like every other stage.

Batches are ``{'u': (B, W, X) normalised, 'dt': (B,), 'nu': (B,)}`` windows of the train split.

* corrector (W = h + P + 1): the frozen encoder + operator give, for a random depth p ∈ 0..P per sample, the
  operator's own p-step latent state z_t (pushforward: the corrector meets drifted states at test time), its
  prediction z̃ = F(z_t) and the encoder's latent of the true next window z* = E(W_{p+1}). Denoising objective
  (v-prediction) on x₀ = (z* − z̃)/residual_scale at a uniformly drawn level k (models/corrector.py).
* student (same windows): the frozen corrector's K+1-call clean estimate x̂₀ᵀ from the level-0 noise ε₀ (its
  sampler is deterministic given ε₀) is the target of the student's S-call estimate from the same ε₀:
  ‖x̂₀ˢ − sg(x̂₀ᵀ)‖² (distillation against the teacher's outputs, not the data; the original's "distillation" only
  pushed its output to zero, ups-original.md §5.5).
* steady (W = the whole trajectory): z_T = prior(E(first h frames), horizon, ν) decoded by the frozen decoder
  against the final frame, plus ``latent_weight`` · ‖z_T − sg(E(last h frames))‖².
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def pushforward_pairs(model, batch, rng, *, x01, context_frames: int, pushforward_steps: int):
    """(z_t, z̃ = F(z_t), z* = E(true next window)), all without gradient; z_t is the operator's own p-step
    prediction from the encoded first window, p ~ U{0..P} per sample."""
    u, dt, nu = batch["u"], batch["dt"], batch["nu"]
    h, P = int(context_frames), int(pushforward_steps)
    B, grid = u.shape[0], u.shape[2:]                                               # grid: (X,) or (X, Y)
    windows = jnp.stack([u[:, k:k + h] for k in range(P + 2)], axis=1)            # (B, P+2, h, *grid)
    z_enc = model.encode_frames(windows.reshape((B * (P + 2), h) + grid), x01)
    z_enc = z_enc.reshape((B, P + 2) + z_enc.shape[1:])                             # (B, P+2, T, D)
    states = z_enc[:, :1]
    if P:
        states = jnp.concatenate([states, model.rollout(z_enc[:, 0], dt, nu, P)], axis=1)   # (B, P+1, T, D)
    p = jax.random.randint(rng, (B,), 0, P + 1)
    rows = jnp.arange(B)
    z_t = states[rows, p]
    z_pred = model.step(z_t, dt, nu)
    return tuple(jax.lax.stop_gradient(a) for a in (z_t, z_pred, z_enc[rows, p + 1]))


def make_corrector_loss(*, x01, context_frames: int, pushforward_steps: int):
    def loss_fn(model, batch, rng):
        r_p, r_k, r_e = jax.random.split(rng, 3)
        z_t, z_pred, z_true = pushforward_pairs(model, batch, r_p, x01=x01, context_frames=context_frames,
                                                pushforward_steps=pushforward_steps)
        net = model.corrector
        x0 = (z_true - z_pred) / net.residual_scale
        k = jax.random.randint(r_k, (x0.shape[0],), 0, len(net.sigmas))
        a, s = (v[:, None, None] for v in net.alpha_sigma(k))
        eps = jax.random.normal(r_e, x0.shape, x0.dtype)
        v_hat = net.velocity(a * x0 + s * eps, k, z_t, z_pred, batch["dt"], batch["nu"])
        loss = _mse(v_hat, a * eps - s * x0)
        # diagnostic: the residual's RMS in units of residual_scale (≈ 1 when the scale fits)
        x0_rms = jnp.sqrt(jnp.mean(jnp.square(x0)))
        return loss, {"loss/denoise": loss, "diag/residual_rms_scaled": x0_rms}

    return loss_fn


def make_student_loss(*, x01, context_frames: int, pushforward_steps: int):
    def loss_fn(model, batch, rng):
        r_p, r_n = jax.random.split(rng)
        z_t, z_pred, _ = pushforward_pairs(model, batch, r_p, x01=x01, context_frames=context_frames,
                                           pushforward_steps=pushforward_steps)
        teacher, student = model.corrector, model.student
        eps0 = jax.random.normal(r_n, z_pred.shape, z_pred.dtype)
        target = jax.lax.stop_gradient(teacher.clean_estimate(z_t, z_pred, batch["dt"], batch["nu"], eps0))
        loss = _mse(student.clean_estimate(z_t, z_pred, batch["dt"], batch["nu"], eps0), target)
        return loss, {"loss/distill": loss}

    return loss_fn


def make_steady_loss(*, x01, context_frames: int, latent_weight: float):
    h, lw = int(context_frames), float(latent_weight)

    def loss_fn(model, batch, rng):
        del rng
        u, dt, nu = batch["u"], batch["dt"], batch["nu"]
        horizon = (u.shape[1] - h) * dt                       # from the last context frame to the final frame
        z0 = jax.lax.stop_gradient(model.encode_frames(u[:, :h], x01))
        z_hat = model.steady(z0, horizon, nu)
        field = model.decode(z_hat, x01)[..., 0]
        terms = {"loss/final_field": _mse(field, u[:, -1])}
        loss = terms["loss/final_field"]
        if lw > 0:
            terms["loss/final_latent"] = _mse(z_hat, jax.lax.stop_gradient(model.encode_frames(u[:, -h:], x01)))
            loss = loss + lw * terms["loss/final_latent"]
        return loss, terms

    return loss_fn


def make_field_corrector_loss(*, x01, context_frames: int, pushforward_steps: int, rollout_loss: str = "mse",
                              norm: dict | None = None):
    """The field corrector (``model.corrector.kind='field'``, models/field_corrector.py) on pushforward pairs of
    the *corrected* rollout: from the given frames, the frozen operator + decoder and the current corrector roll P
    corrected steps without gradient (state (z, û)); the state after p ~ U{0..P} of them (per window; 0 = the true
    state) takes one more corrected step, trained against the true next frame — so the corrector learns to correct
    its own drift, which the probe's true-state-only fit did not (its gain faded over the rollout).

    ``rollout_loss`` 'mse' (normalised units) or 'rel_l2' (per-frame relative L2 in physical units, what nRMSE
    measures; needs the train split's ``norm``), as the operator stage's option (training/losses.py). Logs the
    same loss of the uncorrected step D(F(z)) on the same pairs (``diag/uncorrected``): the corrector's gain."""
    from ups_jax.errors import ConfigError
    from ups_jax.models.field_corrector import decode_grid, field_states

    h, P = int(context_frames), int(pushforward_steps)
    if rollout_loss == "rel_l2":
        if norm is None:
            raise ConfigError("rollout_loss='rel_l2' needs the train split's normalisation (norm={'mean', 'std'})")
        offset = float(norm["mean"]) / float(norm["std"])

        def frame_loss(pred, true):   # (B, points) normalised → mean relative L2 in physical units
            err = jnp.sqrt(jnp.sum(jnp.square(pred - true), axis=-1) + 1e-12)
            return jnp.mean(err / jnp.sqrt(jnp.sum(jnp.square(true + offset), axis=-1) + 1e-12))
    elif rollout_loss == "mse":
        def frame_loss(pred, true):
            return _mse(pred, true)
    else:
        raise ConfigError(f"stages.corrector.rollout_loss={rollout_loss!r}: choose 'mse' or 'rel_l2'")

    def loss_fn(model, batch, rng):
        u, dt, nu = batch["u"], batch["dt"], batch["nu"]
        B = u.shape[0]
        rows = jnp.arange(B)
        p = jax.random.randint(rng, (B,), 0, P + 1)
        zs, ctxs, _ = field_states(model, u[:, :h], dt, nu, x01, P)              # P corrected steps
        z_t, ctx_t = jax.lax.stop_gradient(zs[rows, p]), jax.lax.stop_gradient(ctxs[rows, p])
        decoded = jax.lax.stop_gradient(decode_grid(model, model.step(z_t, dt, nu), x01))
        pred = model.corrector(ctx_t[:, -1], decoded, nu)
        true = u[rows, h + p]
        flat = lambda a: a.reshape(B, -1)
        loss = frame_loss(flat(pred), flat(true))
        return loss, {"loss/field": loss, "diag/uncorrected": frame_loss(flat(decoded), flat(true)),
                      "diag/pushforward_depth": jnp.mean(p.astype(jnp.float32))}

    return loss_fn
