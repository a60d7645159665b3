"""Stage losses. Every stage runs through the same loop (``loop.run_stage``); stages differ only here.

A batch is ``{'u': (B, h+K, X) or (B, h+K, X, Y), 'dt': (B,), 'nu': (B,)}`` (2-D fields are compared on the
flattened grid, queries are the grid's points, ``data/grids.py``): ``h`` context frames (``model.context_frames``) then
``K`` target frames (``stages.<name>.rollout_steps``). All losses work on *normalised* fields (train-split
z-score) and are averaged MSEs. For UPS, with W_k = frames k..k+h-1 (the window ending at frame k+h-1):

- recon:    ‖D(E(W_k)) − u_{k+h-1}‖², k = 0..K       (codec: the encoder/decoder are trained, not random)
- one_step: ‖D(F(E(W_0))) − u_h‖²                    (decoded one-step prediction, physical space)
- latent:   ‖F(E(W_0)) − sg(E(W_1))‖²                (latent consistency with the encoder's next state)
- rollout:  mean_k ‖D(F^k(E(W_0))) − u_{h+k-1}‖², k=1..K (unrolled with lax.scan, gradients through the chain)

For the FNO baseline (PDEBench ``fno/train.py``, autoregressive training): the sum over the K rolled-out
steps of the per-step MSE, gradients through the whole rollout.

Two stabilisers for long rollouts (Brandstetter, Worrall & Welling 2022), per stage, off by default:
``input_noise`` σ adds N(0, σ²) (normalised units) to the context frames, so that the model learns to correct
perturbed inputs as it meets them at test time; ``pushforward_steps`` P first rolls the model P steps forward
*without* gradient and trains the K steps after that, so that it learns from its own outputs' distribution
(the window is then h + P + K frames and every target shifts by P).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ups_jax.data.grids import grid_points


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def _noisy(u_ctx, sigma: float, rng):
    return u_ctx + sigma * jax.random.normal(rng, u_ctx.shape, u_ctx.dtype) if sigma > 0 else u_ctx


def make_ups_loss(weights, *, x01: jax.Array, rollout_steps: int, query_points: int = 0, context_frames: int = 1,
                  pushforward_steps: int = 0, input_noise: float = 0.0):
    """Returns ``loss_fn(model, batch, rng) -> (loss, terms)`` for batch {'u': (B,h+P+K,X), 'dt': (B,), 'nu': (B,)}."""
    w = {k: float(weights[k]) for k in ("recon", "one_step", "latent", "rollout")}
    need_dynamics = w["one_step"] > 0 or w["latent"] > 0 or w["rollout"] > 0
    K, h, P = int(rollout_steps), int(context_frames), int(pushforward_steps)
    pts = grid_points(x01)           # the grid as query points: (X,) in 1-D, (X·Y, 2) in 2-D
    X = int(pts.shape[0])            # grid points (X·Y in 2-D); targets are compared on the flattened grid
    Q = int(query_points) if 0 < int(query_points) < X else X
    sigma = float(input_noise)

    def loss_fn(model, batch, rng):
        u = batch["u"]
        B, grid = u.shape[0], u.shape[2:]
        uf = u.reshape(u.shape[:2] + (X,))                                   # (B, W, points)
        q_rng, n_rng = jax.random.split(rng)
        if Q < X:  # random query subset shared by the batch: any-point decoder, cheaper training
            idx = jnp.sort(jax.random.choice(q_rng, X, (Q,), replace=False))
        else:
            idx = jnp.arange(X)
        xq = pts[idx]
        terms = {}
        z_next = None   # sg(E(W_{P+1})): the latent term's target
        if w["recon"] > 0:   # the encoder's view of the windows W_0 .. W_{P+K}
            n_enc = P + K + 1
            windows = jnp.stack([u[:, k:k + h] for k in range(n_enc)], axis=1)  # (B, n_enc, h, *grid)
            z_all = model.encode_frames(windows.reshape((B * n_enc, h) + grid), x01)
            T, D = z_all.shape[-2:]
            rec = model.decode(z_all, xq)[..., 0]
            terms["recon"] = _mse(rec, uf[:, h - 1:h - 1 + n_enc][:, :, idx].reshape(B * n_enc, -1))
            z_next = z_all.reshape(B, n_enc, T, D)[:, P + 1]
        elif w["latent"] > 0:   # only the window the latent term compares with (not all P + K + 1)
            z_next = model.encode_frames(u[:, P + 1:P + 1 + h], x01)
        if need_dynamics:
            z0 = model.encode_frames(_noisy(u[:, :h], sigma, n_rng), x01)
            T, D = z0.shape[-2:]
            if P:   # pushforward: start from the model's own P-step prediction, no gradient through it
                z0 = jax.lax.stop_gradient(model.rollout(z0, batch["dt"], batch["nu"], P)[:, -1])
            zs = model.rollout(z0, batch["dt"], batch["nu"], K)                 # (B,K,T,D)
            if w["one_step"] > 0 or w["rollout"] > 0:
                dec = model.decode(zs.reshape(B * K, T, D), xq)[..., 0].reshape(B, K, -1)
                per_step = jnp.mean(jnp.square(dec - uf[:, h + P:h + P + K][:, :, idx]), axis=(0, 2))  # (K,)
                terms["one_step"] = per_step[0]
                terms["rollout"] = jnp.mean(per_step)
            if w["latent"] > 0:
                terms["latent"] = _mse(zs[:, 0], jax.lax.stop_gradient(z_next))
        loss = sum(w[k] * v for k, v in terms.items() if w[k] > 0)
        return loss, {f"loss/{k}": v for k, v in terms.items() if w[k] > 0}

    return loss_fn


def make_fno_loss(*, x01: jax.Array, rollout_steps: int, context_frames: int, pushforward_steps: int = 0,
                  input_noise: float = 0.0):
    """PDEBench's autoregressive FNO loss: Σ_k MSE(pred_k, u_{h+P+k-1}) over the K rolled-out steps."""
    K, h, P, sigma = int(rollout_steps), int(context_frames), int(pushforward_steps), float(input_noise)

    def loss_fn(model, batch, rng):
        u = batch["u"]
        dt, nu = batch["dt"], batch["nu"]
        ctx = _noisy(u[:, :h], sigma, rng)
        if P:
            ctx = jax.lax.stop_gradient(
                jnp.concatenate([ctx, model.rollout_fields(ctx, dt, nu, x01, P)], axis=1)[:, -h:])
        pred = model.rollout_fields(ctx, dt, nu, x01, K)                          # (B, K, *grid)
        err = jnp.square(pred - u[:, h + P:h + P + K])
        per_step = jnp.mean(err.reshape(err.shape[:2] + (-1,)), axis=(0, 2))
        return jnp.sum(per_step), {"loss/one_step": per_step[0], "loss/rollout": jnp.mean(per_step)}

    return loss_fn


def make_stage_loss(cfg, stage_cfg, *, x01: jax.Array):
    """The loss of one stage of ``cfg`` (dispatch on ``model.kind``)."""
    from ups_jax.models import context_frames, model_kind

    common = dict(x01=x01, rollout_steps=stage_cfg.rollout_steps, context_frames=context_frames(cfg),
                  pushforward_steps=stage_cfg.pushforward_steps, input_noise=stage_cfg.input_noise)
    if model_kind(cfg) == "fno":
        return make_fno_loss(**common)
    return make_ups_loss(stage_cfg.losses, query_points=stage_cfg.query_points, **common)

