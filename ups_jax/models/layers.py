"""Shared building blocks: periodic Fourier features, RMSNorm, LayerNorm, MLP, AdaLN modulation, token resampling.

Conventions used by every model module:

* float32 parameters and activations; exact (erf) GELU, as PyTorch's ``nn.GELU()`` in the original project;
* LayerNorm epsilon 1e-5 (PyTorch default), RMSNorm epsilon 1e-6 (original ``blocks_pdet.RMSNorm``);
* coordinates are given in ``[0, 1)`` over the periodic domain, so every positional feature is periodic.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LN_EPS = 1e-5     # torch.nn.LayerNorm default (original)
RMS_EPS = 1e-6    # original blocks_pdet.RMSNorm


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, = torch.nn.GELU()."""
    return jax.nn.gelu(x, approximate=False)


def fourier_features(x01: jax.Array, freqs: Sequence[float]) -> jax.Array:
    """Periodic features ``[sin(2π k x) for k in freqs] ⊕ [cos(2π k x) for k in freqs]``.

    ``x01``: coordinates in [0, 1) of any shape ``S``; returns ``S + (2·len(freqs),)``. With integer ``freqs`` the
    features are exactly periodic on the unit interval (what the periodic Burgers domain needs).
    """
    x01 = jnp.asarray(x01, jnp.float32)
    if len(freqs) == 0:
        return jnp.zeros(x01.shape + (0,), jnp.float32)
    k = jnp.asarray(freqs, jnp.float32)
    ang = 2.0 * jnp.pi * x01[..., None] * k
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


def layer_norm(features: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, epsilon=LN_EPS, rngs=rngs)


class RMSNorm(nnx.Module):
    """``w ⊙ x / sqrt(mean(x²) + eps)`` with ``w`` initialised to ones (original ``blocks_pdet.RMSNorm``)."""

    def __init__(self, features: int, *, eps: float = RMS_EPS, rngs: nnx.Rngs):
        del rngs  # deterministic init; kept for a uniform constructor signature
        self.features = features
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_axis_dimension(x, -1, self.features)
        ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(ms + self.eps) * self.scale[...]


class MLP(nnx.Module):
    """``Linear(in, hidden) → act → Linear(hidden, out)``; ``act`` is exact GELU unless given."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, act=gelu, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out_features, rngs=rngs)
        self.act = act
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_axis_dimension(x, -1, self.in_features)
        y = self.fc2(self.act(self.fc1(x)))
        chex.assert_shape(y, x.shape[:-1] + (self.out_features,))
        return y


class AdaLN(nnx.Module):
    """AdaLN-Zero modulation: ``(shift, scale, gate) = Linear(cond_dim → 3·features)(c)`` per residual branch,
    zero-initialised; ``branches`` triples come from one projection (one matmul for a layer's attention and FF).

    ``modulate(x̂) = x̂·(1 + scale) + shift`` and a residual branch is multiplied by ``gate``. With the zero init every
    gated branch starts switched off (DiT's adaLN-Zero), so the block is the identity at initialisation and the
    conditioning only acts once training has moved the projection away from zero.
    """

    def __init__(self, cond_dim: int, features: int, *, branches: int = 1, rngs: nnx.Rngs):
        self.features, self.branches = features, int(branches)
        self.proj = nnx.Linear(cond_dim, 3 * self.branches * features, kernel_init=nnx.initializers.zeros,
                               bias_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, c: jax.Array):
        """``c``: (B, cond_dim) → shift, scale, gate each (B, 1, features) (broadcast over tokens); with
        ``branches`` > 1 a tuple of such triples."""
        chex.assert_rank(c, 2)
        return self.triples(self.proj(c))

    def triples(self, projected: jax.Array):
        """The projection's output (B, 3·branches·features) — computed here or elsewhere (``PDETransformer.
        modulation`` projects for all layers at once) — split into the (shift, scale, gate) triples."""
        chex.assert_shape(projected, (None, 3 * self.branches * self.features))
        parts = jnp.split(projected[:, None, :], 3 * self.branches, axis=-1)
        triples = [tuple(parts[3 * i:3 * i + 3]) for i in range(self.branches)]
        return triples[0] if self.branches == 1 else tuple(triples)

    @staticmethod
    def modulate(x_hat: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
        return x_hat * (1.0 + scale) + shift


# ---------------------------------------------------------------------------------------------------------------
# Token resampling for the U-shaped operator (original blocks_pdet semantics)
# ---------------------------------------------------------------------------------------------------------------

def downsample_tokens(x: jax.Array) -> jax.Array:
    """(B, T, H) → (B, ⌈T/2⌉, H): odd ``T`` repeats the last token, then token pairs (2j, 2j+1) are averaged.

    ``T == 1`` stays unchanged (original behaviour).
    """
    chex.assert_rank(x, 3)
    t = x.shape[1]
    if t == 1:
        return x
    if t % 2:
        x = jnp.concatenate([x, x[:, -1:]], axis=1)
    b, t2, h = x.shape
    return x.reshape(b, t2 // 2, 2, h).mean(axis=2)


def upsample_tokens_linear(x: jax.Array, length: int) -> jax.Array:
    """Linear interpolation along tokens to ``length`` with PyTorch ``align_corners=False`` semantics.

    Output token ``i`` samples the input at ``src = (i + 0.5)·T_in/length − 0.5`` clamped to ``[0, T_in − 1]``
    (= ``F.interpolate(mode="linear", align_corners=False)``), applied as a static (length, T_in) weight matrix.
    """
    chex.assert_rank(x, 3)
    t_in = x.shape[1]
    if t_in == length:
        return x
    return jnp.einsum("ot,bth->boh", jnp.asarray(linear_interp_matrix(t_in, length)), x)


def linear_interp_matrix(t_in: int, length: int) -> np.ndarray:
    """(length, t_in) float32 matrix of the ``align_corners=False`` linear interpolation weights (numpy, static)."""
    src = (np.arange(length, dtype=np.float64) + 0.5) * (t_in / length) - 0.5
    src = np.clip(src, 0.0, t_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, t_in - 1)
    w = src - lo
    mat = np.zeros((length, t_in), np.float64)
    rows = np.arange(length)
    np.add.at(mat, (rows, lo), 1.0 - w)
    np.add.at(mat, (rows, hi), w)
    return mat.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Patchify helpers (generic in the number of spatial dims; ups_jax uses 1-D)
# ---------------------------------------------------------------------------------------------------------------

def patchify(h: jax.Array, grid: Sequence[int]) -> jax.Array:
    """(B, *spatial, W) → (B, prod(grid), prod(patch)·W), splitting each spatial dim ``n_d`` into ``grid[d]`` tokens
    of ``n_d // grid[d]`` points; tokens are ordered row-major over the token grid, features as (patch..., W)."""
    b, *spatial, w = h.shape
    if len(spatial) != len(grid):
        raise ValueError(f"patchify: {len(spatial)} spatial dims but token grid {tuple(grid)}")
    patch = []
    for n, g in zip(spatial, grid):
        if n % g:
            raise ValueError(f"patchify: spatial size {n} is not divisible by {g} tokens")
        patch.append(n // g)
    shape = [b]
    for g, p in zip(grid, patch):
        shape += [g, p]
    h = h.reshape(*shape, w)
    nd = len(grid)
    tok_axes = [1 + 2 * i for i in range(nd)]
    patch_axes = [2 + 2 * i for i in range(nd)]
    h = h.transpose(0, *tok_axes, *patch_axes, 1 + 2 * nd)
    return h.reshape(b, int(np.prod(grid)), int(np.prod(patch)) * w)


def token_centres01(grid: Sequence[int]) -> np.ndarray:
    """Centres ``(t + 0.5)/T`` of the tokens of a token grid in [0,1)^d, shape (prod(grid), d), row-major."""
    axes = [(np.arange(g) + 0.5) / g for g in grid]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1).astype(np.float32)
