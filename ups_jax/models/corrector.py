"""Latent refiners on top of the frozen operator: the diffusion residual corrector and its distilled student.

The operator predicts the next latent state z̃ = F(z_t). The corrector models the *residual* r = z*_{t+1} − z̃ between
the encoder's latent of the true next window and that prediction, as a diffusion model (PDE-Refiner, Lippe et al.
2023, the nearest published design; pdebench-and-field.md §2). Differences from the original's "diffusion residual"
(ups-original.md §4.8, §12 item 9), which was a τ-conditioned regressor with no noise and no denoising objective:

* variance-preserving noise levels σ_0 = 1 (pure noise) and σ_k = min_noise_std^(k/K), k = 1..K, α_k = √(1 − σ_k²);
  the clean signal is the residual in units of ``residual_scale``: x₀ = r / residual_scale;
* v-prediction (as PDE-Refiner): the network sees x_k = α_k x₀ + σ_k ε, the operator's prediction z̃, the previous
  state z_t, the level k and (dt, ν), and predicts v = α_k ε − σ_k x₀; x̂₀ = α_k x_k − σ_k v̂;
* few-step refinement (PDE-Refiner's sampler): start from pure noise at level 0 (where v = −x₀, i.e. a regression of
  the residual), then for k = 1..K re-noise the current estimate to level k and denoise it again. K + 1 network
  calls per step. Each level focuses the model on the residual's components above the noise amplitude σ_k, which
  is how PDE-Refiner recovers low-amplitude (high-frequency) components a one-step MSE model neglects. The
  re-noising is deterministic (DDIM, η = 0: the network's own noise estimate is re-used) where PDE-Refiner draws
  fresh noise (a DDPM step); with its tiny σ_k the two differ little, and DDIM makes the output a function of the
  level-0 noise alone, which the student can be distilled on;
* predictor–corrector rollout: z_{t+1} = z̃ + residual_scale · x̂₀ at every step (the state stays in latent space).

The student is the same network run on the first ``S`` levels only (S = 1 or 2 calls per step), initialised from the
corrector's weights and trained to reproduce the corrector's K+1-call output from the same level-0 noise (one round
of progressive / sampler distillation of a DDIM sampler: Salimans & Ho 2022, Luhman & Luhman 2021); see
training/refiner_losses.py.
Different noise seeds give different candidates: test-time compute (inference/ttc.py) samples them.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax.models.operator import ConditionEmbedding
from ups_jax.models.pdet import PDETransformer, check_attention_dims


def noise_sigmas(refine_steps: int, min_noise_std: float) -> tuple[float, ...]:
    """σ per level: (1, m^(1/K), m^(2/K), …, m) with m = ``min_noise_std``, K = ``refine_steps``."""
    K, m = int(refine_steps), float(min_noise_std)
    if K < 0 or not 0 < m < 1:
        raise ValueError(f"model.corrector.refine_steps={K} must be >= 0 and min_noise_std={m} in (0, 1)")
    return (1.0,) + tuple(m ** (k / K) for k in range(1, K + 1))


class LatentDenoiser(nnx.Module):
    """A PDE-Transformer on latent tokens: ``num_inputs`` stacked (B, T, D) tensors → (B, T, D), conditioned on
    (dt, ν) and a discrete level (noise level or iteration index) through AdaLN-Zero.

    ``Linear(num_inputs·D → H)`` + learned token positions → U-shaped PDET (models/pdet.py) → ``Linear(H → D)``.
    ``output_init_scale`` None: the Flax default init (an output of unit scale, what v-prediction targets have);
    a small value makes the module start as ≈ 0 (the steady prior's increments)."""

    def __init__(self, *, latent_dim: int, latent_tokens: int, num_inputs: int, num_levels: int, hidden_dim: int,
                 group_size: int, num_heads: int, depths: Sequence[int], mlp_ratio: float, cond_dim: int,
                 output_init_scale: float | None = None, config_prefix: str = "model.corrector", rngs: nnx.Rngs):
        check_attention_dims(hidden_dim, group_size, num_heads, prefix=config_prefix)
        if num_inputs < 1 or num_levels < 1:
            raise ValueError(f"{config_prefix}: needs at least one input and one level")
        self.latent_dim, self.latent_tokens, self.num_inputs, self.num_levels = (latent_dim, latent_tokens,
                                                                                  num_inputs, num_levels)
        self.cond_embed = ConditionEmbedding(cond_dim, rngs=rngs)
        self.level_embed = nnx.Embed(num_levels, cond_dim, rngs=rngs)
        self.input_proj = nnx.Linear(num_inputs * latent_dim, hidden_dim, rngs=rngs)
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (latent_tokens, hidden_dim)))
        self.pdet = PDETransformer(hidden_dim, depths=depths, group_size=group_size, num_heads=num_heads,
                                   mlp_ratio=mlp_ratio, cond_dim=cond_dim, rngs=rngs)
        kw = {}
        if output_init_scale is not None:
            kw["kernel_init"] = nnx.initializers.variance_scaling(output_init_scale ** 2, "fan_in", "normal")
        self.output_proj = nnx.Linear(hidden_dim, latent_dim, rngs=rngs, **kw)

    def __call__(self, inputs: Sequence[jax.Array], level: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        """inputs: ``num_inputs`` arrays (B, T, D); level: (B,) int or a Python int; dt, ν: (B,) or scalars."""
        chex.assert_equal(len(inputs), self.num_inputs)
        chex.assert_equal_shape(list(inputs))
        b = inputs[0].shape[0]
        chex.assert_shape(inputs[0], (b, self.latent_tokens, self.latent_dim))
        dt = jnp.broadcast_to(jnp.asarray(dt, jnp.float32), (b,))
        nu = jnp.broadcast_to(jnp.asarray(nu, jnp.float32), (b,))
        level = jnp.broadcast_to(jnp.asarray(level, jnp.int32), (b,))
        c = self.cond_embed(dt, nu) + self.level_embed(level)
        h = self.input_proj(jnp.concatenate(list(inputs), axis=-1)) + self.pos_embed[...][None]
        out = self.output_proj(self.pdet(h, c))
        chex.assert_equal_shape([out, inputs[0]])
        return out


class ResidualCorrector(nnx.Module):
    """The diffusion residual corrector (``levels`` = 0..K) or its student (``levels`` = the first S levels).

    ``refine_steps`` K and ``min_noise_std`` fix the noise levels; ``residual_scale`` the unit of the clean signal.
    """

    def __init__(self, *, latent_dim: int, latent_tokens: int, hidden_dim: int, group_size: int, num_heads: int,
                 depths: Sequence[int], mlp_ratio: float, cond_dim: int, refine_steps: int, min_noise_std: float,
                 residual_scale: float, calls: int | None = None, config_prefix: str = "model.corrector",
                 rngs: nnx.Rngs):
        self.sigmas = noise_sigmas(refine_steps, min_noise_std)
        n_levels = len(self.sigmas)
        calls = n_levels if calls is None else int(calls)
        if not 1 <= calls <= n_levels:
            raise ValueError(f"{config_prefix}: {calls} refinement calls per step; use 1..{n_levels} "
                             f"(model.corrector.refine_steps + 1)")
        if residual_scale <= 0:
            raise ValueError(f"{config_prefix}.residual_scale={residual_scale} must be > 0")
        self.levels = tuple(range(calls))
        self.residual_scale = float(residual_scale)
        self.net = LatentDenoiser(latent_dim=latent_dim, latent_tokens=latent_tokens, num_inputs=3,
                                  num_levels=n_levels, hidden_dim=hidden_dim, group_size=group_size,
                                  num_heads=num_heads, depths=depths, mlp_ratio=mlp_ratio, cond_dim=cond_dim,
                                  config_prefix=config_prefix, rngs=rngs)

    @property
    def calls(self) -> int:
        """Network evaluations per rollout step."""
        return len(self.levels)

    def alpha_sigma(self, level) -> tuple[jax.Array, jax.Array]:
        s = jnp.asarray(self.sigmas, jnp.float32)[level]
        return jnp.sqrt(1.0 - jnp.square(s)), s

    def velocity(self, x_k, level, z_prev, z_pred, dt, nu) -> jax.Array:
        """The network's v̂ at level ``level`` ((B,) or int)."""
        return self.net([x_k, z_pred, z_prev], level, dt, nu)

    def clean_estimate(self, z_prev, z_pred, dt, nu, eps0: jax.Array) -> jax.Array:
        """x̂₀ (B, T, D) after the refinement cascade from the level-0 noise ``eps0`` (B, T, D).

        Deterministic (DDIM, η = 0): re-noising to level k re-uses the noise the network inferred at the previous
        level, ε̂ = α v̂ + σ x, instead of drawing fresh noise; all randomness is ε₀. That makes the corrector a
        function of ε₀ that a student can match (progressive distillation distils DDIM samplers for this reason),
        while different ε₀ still give different candidates for test-time compute."""
        # one lax.scan over the levels: the denoiser is compiled once, not once per level (compile time of every
        # refined rollout, the student's loss and TTC)
        def level(carry, i):
            x, x0, eps = carry
            a, s = self.alpha_sigma(i)
            x = jnp.where(i > 0, a * x0 + s * eps, x)            # level 0 starts from the given noise
            v = self.velocity(x, i, z_prev, z_pred, dt, nu)
            return (x, a * x - s * v, a * v + s * x), None

        zero = jnp.zeros_like(eps0)
        (_, x0, _), _ = jax.lax.scan(level, (eps0, zero, zero), jnp.arange(self.calls, dtype=jnp.int32))
        return x0

    def __call__(self, z_prev: jax.Array, z_pred: jax.Array, dt, nu, rng: jax.Array) -> jax.Array:
        """One corrected step: z_{t+1} = z̃ + residual_scale · x̂₀ with level-0 noise from ``rng``."""
        eps0 = jax.random.normal(rng, z_pred.shape, z_pred.dtype)
        return z_pred + self.residual_scale * self.clean_estimate(z_prev, z_pred, dt, nu, eps0)


def copy_weights(src: nnx.Module, dst: nnx.Module) -> None:
    """dst's parameters ← src's (same architecture): the student starts as its teacher."""
    nnx.update(dst, jax.tree.map(jnp.array, nnx.state(src, nnx.Param)))


def refined_rollout(model, z: jax.Array, dt, nu, num_steps: int, refine: str, rng: jax.Array) -> jax.Array:
    """Predictor–corrector latent rollout: z_{t+1} = R(z_t, F(z_t)) with R the model's ``refine`` module
    ('corrector' or 'student'), one noise key per step → (B, num_steps, T, D)."""
    net = refiner(model, refine)
    if getattr(net, "kind", "latent") == "field":
        from ups_jax.models.field_corrector import GRID_ONLY

        raise ValueError(f"the field corrector's rollout state is (z, û), not z alone: {GRID_ONLY}")
    keys = jax.random.split(rng, int(num_steps))

    def body(zc, key):
        zn = net(zc, model.step(zc, dt, nu), dt, nu, key)
        return zn, zn

    _, zs = jax.lax.scan(body, z, keys)
    return jnp.swapaxes(zs, 0, 1)


REFINERS = ("corrector", "student")


def refiner(model, name: str) -> ResidualCorrector:
    """The model's corrector or student; a ValueError naming the config section when it was not built."""
    if name not in REFINERS:
        raise ValueError(f"refine={name!r}: choose 'none', 'corrector' or 'student'")
    net = getattr(model, name, None)
    if net is None:
        raise ValueError(f"this model has no {name} (configure model.corrector"
                         + (" and model.student" if name == "student" else "") + ")")
    return net


def build_refiners(cfg_model, *, latent_dim: int, latent_tokens: int, rngs: nnx.Rngs, dims: int = 1):
    """(corrector, student) from ``model.corrector`` / ``model.student`` (None where a section is absent or
    None). The student copies the corrector's architecture and runs ``model.student.steps`` levels.
    ``model.corrector.kind='field'``: the physical-space corrector (models/field_corrector.py) on a ``dims``-D grid,
    and no student (one deterministic call per step: nothing to distil)."""
    from ups_jax.models.field_corrector import build_field_corrector, corrector_kind

    c = cfg_model.get("corrector")
    if c is None:
        return None, None
    if corrector_kind(cfg_model) == "field":
        return build_field_corrector(c, dims=dims, rngs=rngs), None
    kw = dict(latent_dim=latent_dim, latent_tokens=latent_tokens, hidden_dim=int(c.hidden_dim),
              group_size=int(c.group_size), num_heads=int(c.num_heads), depths=tuple(c.depths),
              mlp_ratio=float(c.mlp_ratio), cond_dim=int(c.cond_dim), refine_steps=int(c.refine_steps),
              min_noise_std=float(c.min_noise_std), residual_scale=float(c.residual_scale))
    corrector = ResidualCorrector(**kw, rngs=rngs)
    s = cfg_model.get("student")
    student = None
    if s is not None:
        student = ResidualCorrector(**kw, calls=int(s.steps), config_prefix="model.student.steps", rngs=rngs)
    return corrector, student


def schedule_table(sigmas: Sequence[float]) -> list[dict]:
    """[{level, sigma, alpha}] for logs and docs."""
    return [{"level": k, "sigma": float(s), "alpha": float(np.sqrt(1 - s * s))} for k, s in enumerate(sigmas)]
