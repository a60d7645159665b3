"""FNO1d: PDEBench's Fourier Neural Operator baseline (``pdebench/models/fno/fno.py``), in flax.nnx.

The in-project baseline every accuracy report sits beside (issue: "beat PDEBench's FNO at the same budget").
Architecture as PDEBench's ``FNO1d(num_channels, modes, width, initial_step)``:

* input per grid point: the ``context_frames`` (PDEBench ``initial_step``) last frames ⊕ the grid coordinate
  → ``fc0 = Linear(context·C + 1 → width)``;
* right-pad the domain by ``padding`` (2) points with zeros (PDEBench does it "if input is non-periodic");
* 4 Fourier layers: ``SpectralConv1d(width, width, modes)(h) + Conv1d(width, width, 1)(h)`` → GELU (none after
  the last); the spectral conv keeps the lowest ``modes`` rFFT modes and multiplies them by a learned complex
  ``(in, out, modes)`` tensor (initialised ``scale · U[0, 1)`` for real and imaginary parts, ``scale = 1/(in·out)``,
  as ``torch.rand(..., dtype=cfloat)``);
* crop the padding → ``fc1 = Linear(width → 128)`` → GELU → ``fc2 = Linear(128 → C)``: the next frame.

The complex weights are stored as real ``(..., 2)`` arrays so that optax/orbax see plain float32 parameters.
Rollout: slide the context window by one predicted frame per step (PDEBench's autoregressive training and test).

Options (``model.fno``): ``init='torch'`` initialises ``fc0``/``fc1``/``fc2`` and the pointwise convolutions as
torch's ``nn.Linear``/``nn.Conv1d`` do (weights and biases ~ U(−1/√fan_in, 1/√fan_in)); ``'flax'`` keeps flax's
defaults (LeCun-normal kernels, zero biases), std √3 larger. ``grid_range=(lo, hi)``: the grid input is
``lo + (hi − lo) · x01``; PDEBench feeds the file's x-coordinate, i.e. the data's ``(x_min, x_max)``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from ups_jax.models.layers import gelu


class SpectralConv1d(nnx.Module):
    def __init__(self, in_channels: int, out_channels: int, modes: int, *, rngs: nnx.Rngs):
        if modes < 1:
            raise ValueError(f"model.fno.modes={modes} must be >= 1")
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nnx.Param(scale * jax.random.uniform(rngs.params(), (in_channels, out_channels, modes, 2)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, X, in) → (B, X, out); modes above ``X//2 + 1`` do not exist and are skipped."""
        n = x.shape[1]
        m = min(self.modes, n // 2 + 1)
        x_ft = jnp.fft.rfft(x, axis=1)[:, :m]                                      # (B, m, in) complex
        w = self.weight[...]
        w = jax.lax.complex(w[..., 0], w[..., 1])[:, :, :m]                       # (in, out, m)
        out_ft = jnp.einsum("bmi,iom->bmo", x_ft, w)
        return jnp.fft.irfft(out_ft, n=n, axis=1).astype(x.dtype)


INITS = ("flax", "torch")


def torch_default_init(fan_in: int) -> dict:
    """kernel_init and bias_init of torch's ``nn.Linear`` / ``nn.Conv1d`` defaults (``kaiming_uniform_(a=√5)``
    and the bias rule): both U(−1/√fan_in, 1/√fan_in), fan_in = input features × kernel size."""
    bound = 1.0 / float(fan_in) ** 0.5

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return {"kernel_init": uniform, "bias_init": uniform}


def fno_options(section) -> dict:
    """The optional ``model.fno`` keys (``init``, ``grid_range``) as FNO1d keyword arguments; configs written
    before they existed get flax's init and the [0, 1) grid."""
    return {"init": str(section.get("init", "flax")), "grid_range": tuple(section.get("grid_range", (0.0, 1.0)))}


class FNOBase(nnx.Module):
    """What FNO1d and FNO2d (models/fno2d.py) share: the Fourier layers and the autoregressive rollout. A subclass
    sets ``spectral``, ``pointwise`` and ``context_frames`` and maps (B, h, *grid) to the next frame."""

    baseline_row = "FNO"           # its row in the comparison table (training/comparison.py)

    def fourier_layers(self, x: jax.Array) -> jax.Array:
        """``spectral(x) + pointwise(x)`` per layer, GELU after every layer but the last (channels last)."""
        last = len(self.spectral) - 1
        for i, (spec, point) in enumerate(zip(self.spectral, self.pointwise)):
            x = spec(x) + point(x)
            if i < last:
                x = gelu(x)
        return x

    def rollout_fields(self, u_ctx: jax.Array, dt: jax.Array, nu: jax.Array, x01: jax.Array, steps: int,
                       mode: str = "latent") -> jax.Array:
        """The surrogate interface (see ``UPS.rollout_fields``): (B, h, *grid) → (B, steps, *grid) with
        ``lax.scan``, sliding the context window by one predicted frame per step (PDEBench's and the FNO paper's
        autoregressive rollout). Not conditioned on dt or ν (one model per dataset); the grid input is ``x01``,
        the coordinates in [0, 1) (FNO1d maps them to ``grid_range``). ``mode`` is accepted for interface
        compatibility; the FNO has no latent space."""
        del dt, nu, mode

        def body(ctx, _):
            nxt = self(ctx, x01)
            return jnp.concatenate([ctx[:, 1:], nxt[:, None]], axis=1), nxt

        _, us = jax.lax.scan(body, u_ctx, None, length=int(steps))
        return jnp.swapaxes(us, 0, 1)


class FNO1d(FNOBase):
    def __init__(self, *, context_frames: int, channels: int = 1, modes: int = 12, width: int = 20,
                 num_layers: int = 4, padding: int = 2, head_width: int = 128, init: str = "flax",
                 grid_range: tuple[float, float] = (0.0, 1.0), rngs: nnx.Rngs):
        if context_frames < 1 or width < 1 or num_layers < 1 or padding < 0:
            raise ValueError(f"model.fno needs context_frames, width, num_layers >= 1 and padding >= 0 (got "
                             f"{context_frames}, {width}, {num_layers}, {padding})")
        if init not in INITS:
            raise ValueError(f"model.fno.init={init!r}; use one of {INITS}")
        if len(grid_range) != 2 or not float(grid_range[0]) < float(grid_range[1]):
            raise ValueError(f"model.fno.grid_range={tuple(grid_range)}; use (lo, hi) with lo < hi")
        self.context_frames, self.channels, self.padding = context_frames, channels, padding
        self.grid_lo, self.grid_scale = float(grid_range[0]), float(grid_range[1]) - float(grid_range[0])

        def linear(n_in, n_out):
            return nnx.Linear(n_in, n_out, rngs=rngs, **(torch_default_init(n_in) if init == "torch" else {}))

        def pointwise():
            return nnx.Conv(width, width, kernel_size=(1,), rngs=rngs,
                            **(torch_default_init(width) if init == "torch" else {}))

        self.fc0 = linear(context_frames * channels + 1, width)
        self.spectral = nnx.List([SpectralConv1d(width, width, modes, rngs=rngs) for _ in range(num_layers)])
        self.pointwise = nnx.List([pointwise() for _ in range(num_layers)])
        self.fc1 = linear(width, head_width)
        self.fc2 = linear(head_width, channels)

    def __call__(self, u_ctx: jax.Array, grid: jax.Array) -> jax.Array:
        """u_ctx: (B, h, X) context frames (oldest first), grid: (X,) coordinates in [0, 1) → next frame (B, X)."""
        chex.assert_rank(u_ctx, 3)
        b, h, n = u_ctx.shape
        if h != self.context_frames:
            raise ValueError(f"FNO1d was built for {self.context_frames} context frames, got {h}")
        grid = self.grid_lo + self.grid_scale * grid
        feats = jnp.concatenate([jnp.swapaxes(u_ctx, 1, 2),
                                 jnp.broadcast_to(grid[None, :, None], (b, n, 1)).astype(u_ctx.dtype)], -1)
        x = self.fc0(feats)
        x = jnp.pad(x, ((0, 0), (0, self.padding), (0, 0)))
        x = self.fourier_layers(x)
        x = x[:, :n]
        out = self.fc2(gelu(self.fc1(x)))[..., 0]
        chex.assert_shape(out, (b, n))
        return out
