"""FNO2d: the FNO paper's 2-D Fourier Neural Operator for Navier–Stokes (Li et al., ICLR 2021,
``fourier_2d_time.py``), in flax.nnx; the 2-D baseline beside ``FNO1d`` (models/fno.py), with the same config keys
(``model.fno``), the same surrogate interface and the same trainer and evaluation.

* input per grid point: the ``context_frames`` last frames (the paper: the 10 given frames) ⊕ the (x, y)
  coordinates → ``fc0 = Linear(h·C + 2 → width)``;
* optional right/top zero padding by ``padding`` points (0 for the periodic torus, as the paper's NS model);
* ``num_layers`` Fourier layers: ``SpectralConv2d(h) + Conv(1x1)(h)`` → GELU (none after the last). The spectral
  conv keeps the ``modes`` lowest frequencies of the rfft2 in y and the ``modes`` lowest positive *and* negative
  frequencies in x (two learned complex ``(in, out, modes, modes)`` tensors, the paper's ``weights1``/``weights2``,
  initialised ``scale · U[0, 1)`` in real and imaginary parts, ``scale = 1/(in·out)``);
* ``fc1 = Linear(width → 128)`` → GELU → ``fc2 = Linear(128 → C)``: the next frame.

The paper's recipe: modes 12, width 20, 4 layers, per-step autoregressive over the frames after the 10 given ones
(configs/fno_ns2d.py). Complex weights are stored as real ``(..., 2)`` arrays (plain float32 for optax/orbax).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from ups_jax.models.fno import INITS, FNOBase, torch_default_init
from ups_jax.models.layers import gelu


class SpectralConv2d(nnx.Module):
    def __init__(self, in_channels: int, out_channels: int, modes: int, *, rngs: nnx.Rngs):
        if modes < 1:
            raise ValueError(f"model.fno.modes={modes} must be >= 1")
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        scale = 1.0 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes, modes, 2)
        self.weight_pos = nnx.Param(scale * jax.random.uniform(rngs.params(), shape))   # x modes 0..m-1
        self.weight_neg = nnx.Param(scale * jax.random.uniform(rngs.params(), shape))   # x modes -m..-1

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, X, Y, in) → (B, X, Y, out); modes beyond the grid's (X//2 in x, Y//2 + 1 in y) are skipped."""
        nx, ny = x.shape[1], x.shape[2]
        mx, my = min(self.modes, nx // 2), min(self.modes, ny // 2 + 1)
        x_ft = jnp.fft.rfft2(x, axes=(1, 2))                                      # (B, X, Y//2+1, in)

        def mul(block, w):
            w = jax.lax.complex(w[..., 0], w[..., 1])[:, :, :mx, :my]              # (in, out, mx, my)
            return jnp.einsum("bxyi,ioxy->bxyo", block, w)

        out_ft = jnp.zeros(x_ft.shape[:3] + (self.out_channels,), x_ft.dtype)
        out_ft = out_ft.at[:, :mx, :my].set(mul(x_ft[:, :mx, :my], self.weight_pos[...]))
        out_ft = out_ft.at[:, nx - mx:, :my].set(mul(x_ft[:, nx - mx:, :my], self.weight_neg[...]))
        return jnp.fft.irfft2(out_ft, s=(nx, ny), axes=(1, 2)).astype(x.dtype)


class FNO2d(FNOBase):
    def __init__(self, *, context_frames: int, channels: int = 1, modes: int = 12, width: int = 20,
                 num_layers: int = 4, padding: int = 0, head_width: int = 128, init: str = "flax",
                 rngs: nnx.Rngs):
        if context_frames < 1 or width < 1 or num_layers < 1 or padding < 0:
            raise ValueError(f"model.fno needs context_frames, width, num_layers >= 1 and padding >= 0 (got "
                             f"{context_frames}, {width}, {num_layers}, {padding})")
        if init not in INITS:
            raise ValueError(f"model.fno.init={init!r}; use one of {INITS}")
        self.context_frames, self.channels, self.padding = context_frames, channels, padding

        def dense(n_in, n_out):   # init='torch': the paper's code is PyTorch, whose defaults differ from flax's
            return nnx.Linear(n_in, n_out, rngs=rngs, **(torch_default_init(n_in) if init == "torch" else {}))

        def pointwise():
            return nnx.Conv(width, width, kernel_size=(1, 1), rngs=rngs,
                            **(torch_default_init(width) if init == "torch" else {}))

        self.fc0 = dense(context_frames * channels + 2, width)
        self.spectral = nnx.List([SpectralConv2d(width, width, modes, rngs=rngs) for _ in range(num_layers)])
        self.pointwise = nnx.List([pointwise() for _ in range(num_layers)])
        self.fc1 = dense(width, head_width)
        self.fc2 = dense(head_width, channels)

    def __call__(self, u_ctx: jax.Array, grid: jax.Array) -> jax.Array:
        """u_ctx: (B, h, X, Y) context frames (oldest first), grid: (X, Y, 2) coordinates → next frame (B, X, Y)."""
        chex.assert_rank(u_ctx, 4)
        b, h, nx, ny = u_ctx.shape
        if h != self.context_frames:
            raise ValueError(f"FNO2d was built for {self.context_frames} context frames, got {h}")
        chex.assert_shape(grid, (nx, ny, 2))
        feats = jnp.concatenate([jnp.moveaxis(u_ctx, 1, -1),
                                 jnp.broadcast_to(grid[None], (b, nx, ny, 2)).astype(u_ctx.dtype)], -1)
        x = self.fc0(feats)
        p = self.padding
        x = jnp.pad(x, ((0, 0), (0, p), (0, p), (0, 0)))
        x = self.fourier_layers(x)
        x = x[:, :nx, :ny]
        out = self.fc2(gelu(self.fc1(x)))[..., 0]
        chex.assert_shape(out, (b, nx, ny))
        return out
