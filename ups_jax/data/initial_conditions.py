"""PDEBench's random initial conditions for 1D Burgers (``data_gen_NLE/utils.py::init_multi``), made reproducible.

Per sample (``k_tot=4``, ``num_choice_k=2``):

* draw ``num_choice_k`` wave numbers from ``{1..k_tot}`` with replacement; ``c_n`` = how often ``n`` was drawn
  (0, 1 or 2);
* ``u0(x) = sum_n A_n sin(2 pi n c_n x / P + phi_n)``, ``A_n ~ U[0,1]``, ``phi_n ~ U[0, 2 pi)``, with PDEBench's
  period ``P = x[-1] - x[0]`` (= L - dx, so the IC is very slightly non-periodic); modes with ``c_n = 0`` add the
  constant ``A_n sin(phi_n)``;
* with probability 0.1 take ``|u0|``; multiply by a random sign;
* with probability 0.1 multiply by the window ``(tanh((x - xL)/w) - tanh((x - xR)/w)) / 2``.

Differences from PDEBench, both deliberate:

* The window bounds ``xL ~ U[0.1, 0.45]``, ``xR ~ U[0.55, 0.9]`` and the width ``w = 0.01`` are fractions of the
  unit domain; they are mapped into ``[x_min, x_max)`` (``x_min + L * fraction``, ``w = 0.01 L``). On ``(0, 1)``
  this is exactly PDEBench's IC.
* Every sample gets its own key ``fold_in(key, i)`` and all its draws are independent (one uniform vector).
  PDEBench reuses one key for several draws (so they are correlated) and draws all samples jointly. Here
  sample ``i`` depends only on ``(key, i)``: the first ``n`` samples of a larger set are the same ``n``
  samples (up to float32 round-off, as a different batch size compiles a different program).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _one_sample(key, x, x_min, length, k_tot, num_choice_k, p_abs, p_window):
    """``x: (X,)`` -> ``u0: (X,)`` for one sample key.

    All random numbers of a sample come from one ``uniform`` draw (one threefry call compiles far faster than
    eight split/draw pairs under ``vmap``): ``[choices | amplitudes | phases | abs, sign, window, xL, xR]``.
    """
    r = jax.random.uniform(key, (num_choice_k + 2 * k_tot + 5,), x.dtype)
    choice, r = r[:num_choice_k], r[num_choice_k:]
    amp, phase_u, (u_abs, u_sign, u_window, u_left, u_right) = r[:k_tot], r[k_tot:2 * k_tot], r[2 * k_tot:]
    selected = jnp.minimum(jnp.floor(choice * k_tot).astype(jnp.int32), k_tot - 1)  # uniform on {0..k_tot-1}
    counts = jax.nn.one_hot(selected, k_tot, dtype=x.dtype).sum(axis=0)              # (k_tot,) c_n
    period = x[-1] - x[0]
    wave_numbers = 2.0 * jnp.pi * jnp.arange(1, k_tot + 1, dtype=x.dtype) * counts / period
    phase = 2.0 * jnp.pi * phase_u
    u = jnp.sum(amp[:, None] * jnp.sin(wave_numbers[:, None] * x[None, :] + phase[:, None]), axis=0)
    u = jnp.where(u_abs < p_abs, jnp.abs(u), u)
    u = jnp.where(u_sign < 0.5, -u, u)
    x_left = x_min + length * (0.1 + 0.35 * u_left)       # U[0.1, 0.45] of the domain
    x_right = x_min + length * (0.55 + 0.35 * u_right)    # U[0.55, 0.9] of the domain
    width = 0.01 * length
    mask = 0.5 * (jnp.tanh((x - x_left) / width) - jnp.tanh((x - x_right) / width))
    return jnp.where(u_window < p_window, u * mask, u)


@functools.partial(jax.jit, static_argnames=("num_samples", "k_tot", "num_choice_k", "p_abs", "p_window"))
def _batch(key, x, x_min, length, *, num_samples, k_tot, num_choice_k, p_abs, p_window):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_samples))
    return jax.vmap(_one_sample, in_axes=(0, None, None, None, None, None, None, None))(
        keys, x, x_min, length, k_tot, num_choice_k, p_abs, p_window)


def burgers_initial_conditions(key: jax.Array, x, num_samples: int, *, x_min: float, x_max: float,
                               k_tot: int = 4, num_choice_k: int = 2, p_abs: float = 0.1,
                               p_window: float = 0.1) -> jax.Array:
    """Samples ``(num_samples, X)`` initial conditions at the cell centres ``x: (X,)`` (dtype of ``x``).

    Deterministic in ``key`` (``jax.random.PRNGKey(seed)``); sample ``i`` uses ``fold_in(key, i)`` only.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return _batch(key, x, jnp.asarray(x_min, x.dtype), jnp.asarray(x_max - x_min, x.dtype),
                  num_samples=int(num_samples), k_tot=int(k_tot), num_choice_k=int(num_choice_k),
                  p_abs=float(p_abs), p_window=float(p_window))
