"""The hybrid baseline: the built-in finite-volume Burgers solver on a coarse grid with a learned correction
("solver in the loop", Um et al. 2020; Bar-Sinai et al. 2019), issue 19 item 4.

One step of Δt (the data's frame step): the coarse state ``u_c`` (``cells`` cell averages) is advanced by the
built-in solver (``ups_jax.data.burgers.step``: PDEBench's MUSCL/MC predictor–corrector, the data's own equation),
then corrected on the same grid by a periodic CNN (models/field_cnn.py) that reads the solver's output and the
previous state: ``u_c' = S(u_c) + CNN([S(u_c), u_c], ν)``. The rollout carries ``u_c``; each frame is brought to the
protocol's points by periodic piecewise-linear interpolation between cell centres (``data.burgers.
interpolate_periodic``'s rule), the same readout the coarse-solver rows of benchmarks/rollout_vs_solver.py use. The
CNN's last layer starts at zero, so an untrained hybrid *is* the coarse solver.

Training is the FNO baseline's autoregressive loss (training/losses.py ``make_fno_loss``: the sum over K rolled-out
steps of the per-step MSE) with gradients through the solver: the correction learns to fix the coarse solver's
error as it accumulates over its own rollout, which is what "solver in the loop" means. The model works on raw
(not normalised) fields: the solver needs physical values (``model.normalize=False``, checked).

Sub-steps: inside one Δt the solver takes ``max_substeps`` steps in a ``lax.scan`` (differentiable), each of
``min(stable_dt(u), time left)`` (PDEBench's CFL bound, not differentiated), so steps after the interval is covered
are no-ops; the last one takes whatever time is left. ``max_substeps`` must cover Δt at the largest speed the
rollout meets (a coarse grid needs few: 32 cells on (−1, 1) at |u| ≤ 2 need ~7 for Δt = 0.05 at CFL 0.25).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ups_jax.data import burgers
from ups_jax.models.field_cnn import FieldCNN


def restrict_points(u: jax.Array, cells: int) -> jax.Array:
    """(B, X) point values on X evenly spaced points → (B, cells) block means (X % cells == 0): the cell averages
    of the coarse grid, to second order."""
    b, x = u.shape
    return u.reshape(b, cells, x // cells).mean(axis=-1)


def interpolate_to(u_c: jax.Array, x01: jax.Array) -> jax.Array:
    """(B, n) values at the centres of n equal periodic cells → (B, P) at the points ``x01`` in [0, 1)."""
    n = u_c.shape[-1]
    s = x01 * n - 0.5                                   # continuous cell index
    lo = jnp.floor(s)
    w = (s - lo).astype(u_c.dtype)
    i0 = lo.astype(jnp.int32) % n
    i1 = (i0 + 1) % n
    return (1.0 - w) * u_c[:, i0] + w * u_c[:, i1]


class HybridSolver(nnx.Module):
    """Coarse solver + learned correction, with the surrogate interface ``rollout_fields`` of UPS and the FNO."""

    baseline_row = "hybrid"        # its row in the comparison table (training/comparison.py)

    def __init__(self, *, cells: int, domain: tuple[float, float], advective_scale: float, cfl: float,
                 max_substeps: int, width: int, kernel: int, depth: int, rngs: nnx.Rngs):
        lo, hi = float(domain[0]), float(domain[1])
        if not (cells >= 2 and hi > lo and max_substeps >= 1 and 0 < cfl <= 1):
            raise ValueError(f"model.hybrid: need cells >= 2, domain lo < hi, max_substeps >= 1, 0 < cfl <= 1 "
                             f"(got cells={cells}, domain={domain}, max_substeps={max_substeps}, cfl={cfl})")
        self.cells, self.dx = int(cells), (hi - lo) / int(cells)
        self.advective_scale, self.cfl, self.max_substeps = float(advective_scale), float(cfl), int(max_substeps)
        self.context_frames = 1
        self.correction = FieldCNN(num_inputs=2, width=width, kernel=kernel, depth=depth, dims=1, rngs=rngs)

    def solver_step(self, u_c: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        """The built-in solver over one interval ``dt`` (B,) from ``u_c`` (B, cells), ν (B,) (PDEBench's Nu)."""
        dx, n_sub = self.dx, self.max_substeps

        def one(u, dt1, nu1):
            def body(carry, k):
                u, left = carry
                h = jax.lax.stop_gradient(jnp.minimum(burgers.stable_dt(u, dx, nu1, self.cfl), left))
                h = jnp.where(k == n_sub - 1, left, h)     # the last sub-step covers what is left
                return (burgers.step(u, h, dx, nu1, self.advective_scale), left - h), None

            (u, _), _ = jax.lax.scan(body, (u, dt1), jnp.arange(n_sub))
            return u

        return jax.vmap(one)(u_c, jnp.broadcast_to(dt, u_c.shape[:1]).astype(u_c.dtype),
                             jnp.broadcast_to(nu, u_c.shape[:1]).astype(u_c.dtype))

    def step(self, u_c: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        s = self.solver_step(u_c, dt, nu)
        return s + self.correction(jnp.stack([s, u_c], axis=-1), nu)

    def rollout_fields(self, u_ctx: jax.Array, dt: jax.Array, nu: jax.Array, x01: jax.Array, steps: int,
                       mode: str = "latent") -> jax.Array:
        """(B, 1, X) raw given frame → (B, steps, X) on the points ``x01``. ``mode`` is accepted for interface
        compatibility (there is no latent space)."""
        del mode
        if u_ctx.shape[-1] % self.cells:
            raise ValueError(f"model.hybrid.cells={self.cells} must divide the data's {u_ctx.shape[-1]} points")
        u_c = restrict_points(u_ctx[:, -1], self.cells)

        def body(u, _):
            u = self.step(u, dt, nu)
            return u, interpolate_to(u, x01)

        _, us = jax.lax.scan(body, u_c, None, length=int(steps))
        return jnp.swapaxes(us, 0, 1)


def hybrid_options(section) -> dict:
    """``model.hybrid`` as HybridSolver keyword arguments."""
    keys = ("cells", "domain", "advective_scale", "cfl", "max_substeps", "width", "kernel", "depth")
    missing = [k for k in keys if k not in section]
    if missing:
        from ups_jax.errors import ConfigError

        raise ConfigError(f"model.hybrid lacks {', '.join(missing)}; see configs/hybrid_burgers.py")
    out = {k: section[k] for k in keys}
    out["domain"] = tuple(float(v) for v in out["domain"])
    return out
