"""LatentOperator: one time step in latent space, z' = z + f(z, dt, ν), f = output_proj ∘ PDET ∘ input_proj.

Differences from the original ``latent_operator.py`` (ups-original.md §4.7), all deliberate:

* conditioning on both dt and ν through AdaLN-Zero in every TransformerLayer (the original only added a learned
  bias of a constant dt and never wired its AdaLN conditioner): ``e = SiLU(Linear(SiLU(Linear([log dt, log ν]))))``
  of width ``cond_dim``, then per LayerNorm ``(shift, scale, gate) = Linear(cond_dim → 3H)(e)``, zero-initialised;
* no LayerNorm on the residual (the original's ``z + LN(PDET(·))`` forces unit-RMS updates at init); instead
  ``output_proj`` is initialised with a small variance (``output_init_scale``): after the encoder's LayerNorm the
  tokens have unit RMS and the final LN of the PDET has unit RMS, so the initial update has RMS ≈
  ``output_init_scale`` (1e-2 by default), i.e. step(z) ≈ z at init while every parameter still gets a gradient;
* an optional learned token position embedding (T, H) after ``input_proj`` (``model.operator.pos_embed``): the
  original's attention had no positional information at all, so a token could not tell its left neighbour from
  its right one — which advection (Burgers' u·u_x) is all about.
"""

from __future__ import annotations

import functools
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax.models.pdet import PDETransformer, check_attention_dims


# The rollout step is rematerialised in the gradient: the backward loop recomputes a step's activations from its
# input z_k instead of the forward loop saving ~40 per layer, each of which costs a zeroed stacking buffer, a write
# per step and a read per step. Issue 16, production operator update (docs/benchmarks.md "GPU speed"): kernels
# 1,483 -> 1,197 (nothing_saveable) or 1,291 (dots_saveable); the recomputation costs ~5 % more CPU time per
# `:cpu` update with nothing_saveable, none measurable with dots_saveable; a GPU step is dispatch-bound.
ROLLOUT_REMAT_POLICY = jax.checkpoint_policies.nothing_saveable


class ConditionEmbedding(nnx.Module):
    """[log dt, log ν] → Linear(2, C) → SiLU → Linear(C, C) → SiLU; (B,), (B,) → (B, C)."""

    def __init__(self, cond_dim: int, *, rngs: nnx.Rngs):
        if cond_dim <= 0:
            raise ValueError(f"model.operator.cond_dim={cond_dim} must be positive")
        self.cond_dim = cond_dim
        self.fc1 = nnx.Linear(2, cond_dim, rngs=rngs)
        self.fc2 = nnx.Linear(cond_dim, cond_dim, rngs=rngs)

    def __call__(self, dt: jax.Array, nu: jax.Array) -> jax.Array:
        chex.assert_rank([dt, nu], 1)
        chex.assert_equal_shape([dt, nu])
        feats = jnp.stack([jnp.log(dt), jnp.log(nu)], axis=-1)
        e = jax.nn.silu(self.fc2(jax.nn.silu(self.fc1(feats))))
        chex.assert_shape(e, (dt.shape[0], self.cond_dim))
        return e


class LatentOperator(nnx.Module):
    def __init__(self, *, latent_dim: int, hidden_dim: int, group_size: int, num_heads: int,
                 depths: Sequence[int] = (1, 1, 1), mlp_ratio: float = 2.0, cond_dim: int,
                 output_init_scale: float = 1e-2, latent_tokens: int | None = None, frozen_dims: int = 0,
                 rngs: nnx.Rngs):
        check_attention_dims(hidden_dim, group_size, num_heads)
        if latent_dim <= 0:
            raise ValueError(f"model.latent_dim={latent_dim} must be positive")
        self.latent_dim, self.hidden_dim = latent_dim, hidden_dim
        # the last ``frozen_dims`` latent dims are inputs the step reads but never changes (model.scale_norm with
        # model.operator.advance_scale=False: the amplitude log s stays the given frame's through the rollout)
        self.frozen_dims = int(frozen_dims)
        if not 0 <= self.frozen_dims < latent_dim:
            raise ValueError(f"frozen latent dims {frozen_dims} must be in [0, model.latent_dim={latent_dim})")
        self.cond_embed = ConditionEmbedding(cond_dim, rngs=rngs)
        self.input_proj = nnx.Linear(latent_dim, hidden_dim, rngs=rngs)
        self.latent_tokens = latent_tokens
        if latent_tokens:
            self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (latent_tokens, hidden_dim)))
        self.pdet = PDETransformer(hidden_dim, depths=depths, group_size=group_size, num_heads=num_heads,
                                   mlp_ratio=mlp_ratio, cond_dim=cond_dim, rngs=rngs)
        # std = output_init_scale / sqrt(H): the (unit-RMS) final-LN output maps to an update of RMS ≈ scale.
        out_init = nnx.initializers.variance_scaling(output_init_scale ** 2, "fan_in", "normal")
        self.output_proj = nnx.Linear(hidden_dim, latent_dim, kernel_init=out_init, rngs=rngs)

    def modulation(self, dt: jax.Array, nu: jax.Array, batch: int) -> jax.Array:
        """Every layer's AdaLN (shift, scale, gate) projection of the (dt, ν) embedding: (B, L, 6H). dt, ν: (B,)
        or scalars, broadcast to ``batch``."""
        dt = jnp.broadcast_to(jnp.asarray(dt, jnp.float32), (batch,))
        nu = jnp.broadcast_to(jnp.asarray(nu, jnp.float32), (batch,))
        return self.pdet.modulation(self.cond_embed(dt, nu))

    def update(self, z: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        """The residual f(z, dt, ν): (B, T, D) → (B, T, D)."""
        chex.assert_rank(z, 3)
        return self.update_modulated(z, self.modulation(dt, nu, z.shape[0]))

    def update_modulated(self, z: jax.Array, modulation: jax.Array) -> jax.Array:
        """f(z, dt, ν) given ``modulation(dt, ν, B)`` (everything that depends on dt and ν)."""
        chex.assert_rank(z, 3)
        chex.assert_axis_dimension(z, 2, self.latent_dim)
        h = self.input_proj(z)
        if self.latent_tokens:
            chex.assert_axis_dimension(z, 1, self.latent_tokens)
            h = h + self.pos_embed[...][None]
        h = self.pdet(h, modulation=modulation)
        r = self.output_proj(h)
        if self.frozen_dims:
            r = r.at[..., -self.frozen_dims:].set(0.0)
        chex.assert_equal_shape([z, r])
        return r

    def __call__(self, z: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        """z: (B, T, D); dt, ν: (B,) (scalars are broadcast; both must be > 0) → z' = z + f(z, dt, ν): (B, T, D)."""
        return z + self.update(z, dt, nu)

    def rollout(self, z: jax.Array, dt: jax.Array, nu: jax.Array, num_steps: int) -> jax.Array:
        """``num_steps`` steps z_{k+1} = z_k + f(z_k, dt, ν) in one ``lax.scan``: (B, T, D) → (B, num_steps, T, D).

        The same function as calling the operator in a loop, arranged for few kernels (issue 16): the modulation
        depends on (dt, ν) only, so it is computed once before the loop instead of at every step, and the
        operator's variables enter the loop as ONE vector unravelled inside the body, so the loop (and its
        gradient, which accumulates a cotangent per loop constant) carries one array instead of one per leaf; the
        step is rematerialised in the gradient (``ROLLOUT_REMAT_POLICY``)."""
        chex.assert_rank(z, 3)
        m = self.modulation(dt, nu, z.shape[0])
        graphdef, state = nnx.split(self)
        leaves, treedef = jax.tree.flatten(state)
        shapes = [x.shape for x in leaves]
        splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()
        one_vector = len({x.dtype for x in leaves}) == 1
        vec = jnp.concatenate([jnp.ravel(x) for x in leaves]) if one_vector else None

        def operator(v):
            if not one_vector:             # mixed dtypes cannot share a vector: the leaves as they are
                return self
            parts = [p.reshape(s) for p, s in zip(jnp.split(v, splits), shapes)]
            return nnx.merge(graphdef, jax.tree.unflatten(treedef, parts))

        @functools.partial(jax.checkpoint, policy=ROLLOUT_REMAT_POLICY)
        def step(zc, m, v):
            return zc + operator(v).update_modulated(zc, m)

        def body(zc, _):
            zn = step(zc, m, vec)
            return zn, zn

        _, zs = jax.lax.scan(body, z, None, length=int(num_steps))
        return jnp.swapaxes(zs, 0, 1)
