"""What the encoder and the decoder need to know about the number of spatial dimensions (1-D or 2-D).

The models have one code path for both: points are ``(..., d)`` coordinates in [0, 1)^d (1-D queries ``(Q,)``
are read as ``(Q, 1)``), the T latent tokens tile the domain as a token grid (``(T,)`` in 1-D, ``(√T, √T)`` in
2-D, row-major), and positional features are the periodic Fourier features of every coordinate, concatenated
(``[sin 2πk·x, cos 2πk·x]`` then the same of y): for ``d = 1`` exactly the features of the 1-D models.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ups_jax.models.layers import fourier_features


def point_features(points: jax.Array, freqs: Sequence[float]) -> jax.Array:
    """(..., d) coordinates → (..., d·2F): the Fourier features of each coordinate, concatenated."""
    ff = fourier_features(points, freqs)                       # (..., d, 2F)
    return ff.reshape(ff.shape[:-2] + (ff.shape[-2] * ff.shape[-1],))


def as_points(xq01: jax.Array, dims: int, batch: int) -> jax.Array:
    """Query coordinates as (B, Q, d): 1-D ``(Q,)``/``(B, Q)``, 2-D ``(Q, 2)``/``(B, Q, 2)``."""
    xq01 = jnp.asarray(xq01, jnp.float32)
    if dims == 1:
        xq01 = xq01[..., None]
    if xq01.ndim == 2:
        xq01 = jnp.broadcast_to(xq01[None], (batch,) + xq01.shape)
    if xq01.ndim != 3 or xq01.shape[0] != batch or xq01.shape[-1] != dims:
        want = "(Q,) or (B, Q)" if dims == 1 else f"(Q, {dims}) or (B, Q, {dims})"
        raise ValueError(f"AnyPointDecoder: query points must be {want} with B={batch}, got {tuple(xq01.shape)}")
    return xq01


def locate(points: jax.Array, grid: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """(B, Q, d) points → the index of the token holding each point per dim (B, Q, d) int32 and the point's
    offset inside that token's patch (B, Q, d) in [0, 1)."""
    g = jnp.asarray(grid, jnp.float32)
    pos = points * g
    t = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, jnp.asarray(grid, jnp.int32) - 1)
    return t, pos - t


def neighbour_tokens(t: jax.Array, grid: tuple[int, ...], radius: int) -> jax.Array:
    """(B, Q, d) token indices → flat (row-major) indices of the (2r+1)^d tokens around each, periodic:
    (B, Q, (2r+1)^d), ordered row-major over the offsets (in 1-D: t-r, ..., t+r)."""
    offs = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * len(grid), indexing="ij"), -1).reshape(-1, len(grid))
    idx = (t[..., None, :] + jnp.asarray(offs)) % jnp.asarray(grid)             # (B, Q, K, d)
    strides = np.cumprod((1,) + tuple(grid[::-1]))[:-1][::-1]                    # row-major strides
    return jnp.sum(idx * jnp.asarray(strides, jnp.int32), axis=-1)
