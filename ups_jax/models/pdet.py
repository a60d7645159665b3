"""PDE-Transformer (original ``blocks_pdet.py``, ups-original.md §4.5) with AdaLN-Zero conditioning wired in.

* ``ChannelSeparatedSelfAttention``: hidden H split into G = H/g channel groups of width g (an einsum axis);
  q = Wq(RMS_q(x)), k = Wk(RMS_k(x)), v = Wv(x) with Linear(g, g) weights shared by all groups, computed as one
  stacked (g, 3g) matmul; h heads of width g/h; global softmax attention over the T tokens with scale 1/√(g/h);
  Wo Linear(g, g).
* ``FeedForward``: LN → Linear(H, ⌊H·mlp_ratio⌋) → GELU → Linear(→ H).
* ``TransformerLayer`` (pre-LN): x += gate_a·Attn(mod_a(LN(x))); x += gate_f·FF(x) with the FF's own LN modulated by
  mod_f; both (shift, scale, gate) triples from one ``AdaLN`` projection (zero-init ⇒ gate = 0 ⇒ the layer is the
  identity at init).
* ``PDETransformer``: U-shape over tokens — per ``depths[:-1]`` stage: layers → skip → pair-average downsample →
  Linear(H, H); bottleneck ``depths[-1]`` layers; up path: linear interpolation to the skip length →
  x + Linear(H, H)(skip) → layers; final LN. (input/output projections live in ``LatentOperator``.) Every layer's
  AdaLN projection is computed in one matmul (``PDETransformer.modulation``), which a rollout computes once.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from ups_jax.models.layers import AdaLN, RMSNorm, downsample_tokens, gelu, layer_norm, upsample_tokens_linear


def check_attention_dims(hidden_dim: int, group_size: int, num_heads: int, prefix: str = "model.operator") -> None:
    """Raises ValueError naming the config keys when H % g or g % h is not zero."""
    if hidden_dim <= 0 or group_size <= 0 or num_heads <= 0:
        raise ValueError(f"{prefix}.hidden_dim={hidden_dim}, {prefix}.group_size={group_size} and "
                         f"{prefix}.num_heads={num_heads} must all be positive")
    if hidden_dim % group_size:
        raise ValueError(f"{prefix}.hidden_dim={hidden_dim} is not divisible by {prefix}.group_size={group_size}")
    if group_size % num_heads:
        raise ValueError(f"{prefix}.group_size={group_size} is not divisible by {prefix}.num_heads={num_heads}")


class ChannelSeparatedSelfAttention(nnx.Module):
    """q = Wq(RMS_q(x)), k = Wk(RMS_k(x)), v = Wv(x) per channel group, computed as ONE matmul with the stacked
    kernel [diag(w_q)·Wq | diag(w_k)·Wk | Wv] (``qkv``, (g, 3g)): RMSNorm's 1/rms(x) is a per-row scalar, so
    RMS_q(x)·Wq = (1/rms(x))·(x·diag(w_q)·Wq) — the same mathematics in one kernel instead of five, and the
    channel groups stay an axis of the einsums instead of transposes into and out of the batch."""

    def __init__(self, hidden_dim: int, group_size: int, num_heads: int, *, rngs: nnx.Rngs):
        check_attention_dims(hidden_dim, group_size, num_heads)
        self.hidden_dim, self.group_size, self.num_heads = hidden_dim, group_size, num_heads
        self.num_groups = hidden_dim // group_size
        self.head_dim = group_size // num_heads
        g = group_size
        self.q_norm = RMSNorm(g, rngs=rngs)      # only its scale w_q is used (folded into the qkv kernel)
        self.k_norm = RMSNorm(g, rngs=rngs)
        self.qkv = nnx.Linear(g, 3 * g, rngs=rngs)   # fan_in g: the same init distribution as three Linear(g, g)
        self.o_proj = nnx.Linear(g, g, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, H) → (B, T, H)."""
        chex.assert_rank(x, 3)
        b, t, hdim = x.shape
        chex.assert_axis_dimension(x, 2, self.hidden_dim)
        g, G, nh, dh = self.group_size, self.num_groups, self.num_heads, self.head_dim
        xg = x.reshape(b, t, G, g)
        w, bias = self.qkv.kernel[...], self.qkv.bias[...]
        w = jnp.concatenate([self.q_norm.scale[...][:, None] * w[:, :g], self.k_norm.scale[...][:, None] * w[:, g:2 * g],
                             w[:, 2 * g:]], axis=1)
        y = jnp.einsum("btGi,ij->btGj", xg, w)
        inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(xg), axis=-1, keepdims=True) + self.q_norm.eps)
        q = (inv_rms * y[..., :g] + bias[:g]) * (1.0 / jnp.sqrt(jnp.float32(dh)).astype(x.dtype))
        k = inv_rms * y[..., g:2 * g] + bias[g:2 * g]
        v = y[..., 2 * g:] + bias[2 * g:]
        q, k, v = (a.reshape(b, t, G, nh, dh) for a in (q, k, v))
        logits = jnp.einsum("bqGhd,bkGhd->bGhqk", q, k)
        o = jnp.einsum("bGhqk,bkGhd->bqGhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, t, G, g)
        out = (jnp.einsum("btGi,ij->btGj", o, self.o_proj.kernel[...]) + self.o_proj.bias[...]).reshape(b, t, hdim)
        chex.assert_shape(out, (b, t, self.hidden_dim))
        return out


class FeedForward(nnx.Module):
    """LN → Linear(H, ⌊H·mlp_ratio⌋) → GELU → Linear(→ H); the LN output can be AdaLN-modulated."""

    def __init__(self, hidden_dim: int, mlp_ratio: float, *, rngs: nnx.Rngs):
        inner = int(hidden_dim * mlp_ratio)
        if inner < 1:
            raise ValueError(f"model.operator.mlp_ratio={mlp_ratio} gives an empty feed-forward layer "
                             f"(⌊{hidden_dim}·{mlp_ratio}⌋ = {inner})")
        self.hidden_dim, self.inner_dim = hidden_dim, inner
        self.norm = layer_norm(hidden_dim, rngs=rngs)
        self.fc1 = nnx.Linear(hidden_dim, inner, rngs=rngs)
        self.fc2 = nnx.Linear(inner, hidden_dim, rngs=rngs)

    def __call__(self, x: jax.Array, shift: jax.Array | None = None, scale: jax.Array | None = None) -> jax.Array:
        chex.assert_axis_dimension(x, -1, self.hidden_dim)
        h = self.norm(x)
        if shift is not None:
            h = AdaLN.modulate(h, shift, scale)
        y = self.fc2(gelu(self.fc1(h)))
        chex.assert_equal_shape([x, y])
        return y


class TransformerLayer(nnx.Module):
    def __init__(self, hidden_dim: int, group_size: int, num_heads: int, mlp_ratio: float, cond_dim: int, *,
                 rngs: nnx.Rngs):
        self.hidden_dim = hidden_dim
        self.norm = layer_norm(hidden_dim, rngs=rngs)
        self.attn = ChannelSeparatedSelfAttention(hidden_dim, group_size, num_heads, rngs=rngs)
        self.ff = FeedForward(hidden_dim, mlp_ratio, rngs=rngs)
        self.mod = AdaLN(cond_dim, hidden_dim, branches=2, rngs=rngs)   # attention's and FF's, one matmul

    def __call__(self, x: jax.Array, c: jax.Array | None = None, *, modulation: jax.Array | None = None) -> jax.Array:
        """x: (B, T, H); c: (B, cond_dim) conditioning embedding, or ``modulation``: its AdaLN projection
        (B, 6H) computed beforehand (``PDETransformer.modulation``) → (B, T, H)."""
        chex.assert_rank(x, 3)
        chex.assert_axis_dimension(x, 2, self.hidden_dim)
        projected = self.mod.proj(c) if modulation is None else modulation
        chex.assert_axis_dimension(projected, 0, x.shape[0])
        (shift, scale, gate), (shift_f, scale_f, gate_f) = self.mod.triples(projected)
        x = x + gate * self.attn(AdaLN.modulate(self.norm(x), shift, scale))
        x = x + gate_f * self.ff(x, shift_f, scale_f)
        return x


class PDETransformer(nnx.Module):
    """U-shaped stack of ``TransformerLayer`` over (B, T, H) tokens, conditioned on c (B, cond_dim)."""

    def __init__(self, hidden_dim: int, *, depths: Sequence[int], group_size: int, num_heads: int, mlp_ratio: float,
                 cond_dim: int, rngs: nnx.Rngs):
        depths = tuple(int(d) for d in depths)
        if len(depths) == 0 or any(d < 0 for d in depths):
            raise ValueError(f"model.operator.depths={depths} must be a non-empty tuple of non-negative ints")
        check_attention_dims(hidden_dim, group_size, num_heads)
        self.hidden_dim, self.depths = hidden_dim, depths

        def stack(n):
            return nnx.List([TransformerLayer(hidden_dim, group_size, num_heads, mlp_ratio, cond_dim, rngs=rngs)
                             for _ in range(n)])

        self.down_layers = nnx.List([stack(d) for d in depths[:-1]])
        self.down_proj = nnx.List([nnx.Linear(hidden_dim, hidden_dim, rngs=rngs) for _ in depths[:-1]])
        self.mid_layers = stack(depths[-1])
        # up path, in execution order (deepest stage first)
        self.up_skip = nnx.List([nnx.Linear(hidden_dim, hidden_dim, rngs=rngs) for _ in depths[:-1]])
        self.up_layers = nnx.List([stack(d) for d in reversed(depths[:-1])])
        self.final_norm = layer_norm(hidden_dim, rngs=rngs)

    def layers_in_order(self) -> list[TransformerLayer]:
        """Every ``TransformerLayer`` in execution order (down path, bottleneck, up path)."""
        return [layer for stage in (*self.down_layers, self.mid_layers, *self.up_layers) for layer in stage]

    def modulation(self, c: jax.Array) -> jax.Array:
        """Every layer's AdaLN projection of the conditioning ``c`` (B, cond_dim) in ONE matmul (the layers' kernels
        side by side): (B, L, 6H), row l for ``layers_in_order()[l]``. It depends on c only, so a rollout with
        the same (dt, ν) at every step computes it once (``LatentOperator.rollout``)."""
        chex.assert_rank(c, 2)
        layers = self.layers_in_order()
        width = 6 * self.hidden_dim
        if not layers:
            return jnp.zeros((c.shape[0], 0, width), c.dtype)
        w = jnp.concatenate([layer.mod.proj.kernel[...] for layer in layers], axis=1)
        b = jnp.concatenate([layer.mod.proj.bias[...] for layer in layers])
        return (c @ w + b).reshape(c.shape[0], len(layers), width)

    def __call__(self, x: jax.Array, c: jax.Array | None = None, *, modulation: jax.Array | None = None) -> jax.Array:
        """x: (B, T, H); c: (B, cond_dim), or its ``modulation(c)`` (B, L, 6H) computed beforehand → (B, T, H)."""
        chex.assert_rank(x, 3)
        chex.assert_axis_dimension(x, 2, self.hidden_dim)
        in_shape = x.shape
        m = self.modulation(c) if modulation is None else modulation
        chex.assert_shape(m, (x.shape[0], len(self.layers_in_order()), 6 * self.hidden_dim))
        rows = iter(range(m.shape[1]))
        skips = []
        for layers, proj in zip(self.down_layers, self.down_proj):
            for layer in layers:
                x = layer(x, modulation=m[:, next(rows)])
            skips.append(x)
            x = proj(downsample_tokens(x))
        for layer in self.mid_layers:
            x = layer(x, modulation=m[:, next(rows)])
        for layers, skip_proj, skip in zip(self.up_layers, self.up_skip, reversed(skips)):
            x = upsample_tokens_linear(x, skip.shape[1]) + skip_proj(skip)
            for layer in layers:
                x = layer(x, modulation=m[:, next(rows)])
        x = self.final_norm(x)
        chex.assert_shape(x, in_shape)
        return x
