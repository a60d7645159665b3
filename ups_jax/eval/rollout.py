"""Autoregressive rollout of a trained model in physical space, compiled once per (batch, steps) shape.

Works for every model with the surrogate interface ``rollout_fields(u_ctx, dt, nu, x01, steps, mode)`` (UPS and
the FNO baseline): the model reads its ``context_frames`` last given frames and predicts the following ones.
For UPS, ``mode='latent'`` encodes once and steps in latent space (UPT's latent rollout, the cheap path);
``'reencode'`` decodes and re-encodes after every step. ``refine='corrector'|'student'`` adds the predictor–corrector
refinement (models/corrector.py) with noise keyed by ``seed`` and the trajectory's index (``first_index`` + its row):
a trajectory's prediction does not depend on the batch size or on which batch it falls in.
Subclasses replace the jitted function (``_make_fn``) and keep the batching: inference/ttc.py::TTCRollout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.lru_cache(maxsize=16)
def make_rollout_fn(graphdef, mode: str = "latent", refine: str = "none"):
    """The jitted rollout of one architecture (``graphdef``: hashable), shared by every ``Rollout`` of it, so that
    validation, the test evaluation and the comparison table compile each (batch, steps) shape once."""
    if mode not in ("latent", "reencode"):
        raise ValueError(f"eval.rollout_mode={mode!r}: choose 'latent' or 'reencode'")
    kw = {} if refine == "none" else {"refine": refine}

    def batch(m, u_ctx, nu, dt, x01, rng, xq01, steps):
        extra = dict(kw, rng=rng) if kw else {}
        if xq01 is None:
            return m.rollout_fields(u_ctx, dt, nu, x01, steps, mode=mode, **extra)
        if mode != "latent":
            raise ValueError("output at query points needs eval.rollout_mode='latent'")
        zs = m.rollout(m.encode_frames(u_ctx, x01), dt, nu, steps, **extra)          # (B, S, T, D)
        b, s, t, d = zs.shape
        return m.decode(zs.reshape(b * s, t, d), xq01)[..., 0].reshape(b, s, -1)

    @functools.partial(jax.jit, static_argnames=("steps",))
    def rollout(state, u_ctx, nu, dt, x01, rng, xq01, steps: int):
        """u_ctx: (B, h, X) normalised; nu, dt: (B,); rng: (B,) keys, one per trajectory; returns (B, steps, X)
        normalised predictions on the grid, or (B, steps, Q) at ``xq01`` (UPS latent rollouts only: the decoder
        reads any point)."""
        m = nnx.merge(graphdef, state)
        if not kw:                                     # deterministic: the batch as it is
            return batch(m, u_ctx, nu, dt, x01, rng, xq01, steps)

        def row(u, nu1, dt1, key):                     # each trajectory's noise from its own key
            return batch(m, u[None], nu1[None], dt1[None], x01, key, xq01, steps)[0]

        return jax.vmap(row)(u_ctx, nu, dt, rng)

    return rollout


class Rollout:
    """Physical-space predictions from a model: normalisation, context slicing, batching (padded to a fixed batch
    so the rollout compiles once) and de-normalisation live here. ``out_x01``: output points in [0, 1) (default:
    the input grid), e.g. a finer grid for zero-shot super-resolution."""

    def __init__(self, model: nnx.Module, *, norm: dict, x01: np.ndarray, batch_size: int, mode: str = "latent",
                 refine: str = "none", seed: int = 0, out_x01: np.ndarray | None = None):
        self.graphdef, self.state = nnx.split(model)
        self.mode, self.refine, self.seed = mode, refine, int(seed)
        self.context_frames = int(getattr(model, "context_frames", 1))
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.x01 = jnp.asarray(x01, jnp.float32)
        self.out_x01 = None if out_x01 is None else jnp.asarray(out_x01, jnp.float32)
        self.batch_size = int(batch_size)
        self.fn = self._make_fn()   # built once: later models reuse the compiled rollout

    def _make_fn(self):
        return make_rollout_fn(self.graphdef, self.mode, self.refine)

    def _predict(self, u: jax.Array, nu: jax.Array, dt: jax.Array, steps: int, rng: jax.Array,
                 valid: int) -> np.ndarray:
        """One padded batch (the first ``valid`` rows are real), normalised in and out: (B, h, X) → (B, steps, X|Q)."""
        return np.asarray(self.fn(self.state, u, nu, dt, self.x01, rng, self.out_x01, steps=int(steps)))

    def set_model(self, model: nnx.Module) -> "Rollout":
        """Swaps in new weights (same architecture) without recompiling."""
        self.state = nnx.state(model)
        return self

    def keys(self, first: int) -> jax.Array:
        """(batch_size,) noise keys of trajectories ``first, first + 1, ...``."""
        base = jax.random.key(self.seed)
        # the indices from numpy: ``jnp.arange(first, ...)`` compiles an extra program once ``first`` > 0 (the
        # second batch of a validation), which the stage's recompile watch would report
        index = jnp.asarray(np.arange(first, first + self.batch_size, dtype=np.int32))
        return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)

    def __call__(self, given: np.ndarray, nu: np.ndarray, dt: float | np.ndarray, steps: int, *,
                 first_index: int = 0) -> np.ndarray:
        """given: (N, G, X) physical frames (G >= context_frames; the model reads the last ``context_frames``) or
        (N, X) for a single frame; returns the next ``steps`` frames, (N, steps, X) physical float32. In 2-D
        (``x01`` (X, Y, 2)) the frames are (X, Y) instead of (X,).
        ``first_index``: the index of ``given[0]`` among all trajectories evaluated (keys the noise)."""
        given = np.asarray(given)
        if given.ndim == self.x01.ndim + (1 if self.x01.ndim == 1 else 0):   # one frame (N, X) / (N, X, Y)
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
            rng = self.keys(int(first_index) + s)
            pred = self._predict(jnp.asarray(u), jnp.asarray(take(nu), jnp.float32),
                                 jnp.asarray(take(dt), jnp.float32), steps, rng, e - s)
            outs.append(pred[: e - s])
        return np.concatenate(outs, axis=0) * self.std + self.mean
