"""Steady prior: an iterative latent model of the long-time state of a trajectory from its initial state and ν.

z ← z + g([z, z₀], s, horizon, ν) for s = 0..S−1, starting at z = z₀ = E(first h frames); ``horizon`` is the time
to the predicted state (the data's final frame, conditioned as the "dt" input of the AdaLN embedding, so the
network knows how far ahead it predicts); g's output starts near zero, so the untrained prior is persistence.

The original's steady prior (ups-original.md §4.9, §5.6) was trained on the operator's one-step pairs (the same
supervision as the operator) and never used; this one is trained on (initial state, final frame) pairs through the
frozen decoder (training/refiner_losses.py) and serves ``python -m ups_jax.infer --mode steady``.
"""

from __future__ import annotations

import jax
from flax import nnx

from ups_jax.models.corrector import LatentDenoiser


class SteadyPrior(nnx.Module):
    def __init__(self, *, latent_dim: int, latent_tokens: int, hidden_dim: int, group_size: int, num_heads: int,
                 depths, mlp_ratio: float, cond_dim: int, iterations: int, rngs: nnx.Rngs):
        if iterations < 1:
            raise ValueError(f"model.steady.iterations={iterations} must be >= 1")
        self.iterations = int(iterations)
        self.net = LatentDenoiser(latent_dim=latent_dim, latent_tokens=latent_tokens, num_inputs=2,
                                  num_levels=self.iterations, hidden_dim=hidden_dim, group_size=group_size,
                                  num_heads=num_heads, depths=depths, mlp_ratio=mlp_ratio, cond_dim=cond_dim,
                                  output_init_scale=1e-2, config_prefix="model.steady", rngs=rngs)

    def __call__(self, z0: jax.Array, horizon, nu) -> jax.Array:
        """z0: (B, T, D) latent of the initial context; horizon, ν: (B,) or scalars (> 0) → (B, T, D)."""
        z = z0
        for s in range(self.iterations):
            z = z + self.net([z, z0], s, horizon, nu)
        return z


def build_steady(cfg_model, *, latent_dim: int, latent_tokens: int, rngs: nnx.Rngs):
    """The prior of ``model.steady`` (None when the section is absent or None)."""
    s = cfg_model.get("steady")
    if s is None:
        return None
    return SteadyPrior(latent_dim=latent_dim, latent_tokens=latent_tokens, hidden_dim=int(s.hidden_dim),
                       group_size=int(s.group_size), num_heads=int(s.num_heads), depths=tuple(s.depths),
                       mlp_ratio=float(s.mlp_ratio), cond_dim=int(s.cond_dim), iterations=int(s.iterations),
                       rngs=rngs)
