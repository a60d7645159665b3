"""2-D incompressible Navier–Stokes in vorticity form on the unit torus: a pseudo-spectral solver in pure JAX.

The problem of the FNO paper (Li et al., ICLR 2021, its generator ``data_generation/navier_stokes/ns_2d.py``)::

    w_t + u . grad w = nu lap w + f,      u = (psi_y, -psi_x),   -lap psi = w,      (x, y) in [0, 1)^2 periodic,
    f(x, y) = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)),
    w0 ~ N(0, 7^{3/2} (-lap + 49 I)^{-2.5})       (zero mean).

Conventions follow ns_2d.py: grid points ``x_i = i / s`` (not cell centres), array axis 0 = x, axis 1 = y, the
nonlinear term dealiased by the 2/3 rule (modes with ``|k_x|`` or ``|k_y| > 2/3 * s/2`` zeroed), the GRF drawn as
``real(ifft2(xi * sqrt_eig))`` with ``xi`` complex standard normal.

Time stepping (where this departs from ns_2d.py, which uses Crank–Nicolson + Heun with ``dt = 1e-4``): the
integrating-factor Runge–Kutta 4 scheme (Lawson's RK4). Diffusion is integrated exactly (``exp(-nu |2 pi k|^2 dt)``),
the advection and the forcing by classical RK4, whose stability region reaches ``2.8`` on the imaginary axis, so a
step of ``dt ~ 1e-2`` is stable at 256^2 for this flow (|u| < 1) and the solve is ~100x cheaper than the paper's.
Fourth order in ``dt``; spectral in space. Consequences used by the tests (tests/test_ns2d_data.py):

* the Taylor–Green vortex ``w = 2 k cos(k x) cos(k y)`` (nonlinear term identically zero) decays as
  ``exp(-2 nu k^2 t)``: reproduced to round-off, since diffusion is exact;
* a forcing that depends on ``x + y`` only (the FNO forcing) has ``u . grad w = 0`` for ``w = c f``; from ``w0 = 0``
  the exact solution is ``w(t) = (1 - exp(-lam t)) f / lam``, ``lam = 8 pi^2 nu``, which checks the forcing term.

Shapes: ``(S, S)`` one state, ``(B, S, S)`` a batch, ``(B, T, S, S)`` trajectories. Runs in the dtype of ``w0``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FNO_FORCING = "0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))"
PDE = "w_t + u . grad w = Nu lap w + f, u = (psi_y, -psi_x), -lap psi = w, unit torus"
SCHEME = ("pseudo-spectral (FFT), 2/3-rule dealiasing, integrating-factor RK4 (exact diffusion, RK4 for advection "
          "and forcing), fixed step")
GRF_ALPHA, GRF_TAU = 2.5, 7.0


class Grid(NamedTuple):
    """Wavenumbers of an ``s x s`` grid on the unit torus for ``rfft2`` (axis 0 = x full, axis 1 = y half)."""
    s: int
    kx: np.ndarray          # (s, s//2+1) integer wavenumbers
    ky: np.ndarray
    dealias: np.ndarray     # (s, s//2+1) 1 where kept by the 2/3 rule


def grid(s: int) -> Grid:
    if s < 4 or s % 2:
        raise ValueError(f"grid size must be even and >= 4, got {s}")
    k = np.fft.fftfreq(s, 1.0 / s)                  # 0, 1, ..., s/2-1, -s/2, ..., -1
    kx, ky = np.meshgrid(k, np.fft.rfftfreq(s, 1.0 / s), indexing="ij")
    kmax = s // 2
    dealias = ((np.abs(kx) <= 2.0 / 3.0 * kmax) & (np.abs(ky) <= 2.0 / 3.0 * kmax)).astype(np.float64)
    return Grid(s, kx, ky, dealias)


def points(s: int, dtype=np.float32) -> np.ndarray:
    """``(s,)`` grid points ``i / s`` (ns_2d.py's ``linspace(0, 1, s + 1)[:-1]``)."""
    return (np.arange(s, dtype=np.float64) / s).astype(dtype)


def fno_forcing(s: int, amplitude: float = 0.1, dtype=np.float32) -> np.ndarray:
    """``(s, s)`` ``amplitude (sin 2 pi (x + y) + cos 2 pi (x + y))`` at the grid points (axis 0 = x)."""
    x = points(s, np.float64)
    xy = x[:, None] + x[None, :]
    return (amplitude * (np.sin(2 * np.pi * xy) + np.cos(2 * np.pi * xy))).astype(dtype)


def gaussian_random_field(key, batch: int, s: int, *, alpha: float = GRF_ALPHA, tau: float = GRF_TAU,
                          dtype=jnp.float32) -> jax.Array:
    """``(batch, s, s)`` zero-mean samples of the FNO paper's ``N(0, 7^{3/2} (-lap + 49 I)^{-2.5})`` exactly as its
    code draws them (``random_fields.GaussianRF(2, s, alpha=2.5, tau=7)``): ``real(ifft2(xi * sqrt_eig))`` with
    ``xi`` complex standard normal (real and imaginary parts N(0, 1)) and ``sqrt_eig = s^2 sqrt(2) sigma
    (4 pi^2 |k|^2 + tau^2)^(-alpha/2)``, ``sigma = tau^(alpha - 1)``, ``sqrt_eig[0, 0] = 0`` (the code's sqrt(2)
    is not in the paper's formula; kept, so the fields have the paper's data's amplitude)."""
    sigma = math.sqrt(2.0) * tau ** (0.5 * (2 * alpha - 2))
    k = np.fft.fftfreq(s, 1.0 / s)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = sigma * (4 * np.pi ** 2 * k2 + tau ** 2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    kr, ki = jax.random.split(key)
    xi = jax.random.normal(kr, (batch, s, s)) + 1j * jax.random.normal(ki, (batch, s, s))
    # ifft2 includes 1/s^2; ns_2d.py multiplies sqrt_eig by s^2, so the field does not depend on s
    return jnp.real(jnp.fft.ifft2(xi * (s * s * sqrt_eig))).astype(dtype)


def velocity(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(u, v)`` of vorticity ``w`` (..., s, s): ``u = psi_y``, ``v = -psi_x``, ``-lap psi = w``."""
    g = grid(w.shape[-1])
    w_hat = jnp.fft.rfft2(w)
    lap = 4 * np.pi ** 2 * (g.kx ** 2 + g.ky ** 2)
    lap[0, 0] = 1.0
    psi_hat = w_hat / lap
    u = jnp.fft.irfft2(2j * np.pi * g.ky * psi_hat, s=w.shape[-2:])
    v = jnp.fft.irfft2(-2j * np.pi * g.kx * psi_hat, s=w.shape[-2:])
    return u, v


def _rhs_operators(s: int, nu: float, dt: float, dtype):
    g = grid(s)
    ctype = jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64
    lap = 4 * np.pi ** 2 * (g.kx ** 2 + g.ky ** 2)
    inv_lap = np.where(lap == 0, 0.0, 1.0 / np.where(lap == 0, 1.0, lap))
    c = lambda a: jnp.asarray(a, ctype)                                      # noqa: E731
    ops = dict(ikx=c(2j * np.pi * g.kx), iky=c(2j * np.pi * g.ky), inv_lap=c(inv_lap), dealias=c(g.dealias),
               e_half=c(np.exp(-nu * lap * dt / 2)), e_full=c(np.exp(-nu * lap * dt)))
    return ops


def make_stepper(s: int, *, nu: float, dt: float, forcing: np.ndarray | None, dtype=jnp.float32):
    """``step(w_hat) -> w_hat`` after one IF-RK4 step of ``dt`` (spectral ``(s, s//2+1)`` complex states)."""
    o = _rhs_operators(s, nu, dt, dtype)
    ctype = o["ikx"].dtype
    f_hat = (jnp.zeros((s, s // 2 + 1), ctype) if forcing is None
             else jnp.fft.rfft2(jnp.asarray(forcing, dtype)).astype(ctype))

    def rhs(w_hat):                                       # -u . grad w + f, without diffusion
        psi_hat = w_hat * o["inv_lap"]
        u = jnp.fft.irfft2(o["iky"] * psi_hat, s=(s, s))
        v = jnp.fft.irfft2(-o["ikx"] * psi_hat, s=(s, s))
        wx = jnp.fft.irfft2(o["ikx"] * w_hat, s=(s, s))
        wy = jnp.fft.irfft2(o["iky"] * w_hat, s=(s, s))
        return f_hat - o["dealias"] * jnp.fft.rfft2(u * wx + v * wy)

    e1, e2 = o["e_full"], o["e_half"]

    def step(w_hat):
        k1 = dt * rhs(w_hat)
        k2 = dt * rhs(e2 * (w_hat + 0.5 * k1))
        k3 = dt * rhs(e2 * w_hat + 0.5 * k2)
        k4 = dt * rhs(e1 * w_hat + e2 * k3)
        return e1 * w_hat + (e1 * k1 + 2.0 * e2 * (k2 + k3) + k4) / 6.0

    return step


def steps_per_frame(frame_dt: float, max_dt: float) -> int:
    return max(1, int(math.ceil(frame_dt / max_dt - 1e-9)))


def make_solver(s: int, *, nu: float, frames: int, frame_dt: float = 1.0, max_dt: float = 1e-2,
                forcing: np.ndarray | None = None, store_every: int = 1, dtype=jnp.float32):
    """A jitted ``w0 (B, s, s) -> (B, frames, s/store_every, s/store_every)``: frame ``k`` at time ``k * frame_dt``
    (frame 0 = ``w0``), each frame reached in ``ceil(frame_dt / max_dt)`` equal steps.

    ``store_every``: keep every r-th grid point of each frame (ns_2d.py's data is the 256^2 solve subsampled to
    64^2 this way); must divide ``s``. ``vmap`` over the batch, ``lax.scan`` over frames; compiled once per batch
    size (the generator pads its last chunk).
    """
    r = int(store_every)
    if r < 1 or s % r:
        raise ValueError(f"store_every={r} must divide the grid size {s}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    n_sub = steps_per_frame(frame_dt, max_dt)
    step = make_stepper(s, nu=float(nu), dt=float(frame_dt) / n_sub, forcing=forcing, dtype=dtype)

    def advance(w_hat, _):
        w_hat = jax.lax.fori_loop(0, n_sub, lambda _, z: step(z), w_hat)
        return w_hat, jnp.fft.irfft2(w_hat, s=(s, s))[::r, ::r].astype(dtype)

    def one(w):
        w = w.astype(dtype)
        _, later = jax.lax.scan(advance, jnp.fft.rfft2(w), None, length=frames - 1)
        return jnp.concatenate([w[None, ::r, ::r], later], axis=0)

    return jax.jit(jax.vmap(one))


def solve(w0, *, nu: float, frames: int, frame_dt: float = 1.0, max_dt: float = 1e-2,
          forcing: np.ndarray | None = None, store_every: int = 1) -> jax.Array:
    """:func:`make_solver` for ``w0``'s grid and dtype, applied to ``w0`` ``(B, s, s)`` (compiles on every call:
    build the solver once with :func:`make_solver` to solve many batches)."""
    w0 = jnp.asarray(w0)
    if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2]:
        raise ValueError(f"w0 must be (batch, s, s), got {w0.shape}")
    return make_solver(int(w0.shape[-1]), nu=nu, frames=frames, frame_dt=frame_dt, max_dt=max_dt, forcing=forcing,
                       store_every=store_every, dtype=w0.dtype)(w0)
