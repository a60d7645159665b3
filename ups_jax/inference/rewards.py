"""Physics rewards for test-time compute, on decoded, de-normalised physical fields of periodic 1-D Burgers.

The default data solve u_t + (u²)_x = (ν/π) u_xx on x ∈ (−1, 1), periodic (README, "Equation of the default
data"). Any viscous conservation law u_t + f(u)_x = κ u_xx on a periodic domain (κ = ν/π here, any flux f) has
three properties a prediction must keep:

* **mass** ∫u dx is conserved exactly;
* **energy** ∫u² dx never grows (d/dt ½∫u² = −κ∫u_x² ≤ 0: the flux term ∫u f(u)_x dx integrates to zero);
* **total variation** Σ|u_{i+1} − u_i| never grows (scalar conservation laws with viscosity are TVD).

Each penalty is relative and dimensionless, computed *per sample* (any leading axes are kept; nothing is averaged
over a batch), and is exactly zero for a field that conserves mass and does not gain energy or variation:

    mass   = |mean(u_new) − mean_ref| / rms(u_prev)             (mean_ref: the given initial frame's mean)
    energy = max(0, E(u_new) − E(u_prev)) / E(u_prev)            E(u) = mean(u²)
    tv     = max(0, TV(u_new) − TV(u_prev)) / TV(u_prev)         TV(u) = Σ_i |u_{i+1} − u_i| (periodic)

reward = −(w_mass·mass + w_energy·energy + w_tv·tv) ≤ 0 (0 = no violation). On a uniform periodic grid the
integrals are means times the domain length, which cancels in every ratio. (The original's rewards used a random
decoder and fields Burgers does not have: ups-original.md §6.3, §12 item 8.)
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

PENALTIES = ("mass", "energy", "tv")
_TINY = 1e-12   # only guards 0/0 for an identically zero field


def total_variation(u: jax.Array) -> jax.Array:
    """Periodic total variation over the last axis: (..., X) → (...)."""
    return jnp.sum(jnp.abs(jnp.roll(u, -1, axis=-1) - u), axis=-1)


def penalties(u_new: jax.Array, u_prev: jax.Array, mean_ref: jax.Array) -> dict[str, jax.Array]:
    """u_new, u_prev: (..., X) physical fields; mean_ref: (...) the conserved mean → {name: (...)} ≥ 0."""
    rms_prev = jnp.sqrt(jnp.mean(jnp.square(u_prev), axis=-1))
    e_new, e_prev = jnp.mean(jnp.square(u_new), axis=-1), jnp.mean(jnp.square(u_prev), axis=-1)
    tv_new, tv_prev = total_variation(u_new), total_variation(u_prev)
    return {
        "mass": jnp.abs(jnp.mean(u_new, axis=-1) - mean_ref) / (rms_prev + _TINY),
        "energy": jax.nn.relu(e_new - e_prev) / (e_prev + _TINY),
        "tv": jax.nn.relu(tv_new - tv_prev) / (tv_prev + _TINY),
    }


def reward(u_new: jax.Array, u_prev: jax.Array, mean_ref: jax.Array, weights: Mapping[str, float]) -> jax.Array:
    """−Σ_k w_k · penalty_k per sample: (..., X) → (...)."""
    unknown = set(weights) - set(PENALTIES)
    if unknown:
        raise ValueError(f"ttc.weights: unknown reward(s) {sorted(unknown)}; choose from {PENALTIES}")
    p = penalties(u_new, u_prev, mean_ref)
    total = jnp.zeros(jnp.shape(u_new)[:-1], jnp.float32)
    for k in PENALTIES:
        if float(weights.get(k, 0.0)):
            total = total + float(weights[k]) * p[k]
    return -total
