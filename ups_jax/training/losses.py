"""Stage losses. Every stage runs through the same loop (``loop.run_stage``); stages differ only here.

All losses work on *normalised* fields (train-split z-score) and are averaged MSEs:
- recon:    ‖D(E(u_k)) − u_k‖²                       (codec: the encoder/decoder are trained, not random)
- one_step: ‖D(F(E(u_0))) − u_1‖²                    (decoded one-step prediction, physical space)
- latent:   ‖F(E(u_0)) − sg(E(u_1))‖²                (latent consistency with the encoder's next state)
- rollout:  mean_k ‖D(F^k(E(u_0))) − u_k‖², k=1..K   (unrolled with lax.scan, gradients through the chain)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def make_ups_loss(weights, *, x01: jax.Array, rollout_steps: int, query_points: int = 0):
    """Returns ``loss_fn(model, batch, rng) -> (loss, terms)`` for batch {'u': (B,K+1,X), 'dt': (B,), 'nu': (B,)}."""
    w = {k: float(weights[k]) for k in ("recon", "one_step", "latent", "rollout")}
    need_dynamics = w["one_step"] > 0 or w["latent"] > 0 or w["rollout"] > 0
    K = int(rollout_steps)
    X = int(x01.shape[0])
    Q = int(query_points) if 0 < int(query_points) < X else X

    def loss_fn(model, batch, rng):
        u = batch["u"]
        B = u.shape[0]
        if Q < X:  # random query subset shared by the batch: any-point decoder, cheaper training
            idx = jnp.sort(jax.random.choice(rng, X, (Q,), replace=False))
        else:
            idx = jnp.arange(X)
        xq = x01[idx]
        n_enc = K + 1 if (w["recon"] > 0 or w["latent"] > 0) else 1
        frames = u[:, :n_enc].reshape(B * n_enc, X, 1)
        z_all = model.encode(frames, x01)
        T, D = z_all.shape[-2:]
        z_all = z_all.reshape(B, n_enc, T, D)
        terms = {}
        if w["recon"] > 0:
            rec = model.decode(z_all.reshape(B * n_enc, T, D), xq)[..., 0]
            terms["recon"] = _mse(rec, frames[:, idx, 0])
        if need_dynamics:
            dt, nu = batch["dt"], batch["nu"]

            def body(z, _):
                z = model.step(z, dt, nu)
                return z, z

            _, zs = jax.lax.scan(body, z_all[:, 0], None, length=K)       # (K,B,T,D)
            zs = jnp.swapaxes(zs, 0, 1)                                   # (B,K,T,D)
            if w["one_step"] > 0 or w["rollout"] > 0:
                dec = model.decode(zs.reshape(B * K, T, D), xq)[..., 0].reshape(B, K, -1)
                per_step = jnp.mean(jnp.square(dec - u[:, 1:, idx]), axis=(0, 2))  # (K,)
                terms["one_step"] = per_step[0]
                terms["rollout"] = jnp.mean(per_step)
            if w["latent"] > 0:
                terms["latent"] = _mse(zs[:, 0], jax.lax.stop_gradient(z_all[:, 1]))
        loss = sum(w[k] * v for k, v in terms.items() if w[k] > 0)
        return loss, {f"loss/{k}": v for k, v in terms.items() if w[k] > 0}

    return loss_fn
