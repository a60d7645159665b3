"""GridEncoder: a *trained* periodic conv stem + patchify encoder, grid field (B, X, C) → latent tokens (B, T, D).

Replaces the original's frozen, randomly initialised ``enc_grid.GridEncoder`` (ups-original.md §4.1, §12 item 6):

1. per point: ``u`` channels ⊕ ``[sin(2π k x), cos(2π k x)]`` for ``k`` in ``fourier_freqs`` (an outer product over
   frequencies; x in [0,1) over the periodic domain, so the features are periodic);
2. ``num_conv`` 1-D convolutions with CIRCULAR padding (periodic boundary), each followed by exact GELU, with a
   residual connection whenever input and output widths match (all but the first);
3. patchify: the X points are split into T contiguous patches of X/T points, each flattened to ``(X/T)·width``
   features → ``Linear → D`` → ``LayerNorm(D)``.

``scale_norm`` (per-sample amplitude, issue 19): the encoder divides the field by s = the RMS of the newest frame
(per sample, + ``SCALE_EPS``) before anything else and appends log s to every token as its last latent dim, so the
tokens describe the field's *shape* at unit amplitude and carry its amplitude separately; the decoder multiplies its
output by exp(mean log s). The codec is then equivariant to the amplitude (up to the ε): D(E(αu)) = α D(E(u)), so
its floor is a fraction of each field's own size instead of a fixed amount in normalised units. The operator sees
log s (the dynamics depend on the amplitude) and advances it like any latent dim (or keeps it:
``model.operator.advance_scale=False``). Off by default: the rollout's relative error on low-amplitude trajectories
is ~2x that on the others, but this did not remove it and made ``:cpu`` worse (docs/benchmarks.md, "The error by
amplitude").

One code path for 1-D and 2-D (``models/spatial.py``): ``num_points`` is the grid, X or (X, Y); in 2-D the convs
have (k, k) kernels, the Fourier features are those of x and of y, and the √T x √T token patches of
(X/√T)·(Y/√T) points are flattened the same way (``layers.patchify``), so the latent tokens are (B, T, D) in both.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax.data.grids import token_grid
from ups_jax.models.layers import gelu, layer_norm, patchify
from ups_jax.models.spatial import point_features

# the floor of the per-sample scale s (normalised units; train-split z-scored fields have RMS ~1): a field with no
# amplitude is not blown up by 1/s
SCALE_EPS = 1e-3


def sample_scale(u: jax.Array) -> jax.Array:
    """(B, *grid, C) → (B,): sqrt(mean(newest frame²) + ε²), the newest frame being the last channel."""
    newest = u[..., -1].astype(jnp.float32)
    return jnp.sqrt(jnp.mean(jnp.square(newest), axis=tuple(range(1, newest.ndim))) + SCALE_EPS ** 2)


class GridEncoder(nnx.Module):
    def __init__(self, *, num_points: int | tuple[int, ...], latent_tokens: int, latent_dim: int,
                 in_channels: int = 1, width: int, kernel_size: int, num_conv: int, fourier_freqs: Sequence[float],
                 final_norm: bool = True, raw_skip: bool = False, scale_norm: bool = False,
                 rngs: nnx.Rngs):
        grid = tuple(int(n) for n in (num_points if isinstance(num_points, (tuple, list)) else (num_points,)))
        if min(grid) <= 0 or latent_tokens <= 0:
            raise ValueError(f"model.latent_tokens={latent_tokens} and grid size {num_points} must be positive")
        self.dims = len(grid)
        self.grid = grid
        self.token_grid = token_grid(latent_tokens, self.dims)
        if any(n % t for n, t in zip(grid, self.token_grid)):
            if self.dims == 1:
                raise ValueError(
                    f"model.latent_tokens={latent_tokens} does not divide the data grid size {num_points} "
                    f"(the encoder patchifies the grid into latent_tokens patches of equal size); choose "
                    f"model.latent_tokens among the divisors of {num_points} or change data.reduced_resolution")
            raise ValueError(
                f"the token grid {'x'.join(map(str, self.token_grid))} (model.latent_tokens={latent_tokens}) does "
                f"not divide the data grid {'x'.join(map(str, grid))}; choose model.latent_tokens or "
                f"data.reduced_resolution so that it does")
        if num_conv < 0 or kernel_size < 1 or width < 1:
            raise ValueError(f"model.encoder needs num_conv >= 0, kernel_size >= 1, width >= 1 "
                             f"(got num_conv={num_conv}, kernel_size={kernel_size}, width={width})")
        self.num_points = int(np.prod(grid))
        self.latent_tokens = latent_tokens
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.fourier_freqs = tuple(float(f) for f in fourier_freqs)
        self.patch_shape = tuple(n // t for n, t in zip(grid, self.token_grid))
        self.patch = int(np.prod(self.patch_shape))
        feat = in_channels + 2 * len(self.fourier_freqs) * self.dims
        convs = []
        c_in = feat
        for _ in range(num_conv):
            convs.append(nnx.Conv(c_in, width, kernel_size=(kernel_size,) * self.dims, padding="CIRCULAR",
                                  rngs=rngs))
            c_in = width
        self.convs = nnx.List(convs)
        self.stem_width = c_in
        # raw_skip: the first `patch` latent dims of a token ARE its patch's values of the newest frame (an identity
        # path: no reconstruction floor at grid points); the encoder's learned features fill the rest.
        self.raw_dims = self.patch if raw_skip else 0
        self.scale_dims = int(bool(scale_norm))            # the last latent dim: log s (scale_norm)
        learned = latent_dim - self.raw_dims - self.scale_dims
        if self.raw_dims and latent_dim <= self.raw_dims:
            raise ValueError(f"model.encoder.raw_skip needs model.latent_dim={latent_dim} > the patch of "
                             f"{self.raw_dims} grid points (grid {num_points} / model.latent_tokens={latent_tokens})")
        if learned < 1:
            raise ValueError(f"model.scale_norm needs model.latent_dim={latent_dim} > {self.raw_dims + 1} (the raw "
                             f"patch's {self.raw_dims} dims and the scale's one leave no learned dim)")
        self.proj = nnx.Linear(self.patch * c_in, learned, rngs=rngs)
        self.final_norm = bool(final_norm)
        if self.final_norm:
            self.norm = layer_norm(learned, rngs=rngs)

    def features(self, u: jax.Array, x01: jax.Array) -> jax.Array:
        """(B, *grid, C), x01 (*grid[, d]) or (B, *grid[, d]) → per-point input features (B, *grid, C + 2F·d)."""
        b = u.shape[0]
        pts = x01[..., None] if self.dims == 1 else x01
        ff = point_features(pts, self.fourier_freqs)
        if ff.ndim == self.dims + 1:
            ff = jnp.broadcast_to(ff[None], (b,) + ff.shape)
        chex.assert_shape(ff, (b,) + self.grid + (2 * len(self.fourier_freqs) * self.dims,))
        return jnp.concatenate([u.astype(jnp.float32), ff], axis=-1)

    def __call__(self, u: jax.Array, x01: jax.Array) -> jax.Array:
        """u: (B, *grid, C) field on the grid; x01: grid coordinates in [0, 1), (X,) or (B, X) in 1-D, (X, Y, 2) or
        (B, X, Y, 2) in 2-D → z: (B, T, D)."""
        chex.assert_rank(u, self.dims + 2)
        if tuple(u.shape[1:]) != self.grid + (self.in_channels,):
            raise ValueError(f"GridEncoder was built for fields (B, {', '.join(map(str, self.grid))}, "
                             f"{self.in_channels}) but got {tuple(u.shape)}; the data grid does not match the model")
        x01 = jnp.asarray(x01, jnp.float32)
        coords = self.grid if self.dims == 1 else self.grid + (self.dims,)
        if x01.shape not in (coords, (u.shape[0],) + coords):
            raise ValueError(f"GridEncoder: x01 must be {coords} or {(u.shape[0],) + coords}, got {tuple(x01.shape)}")
        if self.scale_dims:
            s = sample_scale(u)
            u = u / s.reshape((-1,) + (1,) * (u.ndim - 1))
        h = self.features(u, x01)
        for conv in self.convs:
            y = gelu(conv(h))
            h = h + y if y.shape == h.shape else y
        chex.assert_shape(h, (u.shape[0],) + self.grid + (self.stem_width,))
        tokens = patchify(h, self.token_grid)
        chex.assert_shape(tokens, (u.shape[0], self.latent_tokens, self.patch * self.stem_width))
        z = self.proj(tokens)
        if self.final_norm:
            z = self.norm(z)
        if self.raw_dims:   # newest frame = last channel (frames are stacked oldest first); patch values row-major
            raw = patchify(u[..., -1:].astype(jnp.float32), self.token_grid)
            z = jnp.concatenate([raw, z], axis=-1)
        if self.scale_dims:
            z = jnp.concatenate([z, jnp.broadcast_to(jnp.log(s)[:, None, None], z.shape[:2] + (1,))], axis=-1)
        chex.assert_shape(z, (u.shape[0], self.latent_tokens, self.latent_dim))
        return z
