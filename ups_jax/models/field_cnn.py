"""A small periodic CNN on fields: the physical-space corrector's network (issue 19 items 2 and 4).

Shared by the corrector in physical space (the rollout state carries the corrected field û) and the hybrid
"solver in the loop" baseline (a coarse solver's step corrected on the same grid). Inputs are fields on a periodic
grid as channels plus log ν as one more channel; the output is one field (a residual). The last convolution starts
at zero, so an untrained corrector returns its input unchanged: adding it can only start from the uncorrected model.

The convolutions are computed as one matmul over k (k² in 2-D) periodically shifted copies of the input, with the
parameters of ``nnx.Conv`` (same layout and initialisation): on the CPU backend XLA runs a convolution's gradient
inside a loop (``lax.scan``: the hybrid's and the corrected rollout's training) ~100× slower than outside one
(measured: 840 ms against 19 ms unrolled for one step of this network), while the shifted-copies matmul is a plain
dot everywhere. ``nnx.Conv`` itself with 'CIRCULAR' padding gives the same values (tests/test_models.py).

The probe that motivated it (benchmarks/probes/field_corrector_probe.py, docs/benchmarks.md "What would help"):
5 convolutions of width 64, kernel 5, residual, explains 57–60 % of the operator's one-step residual on held-out
Burgers states.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

# flax < 0.12 has no nnx.List; a plain list of modules is its container there
_ModuleList = getattr(nnx, "List", list)


def circular_conv(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """``conv`` (an ``nnx.Conv`` with odd kernel sizes) applied with periodic padding, as a matmul over shifted
    copies: out[i] = Σ_j x[i + j − k//2] · W[j] + b in every grid dimension (lax's cross-correlation)."""
    w = conv.kernel[...]
    ks, dims = w.shape[:-2], w.ndim - 2
    copies = x
    for axis, k in enumerate(ks):       # one axis at a time: (B, *grid, k1, ..., C)
        grid_axis = 1 + axis
        copies = jnp.stack([jnp.roll(copies, k // 2 - j, axis=grid_axis) for j in range(k)], axis=-(2 + axis))
    # copies: (B, *grid, k_dims ..., k_1, C) — the stacking put the last axis's offsets outermost; reorder to W's
    letters = "pqr"[:dims]
    order = "".join(reversed(letters))
    out = jnp.einsum(f"...{order}c,{letters}co->...o", copies, w.astype(x.dtype))
    if conv.bias is not None:
        out = out + conv.bias[...].astype(x.dtype)
    return out


class FieldCNN(nnx.Module):
    """(B, *grid, C) fields and ν (B,) → (B, *grid) residual; periodic ('CIRCULAR') padding in every dimension.

    ``dims`` is the grid's dimension (1 or 2); ``num_inputs`` = C, the field channels (log ν is added here).
    """

    def __init__(self, *, num_inputs: int, width: int = 64, kernel: int = 5, depth: int = 5, dims: int = 1,
                 rngs: nnx.Rngs):
        if depth < 2:
            raise ValueError(f"FieldCNN depth must be >= 2 (input and output convolutions), got {depth}")
        if dims not in (1, 2):
            raise ValueError(f"FieldCNN dims must be 1 or 2, got {dims}")
        conv = partial(nnx.Conv, kernel_size=(kernel,) * dims, padding="CIRCULAR", rngs=rngs)
        self.dims = dims
        self.inp = conv(num_inputs + 1, width)
        self.hidden = _ModuleList([conv(width, width) for _ in range(depth - 2)])
        self.out = conv(width, 1, kernel_init=nnx.initializers.zeros)

    def __call__(self, fields: jax.Array, nu: jax.Array) -> jax.Array:
        if fields.ndim != self.dims + 2:
            raise ValueError(f"FieldCNN expects (batch, {self.dims}-D grid, channels), got shape {fields.shape}")
        nu = jnp.broadcast_to(jnp.asarray(nu, fields.dtype), fields.shape[:1])
        nu_ch = jnp.broadcast_to(jnp.log(nu).reshape((-1,) + (1,) * (self.dims + 1)), fields.shape[:-1] + (1,))
        h = nnx.gelu(circular_conv(self.inp, jnp.concatenate([fields, nu_ch], -1)))
        for c in self.hidden:
            h = h + nnx.gelu(circular_conv(c, h))
        return circular_conv(self.out, h)[..., 0]
