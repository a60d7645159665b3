"""Viscous Burgers on a periodic domain: PDEBench's finite-volume scheme in pure JAX, plus a Cole–Hopf reference.

The PDE, with ``nu`` the "Nu" of PDEBench's file names (diffusion coefficient ``nu / pi``) and ``a`` the
``advective_scale`` argument::

    u_t + a (u^2 / 2)_x = (nu / pi) u_xx,        x in [x_min, x_max), periodic.

``a = 1`` is PDEBench's code at HEAD (commit 9754b4c, ``data_gen_NLE/BurgersEq/burgers_multi_solution_Hydra.py``);
``a = 2`` is its code before commit fd12554 (the outer 1/2 of the upwind flux missing: ``u_t + (u^2)_x``), which
made PDEBench's released files and is what the ``pdebench`` 0.1.0 wheel still contains. The functions here default
to ``a = 1``; the data generator (``ups_jax.data.generate``) defaults to ``a = 2``, PDEBench's released files.

Scheme (PDEBench's):

* cell-centred finite volumes, ``x_i = x_min + (i + 1/2) dx``;
* MUSCL reconstruction, slopes from the monotonised-central limiter
  ``VL(a, b, c) = sign(c) * (1 + sign(a b)) / 2 * min(2 min(|a|, |b|), |c|)`` applied to the left, right and
  central differences; ``uL_i = u_i - slope_i / 2``, ``uR_i = u_i + slope_i / 2``;
* interface flux at ``i + 1/2`` (Roe/upwind with speed ``|uL_{i+1} + uR_i| / 2``) times ``a``, plus a central
  diffusive flux::

      F = a/2 [f(uR_i) + f(uL_{i+1}) - 1/2 |uL_{i+1} + uR_i| (uL_{i+1} - uR_i)] - (nu/pi) (u_{i+1} - u_i) / dx,
      f(u) = u^2 / 2;

* two-stage predictor–corrector: ``u_half = u - dt/2 dF(u)/dx``, ``u_new = u - dt dF(u_half)/dx``;
* adaptive step ``dt = min(CFL dx / (max|u| + 1e-8), CFL dx^2 / (2 nu/pi), t_save - t)`` with CFL = 0.25,
  chosen per sample (the solver is ``vmap``-ed over samples, as in PDEBench; PDEBench's pre-fd12554 code used the
  same bound with ``a = 2``, so ``a`` does not change the step).

Shapes follow the Exponax convention in docstrings: ``(X,)`` one state, ``(B, X)`` a batch, ``(B, T, X)`` a batch
of trajectories. Everything runs in the dtype of the initial condition (float32 unless x64 is enabled).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

CFL = 0.25
DT_SAVE = 0.01
T_FINAL = 2.0


# --------------------------------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------------------------------
def cell_centres(nx: int, x_min: float = -1.0, x_max: float = 1.0, dtype=np.float32) -> np.ndarray:
    """Cell centres ``(X,)`` of ``nx`` equal cells on ``[x_min, x_max)``, computed like PDEBench (edges + dx/2)."""
    if nx < 1 or not x_max > x_min:
        raise ValueError(f"need nx >= 1 and x_max > x_min, got nx={nx}, x_min={x_min}, x_max={x_max}")
    edges = np.linspace(x_min, x_max, nx + 1, dtype=np.float64)
    dx = (x_max - x_min) / nx
    return (edges[:-1] + 0.5 * dx).astype(dtype)


def save_times(t_final: float = T_FINAL, dt_save: float = DT_SAVE, dtype=np.float32) -> np.ndarray:
    """Frame times ``(T,)`` = ``0, dt_save, ..., t_final`` (201 frames for PDEBench Burgers)."""
    n = int(math.ceil(t_final / dt_save - 1e-9)) + 1
    return (np.arange(n, dtype=np.float64) * dt_save).astype(dtype)


def restrict(u: np.ndarray, nx: int) -> np.ndarray:
    """Cell averages ``(..., nx)`` of ``u: (..., X)`` on a grid of ``nx`` cells (``X % nx == 0``): the finite-volume
    restriction (each coarse cell is the mean of the fine cells it covers)."""
    u = np.asarray(u)
    if nx < 1 or u.shape[-1] % nx:
        raise ValueError(f"cannot restrict {u.shape[-1]} cells to {nx}: {nx} must divide {u.shape[-1]}")
    return u.reshape(*u.shape[:-1], nx, u.shape[-1] // nx).mean(axis=-1)


def interpolate_periodic(u: np.ndarray, x_min: float, x_max: float, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear periodic interpolation of cell values ``u: (..., n)`` (at the cell centres of ``n`` equal
    cells on ``[x_min, x_max)``) to the points ``x: (P,)``; returns ``(..., P)``. Exact for cell centres that
    coincide with ``x``; second-order accurate for smooth fields."""
    u = np.asarray(u)
    n = u.shape[-1]
    s = (np.asarray(x, np.float64) - x_min) / ((x_max - x_min) / n) - 0.5   # continuous cell index
    lo = np.floor(s)
    w = s - lo
    i0 = lo.astype(np.int64) % n
    i1 = (i0 + 1) % n
    return (1.0 - w) * u[..., i0] + w * u[..., i1]


# --------------------------------------------------------------------------------------------------------------
# spatial operator
# --------------------------------------------------------------------------------------------------------------
def mc_limiter(a, b, c, alpha: float = 2.0):
    """PDEBench's ``VLlimiter``: ``sign(c) (1 + sign(ab))/2 min(alpha min(|a|,|b|), |c|)`` (monotonised central)."""
    return jnp.sign(c) * (0.5 + 0.5 * jnp.sign(a * b)) * jnp.minimum(alpha * jnp.minimum(jnp.abs(a), jnp.abs(b)),
                                                                     jnp.abs(c))


def interface_flux(u: jax.Array, dx, nu, advective_scale: float = 1.0) -> jax.Array:
    """Numerical flux ``(X,)`` at the right face ``i + 1/2`` of every cell of a periodic state ``u: (X,)``.

    ``advective_scale`` is ``a`` of the module docstring: 1 = ``u_t + (u^2/2)_x`` (PDEBench HEAD), 2 =
    ``u_t + (u^2)_x`` (PDEBench before commit fd12554: its released files).
    """
    u_m = jnp.roll(u, 1)    # u_{i-1}
    u_p = jnp.roll(u, -1)   # u_{i+1}
    slope = mc_limiter(u - u_m, u_p - u, 0.5 * (u_p - u_m))
    u_left = u - 0.5 * slope          # value at the left face of cell i
    u_right = u + 0.5 * slope         # value at the right face of cell i
    ul_next = jnp.roll(u_left, -1)    # uL_{i+1}
    f_right = 0.5 * u_right ** 2
    f_left_next = 0.5 * ul_next ** 2
    flux = 0.5 * (f_right + f_left_next - 0.5 * jnp.abs(ul_next + u_right) * (ul_next - u_right))
    if advective_scale != 1.0:
        flux = advective_scale * flux
    return flux - (nu / jnp.pi) * (u_p - u) / dx


def flux_divergence(u: jax.Array, dx, nu, advective_scale: float = 1.0) -> jax.Array:
    """``(F_{i+1/2} - F_{i-1/2}) / dx``: ``(X,) -> (X,)``; the semi-discrete equation is ``du/dt = -this``.

    Periodic and telescoping: ``sum(flux_divergence(u)) == 0`` up to round-off (discrete mass conservation).
    """
    flux = interface_flux(u, dx, nu, advective_scale)
    return (flux - jnp.roll(flux, 1)) / dx


def stable_dt(u: jax.Array, dx, nu, cfl: float = CFL) -> jax.Array:
    """PDEBench's step bound ``min(CFL dx/(max|u| + 1e-8), CFL dx^2/(2 nu/pi))`` for one state ``u: (X,)``."""
    dt_adv = cfl * dx / (jnp.max(jnp.abs(u)) + 1e-8)
    kappa = nu / jnp.pi
    dt_dif = jnp.where(kappa > 0, cfl * 0.5 * dx * dx / jnp.where(kappa > 0, kappa, 1.0), jnp.inf)
    return jnp.minimum(dt_adv, dt_dif)


def step(u: jax.Array, dt, dx, nu, advective_scale: float = 1.0) -> jax.Array:
    """One predictor–corrector step of size ``dt``: ``u: (X,) -> (X,)`` (PDEBench's ``update`` twice)."""
    # PDEBench: u_tmp = update(u, u, dt/2); u = update(u, u_tmp, dt), update = u - dt/dx (F[1:] - F[:-1])
    u_half = u - (0.5 * dt) * flux_divergence(u, dx, nu, advective_scale)
    return u - dt * flux_divergence(u_half, dx, nu, advective_scale)


# --------------------------------------------------------------------------------------------------------------
# time integration
# --------------------------------------------------------------------------------------------------------------
def _solve_one(u0, nu, dx, intervals, *, cfl, max_steps_per_save, advective_scale):
    """``u0: (X,)`` -> frames ``(T, X)`` at ``t_0 + cumsum(intervals)`` (plus u0 first) and the step count."""
    dtype = u0.dtype
    nu = jnp.asarray(nu, dtype)
    dx = jnp.asarray(dx, dtype)

    def advance(u, interval):
        # Integrate exactly ``interval`` by tracking the remaining time (no drift of an absolute float32 clock).
        tol = 1e-6 * interval

        def cond(carry):
            remaining, _, n = carry
            return (remaining > tol) & (n < max_steps_per_save)

        def body(carry):
            remaining, u, n = carry
            dt = jnp.minimum(stable_dt(u, dx, nu, cfl), remaining)
            u = step(u, dt, dx, nu, advective_scale)
            return remaining - dt, u, n + 1

        _, u, n = jax.lax.while_loop(cond, body, (interval, u, jnp.zeros((), jnp.int32)))
        return u, (u, n)

    _, (frames, steps) = jax.lax.scan(advance, u0, intervals)
    return jnp.concatenate([u0[None], frames], axis=0), jnp.sum(steps)


@functools.partial(jax.jit, static_argnames=("cfl", "max_steps_per_save", "advective_scale"))
def _solve_batch(u0, nu, dx, intervals, *, cfl, max_steps_per_save, advective_scale):
    one = functools.partial(_solve_one, cfl=cfl, max_steps_per_save=max_steps_per_save,
                            advective_scale=advective_scale)
    return jax.vmap(one, in_axes=(0, 0, None, None))(u0, nu, dx, intervals)


def solve(u0, *, dx: float, nu, t_save, cfl: float = CFL, max_steps_per_save: int = 10_000_000,
          advective_scale: float = 1.0, return_steps: bool = False):
    """Solves a batch of periodic viscous Burgers problems and returns the saved frames.

    Args:
      u0: ``(B, X)`` initial cell values (PDEBench uses the IC's point values at the cell centres).
      dx: cell width.
      nu: PDEBench "Nu" (the diffusion coefficient is ``nu / pi``): a scalar or ``(B,)`` per sample.
      t_save: ``(T,)`` increasing save times; ``t_save[0]`` is the time of ``u0`` (frame 0 is ``u0`` itself).
      cfl: Courant number (PDEBench: 0.25).
      max_steps_per_save: safety cap on solver steps between two frames (guards against blow-ups).
      advective_scale: 1 = PDEBench HEAD; 2 = the pre-fd12554 flux of PDEBench's released files (see
        ``interface_flux``).
      return_steps: also return the number of solver steps per sample.

    Returns:
      ``(B, T, X)`` frames in the dtype of ``u0``; with ``return_steps`` also ``(B,)`` int32 step counts.
    """
    u0 = jnp.asarray(u0)
    if u0.ndim != 2:
        raise ValueError(f"u0 must be (B, X), got shape {u0.shape}")
    if not jnp.issubdtype(u0.dtype, jnp.floating):
        u0 = u0.astype(jnp.float32)
    t_save = np.asarray(t_save, dtype=np.float64)
    if t_save.ndim != 1 or t_save.size < 1 or np.any(np.diff(t_save) <= 0):
        raise ValueError("t_save must be a 1-D increasing array of save times")
    intervals = jnp.asarray(np.diff(t_save), u0.dtype)
    nu = jnp.broadcast_to(jnp.asarray(nu, u0.dtype), (u0.shape[0],))
    frames, steps = _solve_batch(u0, nu, jnp.asarray(dx, u0.dtype), intervals, cfl=float(cfl),
                                 max_steps_per_save=int(max_steps_per_save),
                                 advective_scale=float(advective_scale))
    return (frames, steps) if return_steps else frames


# --------------------------------------------------------------------------------------------------------------
# Cole–Hopf reference (float64 numpy)
# --------------------------------------------------------------------------------------------------------------
def sine_potential(x_min: float = -1.0, x_max: float = 1.0, amplitude: float = 1.0) -> Callable:
    """Potential ``U0(x) = int_{x_min}^x u0`` of ``u0(x) = amplitude sin(2 pi (x - x_min) / L)`` (periodic)."""
    length = x_max - x_min

    def potential(x):
        return amplitude * length / (2 * np.pi) * (1.0 - np.cos(2 * np.pi * (np.asarray(x) - x_min) / length))

    return potential


def _heat_coefficients(t: float, nu: float, x_min: float, x_max: float, potential: Callable, n_modes: int):
    """Fourier coefficients of ``phi(., t)``, ``phi_t = kappa phi_xx``, ``phi(., 0) = exp(-U0 / (2 kappa))``."""
    kappa = nu / np.pi
    length = x_max - x_min
    grid = x_min + length * np.arange(n_modes) / n_modes
    exponent = -np.asarray(potential(grid), np.float64) / (2 * kappa)
    phi0 = np.exp(exponent - exponent.max())            # scale-free: u = -2 kappa phi_x / phi
    coef = np.fft.rfft(phi0) / n_modes
    k = 2 * np.pi * np.arange(coef.size) / length
    coef = coef * np.exp(-kappa * k ** 2 * t)
    if n_modes % 2 == 0:
        coef[-1] = 0.0                                  # drop the (negligible) Nyquist term
    return coef, k, kappa


def _evaluate_series(coef, k, x, x_min, derivative: bool):
    phase = np.exp(1j * np.outer(np.asarray(x, np.float64) - x_min, k))   # (len(x), modes)
    weights = np.full(k.shape, 2.0)
    weights[0] = 1.0
    c = coef * weights * ((1j * k) if derivative else 1.0)
    return np.real(phase @ c)


def cole_hopf_solution(x, t: float, nu: float, *, x_min: float = -1.0, x_max: float = 1.0,
                       potential: Callable | None = None, n_modes: int = 4096) -> np.ndarray:
    """Exact point values ``u(x, t)`` ``(len(x),)`` float64 of ``u_t + u u_x = (nu/pi) u_xx`` (periodic).

    Cole–Hopf: ``u = -2 kappa phi_x / phi`` with ``phi`` solving the heat equation from
    ``exp(-U0 / (2 kappa))``, ``kappa = nu / pi``; ``phi`` is evaluated by its Fourier series (spectrally
    accurate for the smooth ``phi0``). ``potential`` is ``U0(x) = int_{x_min}^x u0`` and must be periodic
    (``u0`` with zero mean); default: ``u0 = sin(2 pi (x - x_min) / L)``.
    """
    potential = potential or sine_potential(x_min, x_max)
    coef, k, kappa = _heat_coefficients(t, nu, x_min, x_max, potential, n_modes)
    phi = _evaluate_series(coef, k, x, x_min, derivative=False)
    phi_x = _evaluate_series(coef, k, x, x_min, derivative=True)
    return -2 * kappa * phi_x / phi


def cole_hopf_cell_averages(nx: int, t: float, nu: float, *, x_min: float = -1.0, x_max: float = 1.0,
                            potential: Callable | None = None, n_modes: int = 4096) -> np.ndarray:
    """Exact cell averages ``(nx,)`` float64: ``-2 kappa [ln phi]_{x_{i-1/2}}^{x_{i+1/2}} / dx`` (no quadrature)."""
    potential = potential or sine_potential(x_min, x_max)
    coef, k, kappa = _heat_coefficients(t, nu, x_min, x_max, potential, n_modes)
    edges = np.linspace(x_min, x_max, nx + 1)
    log_phi = np.log(_evaluate_series(coef, k, edges, x_min, derivative=False))
    return -2 * kappa * np.diff(log_phi) / ((x_max - x_min) / nx)
