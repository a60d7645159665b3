"""Autoregressive rollout of a trained UPS model in physical space, compiled once per (batch, steps) shape.

mode='latent': encode the last given frame once, step in latent space, decode every step (UPT's latent
rollout — the cheap path). mode='reencode': decode → re-encode after every step (slower; keeps the latent
on the encoder's manifold).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def make_rollout_fn(graphdef, mode: str = "latent"):
    if mode not in ("latent", "reencode"):
        raise ValueError(f"eval.rollout_mode={mode!r}: choose 'latent' or 'reencode'")

    @functools.partial(jax.jit, static_argnames=("steps",))
    def rollout(state, u0, nu, dt, x01, steps: int):
        """u0: (B,X) normalised; nu, dt: (B,); returns (B, steps, X) normalised predictions."""
        m = nnx.merge(graphdef, state)
        z0 = m.encode(u0[..., None], x01)

        def latent_body(z, _):
            z = m.step(z, dt, nu)
            return z, m.decode(z, x01)[..., 0]

        def reencode_body(u, _):
            u = m.decode(m.step(m.encode(u[..., None], x01), dt, nu), x01)[..., 0]
            return u, u

        if mode == "latent":
            _, us = jax.lax.scan(latent_body, z0, None, length=steps)
        else:
            _, us = jax.lax.scan(reencode_body, u0, None, length=steps)
        return jnp.swapaxes(us, 0, 1)

    return rollout


class Rollout:
    """Physical-space predictions from a model: normalisation, batching (padded to a fixed batch so the
    rollout compiles once) and de-normalisation live here."""

    def __init__(self, model: nnx.Module, *, norm: dict, x01: np.ndarray, batch_size: int, mode: str = "latent"):
        self.graphdef, self.state = nnx.split(model)
        self.fn = make_rollout_fn(self.graphdef, mode)   # built once: later models reuse the compiled rollout
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.x01 = jnp.asarray(x01, jnp.float32)
        self.batch_size = int(batch_size)

    def set_model(self, model: nnx.Module) -> "Rollout":
        """Swaps in new weights (same architecture) without recompiling."""
        self.state = nnx.state(model)
        return self

    def __call__(self, u0: np.ndarray, nu: np.ndarray, dt: float | np.ndarray, steps: int) -> np.ndarray:
        """u0: (N,X) physical; returns (N, steps, X) physical float32."""
        n = u0.shape[0]
        dt = np.broadcast_to(np.asarray(dt, np.float32), (n,))
        outs = []
        for s in range(0, n, self.batch_size):
            e = min(s + self.batch_size, n)
            pad = self.batch_size - (e - s)
            take = lambda a: np.concatenate([a[s:e], np.repeat(a[e - 1:e], pad, axis=0)]) if pad else a[s:e]
            u = (take(u0).astype(np.float32) - self.mean) / self.std
            pred = self.fn(self.state, jnp.asarray(u), jnp.asarray(take(nu), jnp.float32),
                           jnp.asarray(take(dt), jnp.float32), self.x01, steps=int(steps))
            outs.append(np.asarray(pred)[: e - s])
        return np.concatenate(outs, axis=0) * self.std + self.mean
