"""AnyPointDecoder: latent tokens (B, T, D) + query coordinates in [0, 1) → field values (B, Q, C) at ANY points.

Perceiver-style cross-attention decoder (original ``decoder_anypoint.py``, ups-original.md §4.3), trained here:

* queries: periodic Fourier features of x ∈ [0, 1) (no raw-x channel: it would break periodicity) → Linear → hidden;
* keys/values: Linear(D → hidden)(z) + a positional embedding of each token's centre ((t + 0.5)/T, Fourier features
  → Linear), so the query/key dot product can express a sharp, local, translation-invariant kernel in x (the
  original had no token positions, so its attention could not localise);
* ``num_layers`` pre-LN blocks: q += MHA(LN(q), K=V=LN_kv(latents)); q += MLP(LN(q)) (hidden → mlp_hidden → hidden);
* head: LN → Linear(hidden → mlp_hidden) → GELU → Linear(→ C);
* plus a *local patch readout* (``local_freqs``, ours): the query's own token z_t (t = ⌊x·T⌋) is mapped linearly to
  coefficients of a small Fourier basis of the query's offset inside that token's patch, ℓ = frac(x·T):
  u(x) += Σ_j (A z_t)_j φ_j(ℓ), φ = [1, sin 2πkℓ, cos 2πkℓ]. Still defined at any x, but sub-patch detail
  (Burgers' near-shocks) does not have to pass through the global attention/MLP path. Off by default: the
  basis must stay well below the patch's own Nyquist limit (1 + 2·len(local_freqs) functions fitted to
  X/T grid values per patch), else values between grid points are unconstrained — ``driver validate`` checks
  it; in a 1200-step codec run on 256-cell Burgers it gave no measurable gain.

One code path for 1-D and 2-D (``models/spatial.py``): queries are (Q,) / (B, Q) points in 1-D and (Q, 2) /
(B, Q, 2) in 2-D, with the Fourier features of every coordinate; the tokens tile the domain as the encoder's token
grid; the local MLP reads the (2n+1)^d tokens around the query's own, the raw path interpolates (bi)linearly. The
local Fourier patch readout (``local_freqs``) is 1-D only.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax.models.layers import MLP, fourier_features, gelu, layer_norm, token_centres01
from ups_jax.models.spatial import as_points, locate, neighbour_tokens, point_features


LOCAL_OFFSET_FREQS = (1.0, 2.0)   # offset features of the local readout (periodic in the patch offset ℓ ∈ [0, 1))


class CrossAttention(nnx.Module):
    """Multi-head attention q: (B, Q, E), kv: (B, T, E) → (B, Q, E). The q/k/v projections are one parameter,
    ``qkv`` = Linear(E, 3E) holding [W_q | W_k | W_v] and [b_q | b_k | b_v] (train-state format 3): k and v are one
    matmul of the latents, q one of the queries — the mathematics of three Linear(E, E), in fewer kernels and
    parameter leaves. Initialised from the same draws, in the same order, as the three separate layers were (so a
    seed gives the same initial decoder as before the fusion); ``o_proj`` = Linear(E, E)."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        if num_heads <= 0 or dim % num_heads:
            raise ValueError(f"model.decoder.hidden_dim={dim} is not divisible by model.decoder.num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        separate = [nnx.Linear(dim, dim, rngs=rngs) for _ in "qkv"]      # the draws of the unfused layout
        kernel = jnp.concatenate([p.kernel[...] for p in separate], axis=1)
        bias = jnp.concatenate([p.bias[...] for p in separate])
        # no draw here (a throwaway key): the values are the ones above
        self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=lambda *_: kernel, bias_init=lambda *_: bias,
                              rngs=nnx.Rngs(0))
        self.o_proj = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, q: jax.Array, kv: jax.Array) -> jax.Array:
        chex.assert_rank([q, kv], 3)
        b, nq, e = q.shape
        chex.assert_shape(kv, (b, None, self.dim))
        nh, dh, d = self.num_heads, self.head_dim, self.dim
        w, bias = self.qkv.kernel[...], self.qkv.bias[...]
        qh = (q @ w[:, :d] + bias[:d]).reshape(b, nq, nh, dh)
        khv = (kv @ w[:, d:] + bias[d:]).reshape(b, kv.shape[1], 2, nh, dh)
        kh, vh = khv[:, :, 0], khv[:, :, 1]
        logits = jnp.einsum("bqhd,bkhd->bhqk", qh, kh) / jnp.sqrt(jnp.float32(dh))
        w = jax.nn.softmax(logits, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, vh).reshape(b, nq, e)
        out = self.o_proj(o)
        chex.assert_shape(out, (b, nq, self.dim))
        return out


class DecoderBlock(nnx.Module):
    def __init__(self, hidden_dim: int, num_heads: int, mlp_hidden: int, *, rngs: nnx.Rngs):
        self.norm_q = layer_norm(hidden_dim, rngs=rngs)
        self.norm_kv = layer_norm(hidden_dim, rngs=rngs)
        self.attn = CrossAttention(hidden_dim, num_heads, rngs=rngs)
        self.norm_mlp = layer_norm(hidden_dim, rngs=rngs)
        self.mlp = MLP(hidden_dim, mlp_hidden, hidden_dim, rngs=rngs)

    def __call__(self, q: jax.Array, latents: jax.Array) -> jax.Array:
        """q: (B, Q, hidden), latents: (B, T, hidden) → (B, Q, hidden)."""
        chex.assert_rank([q, latents], 3)
        chex.assert_equal_shape_prefix([q, latents], 1)
        in_shape = q.shape
        q = q + self.attn(self.norm_q(q), self.norm_kv(latents))
        q = q + self.mlp(self.norm_mlp(q))
        chex.assert_shape(q, in_shape)
        return q


class AnyPointDecoder(nnx.Module):
    def __init__(self, *, latent_dim: int, latent_tokens: int, out_channels: int = 1, hidden_dim: int,
                 num_heads: int, num_layers: int, mlp_hidden: int, fourier_freqs: Sequence[float],
                 local_freqs: Sequence[float] = (), local_mlp: int = 0, local_neighbors: int = 1,
                 raw_patch: int | tuple[int, ...] = 0, token_grid: tuple[int, ...] | None = None,
                 scale_norm: bool = False, rngs: nnx.Rngs):
        if hidden_dim <= 0 or num_heads <= 0 or hidden_dim % num_heads:
            raise ValueError(f"model.decoder.hidden_dim={hidden_dim} is not divisible by "
                             f"model.decoder.num_heads={num_heads}")
        if num_layers < 0 or mlp_hidden < 1:
            raise ValueError(f"model.decoder.num_layers={num_layers} must be >= 0 and "
                             f"model.decoder.mlp_hidden={mlp_hidden} >= 1")
        if len(fourier_freqs) == 0:
            raise ValueError("model.decoder.fourier_freqs must not be empty (queries are encoded only by them)")
        self.latent_dim, self.latent_tokens, self.out_channels = latent_dim, latent_tokens, out_channels
        # scale_norm (models/encoder.py): the last latent dim is log s; the decoder reads the field's shape from the
        # other dims only and multiplies by exp(mean over tokens of log s), so D(E(αu)) = α D(E(u))
        self.scale_dims = int(bool(scale_norm))
        field_dim = latent_dim - self.scale_dims
        self.token_grid = tuple(int(t) for t in (token_grid or (latent_tokens,)))
        self.dims = len(self.token_grid)
        if int(np.prod(self.token_grid)) != latent_tokens:
            raise ValueError(f"token grid {self.token_grid} does not hold model.latent_tokens={latent_tokens}")
        self.hidden_dim = hidden_dim
        self.fourier_freqs = tuple(float(f) for f in fourier_freqs)
        nf = 2 * len(self.fourier_freqs) * self.dims
        self.query_embed = nnx.Linear(nf, hidden_dim, rngs=rngs)
        self.latent_proj = nnx.Linear(field_dim, hidden_dim, rngs=rngs)
        self.pos_embed = nnx.Linear(nf, hidden_dim, rngs=rngs)
        self.layers = nnx.List([DecoderBlock(hidden_dim, num_heads, mlp_hidden, rngs=rngs)
                                for _ in range(num_layers)])
        self.head_norm = layer_norm(hidden_dim, rngs=rngs)
        self.head = MLP(hidden_dim, mlp_hidden, out_channels, act=gelu, rngs=rngs)
        self.local_freqs = tuple(float(f) for f in local_freqs)
        if self.local_freqs and self.dims != 1:
            raise ValueError("model.decoder.local_freqs (the Fourier patch readout) is 1-D only; use "
                             "model.decoder.local_mlp in 2-D")
        if self.local_freqs:
            self.local_readout = nnx.Linear(field_dim, out_channels * (1 + 2 * len(self.local_freqs)), rngs=rngs)
        self.local_mlp_width, self.local_neighbors = int(local_mlp), int(local_neighbors)
        if self.local_mlp_width:
            n_tok = (2 * self.local_neighbors + 1) ** self.dims
            self.local_mlp = MLP(n_tok * field_dim + (2 * len(LOCAL_OFFSET_FREQS) + 1) * self.dims,
                                 self.local_mlp_width, out_channels, rngs=rngs)
        self.raw_shape = tuple(int(p) for p in (raw_patch if isinstance(raw_patch, (tuple, list)) else
                                                (raw_patch,) * self.dims))
        self.raw_patch = int(np.prod(self.raw_shape)) if raw_patch else 0
        if self.raw_patch:   # the encoder's identity path: start as exact interpolation, learn corrections
            if out_channels != 1 or field_dim <= self.raw_patch:
                raise ValueError("the raw skip path needs one output channel and latent_dim > the patch size")
            self.head.fc2.kernel[...] = jnp.zeros_like(self.head.fc2.kernel[...])
            if self.local_mlp_width:
                self.local_mlp.fc2.kernel[...] = jnp.zeros_like(self.local_mlp.fc2.kernel[...])

    def local_patch_readout(self, z: jax.Array, xq01: jax.Array) -> jax.Array:
        """(B, T, D), (B, Q, 1) → (B, Q, C): the query's own token, read out on a Fourier basis of its patch offset
        (1-D only)."""
        xq01 = xq01[..., 0]
        b, nq = xq01.shape
        pos = xq01 * self.latent_tokens
        t = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, self.latent_tokens - 1)
        zq = jnp.take_along_axis(z, t[..., None], axis=1)                           # (B, Q, D)
        basis = jnp.concatenate([jnp.ones((b, nq, 1), jnp.float32),
                                 fourier_features(pos - t, self.local_freqs)], axis=-1)  # (B, Q, J)
        coef = self.local_readout(zq).reshape(b, nq, self.out_channels, basis.shape[-1])
        return jnp.einsum("bqcj,bqj->bqc", coef, basis)

    def local_mlp_readout(self, z: jax.Array, xq01: jax.Array) -> jax.Array:
        """(B, T, D), (B, Q, d) → (B, Q, C): an MLP of the query's token and its ``local_neighbors`` neighbours on each
        side of every axis (periodic) and of the query's offset inside its patch — a local implicit representation."""
        b, nq, _ = xq01.shape
        t, off = locate(xq01, self.token_grid)                                         # (B, Q, d) each
        idx = neighbour_tokens(t, self.token_grid, self.local_neighbors)               # (B, Q, (2n+1)^d)
        zq = z[jnp.arange(b)[:, None, None], idx].reshape(b, nq, -1)                  # (B, Q, (2n+1)^d·D)
        feats = jnp.concatenate([zq, point_features(off, LOCAL_OFFSET_FREQS), off - 0.5], -1)
        return self.local_mlp(feats)

    def raw_interpolation(self, z: jax.Array, xq01: jax.Array) -> jax.Array:
        """(B, T, D), (B, Q, d) → (B, Q, 1): (bi)linear interpolation of the grid values carried in the first
        ``raw_patch`` latent dims (the query's patch and its neighbours, periodic); exact at the grid points."""
        b, nq, d = xq01.shape
        t, off = locate(xq01, self.token_grid)
        idx = neighbour_tokens(t, self.token_grid, 1)                                  # (B, Q, 3^d)
        vals = z[jnp.arange(b)[:, None, None], idx, :self.raw_patch]                   # (B, Q, 3^d, P)
        # (B, Q, 3, p_1, ..., 3, p_d) → the (3 p_1) x ... x (3 p_d) grid values around the query's patch
        vals = vals.reshape((b, nq) + (3,) * d + self.raw_shape)
        vals = vals.transpose((0, 1) + tuple(a for i in range(d) for a in (2 + i, 2 + d + i)))
        vals = vals.reshape((b, nq) + tuple(3 * p for p in self.raw_shape))
        for i, p in enumerate(self.raw_shape):                                         # hat functions, axis by axis
            centres = (jnp.arange(3 * p) + 0.5) / p - 1.0                              # relative to the patch start
            w = jax.nn.relu(1.0 - jnp.abs(off[:, :, i, None] - centres) * p)          # (B, Q, 3p)
            w = w.reshape((b, nq, 3 * p) + (1,) * (d - 1 - i))
            vals = jnp.sum(w * vals, axis=2)
        return vals[..., None]

    def latent_keys(self, z: jax.Array) -> jax.Array:
        """(B, T, D') → key/value tokens (B, T, hidden) with token-centre positional embedding (D' = the field dims:
        D without the scale dim)."""
        chex.assert_shape(z, (None, self.latent_tokens, self.latent_dim - self.scale_dims))
        centres = jnp.asarray(token_centres01(self.token_grid))                       # (T, d)
        pos = self.pos_embed(point_features(centres, self.fourier_freqs))  # (T, hidden)
        return self.latent_proj(z) + pos[None]

    def __call__(self, z: jax.Array, xq01: jax.Array) -> jax.Array:
        """z: (B, T, D); xq01: query coordinates in [0, 1), shared (Q,) or per-sample (B, Q) in 1-D, (Q, 2) or
        (B, Q, 2) in 2-D → (B, Q, C)."""
        chex.assert_rank(z, 3)
        chex.assert_axis_dimension(z, 2, self.latent_dim)
        b = z.shape[0]
        if self.scale_dims:
            z, log_s = z[..., :-1], z[..., -1]
        xq01 = as_points(xq01, self.dims, b)                                           # (B, Q, d)
        nq = xq01.shape[1]
        latents = self.latent_keys(z)
        q = self.query_embed(point_features(xq01, self.fourier_freqs))
        chex.assert_shape(q, (b, nq, self.hidden_dim))
        for layer in self.layers:
            q = layer(q, latents)
        out = self.head(self.head_norm(q))
        if self.local_freqs:
            out = out + self.local_patch_readout(z, xq01)
        if self.local_mlp_width:
            out = out + self.local_mlp_readout(z, xq01)
        if self.raw_patch:
            out = out + self.raw_interpolation(z, xq01)
        if self.scale_dims:
            out = out * jnp.exp(jnp.mean(log_s, axis=1))[:, None, None]
        chex.assert_shape(out, (b, nq, self.out_channels))
        return out
