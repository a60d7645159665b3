"""Autoregressive rollout of a trained model in physical space, compiled once per (batch, steps) shape.

Works for every model with the surrogate interface ``rollout_fields(u_ctx, dt, nu, x01, steps, mode)`` (UPS and
the FNO baseline): the model reads its ``context_frames`` last given frames and predicts the following ones.
For UPS, ``mode='latent'`` encodes once and steps in latent space (UPT's latent rollout, the cheap path);
``'reencode'`` decodes and re-encodes after every step.
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
    def rollout(state, u_ctx, nu, dt, x01, steps: int):
        """u_ctx: (B, h, X) normalised; nu, dt: (B,); returns (B, steps, X) normalised predictions."""
        return nnx.merge(graphdef, state).rollout_fields(u_ctx, dt, nu, x01, steps, mode=mode)

    return rollout


class Rollout:
    """Physical-space predictions from a model: normalisation, context slicing, batching (padded to a fixed batch
    so the rollout compiles once) and de-normalisation live here."""

    def __init__(self, model: nnx.Module, *, norm: dict, x01: np.ndarray, batch_size: int, mode: str = "latent"):
        self.graphdef, self.state = nnx.split(model)
        self.fn = make_rollout_fn(self.graphdef, mode)   # built once: later models reuse the compiled rollout
        self.context_frames = int(getattr(model, "context_frames", 1))
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.x01 = jnp.asarray(x01, jnp.float32)
        self.batch_size = int(batch_size)

    def set_model(self, model: nnx.Module) -> "Rollout":
        """Swaps in new weights (same architecture) without recompiling."""
        self.state = nnx.state(model)
        return self

    def __call__(self, given: np.ndarray, nu: np.ndarray, dt: float | np.ndarray, steps: int) -> np.ndarray:
        """given: (N, G, X) physical frames (G >= context_frames; the model reads the last ``context_frames``) or
        (N, X) for a single frame; returns the next ``steps`` frames, (N, steps, X) physical float32."""
        given = np.asarray(given)
        if given.ndim == 2:
            given = given[:, None]
        h = self.context_frames
        if given.shape[1] < h:
            raise ValueError(f"the model reads {h} context frames but only {given.shape[1]} are given")
        ctx = given[:, given.shape[1] - h:]
        n = ctx.shape[0]
        dt = np.broadcast_to(np.asarray(dt, np.float32), (n,))
        nu = np.broadcast_to(np.asarray(nu, np.float32), (n,))
        outs = []
        for s in range(0, n, self.batch_size):
            e = min(s + self.batch_size, n)
            pad = self.batch_size - (e - s)
            take = lambda a: np.concatenate([a[s:e], np.repeat(a[e - 1:e], pad, axis=0)]) if pad else a[s:e]
            u = (take(ctx).astype(np.float32) - self.mean) / self.std
            pred = self.fn(self.state, jnp.asarray(u), jnp.asarray(take(nu), jnp.float32),
                           jnp.asarray(take(dt), jnp.float32), self.x01, steps=int(steps))
            outs.append(np.asarray(pred)[: e - s])
        return np.concatenate(outs, axis=0) * self.std + self.mean
