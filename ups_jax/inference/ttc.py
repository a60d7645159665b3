"""Test-time compute (TTC): per-sample beam search over corrector/student samples, scored by physics rewards on
decoded physical fields, under a hard budget of model evaluations per rollout step.

At every rollout step, for each sample independently (the original chose one candidate for the whole batch from a
batch-mean reward and never enforced its budget: ups-original.md §6.2, §12 item 17):

1. each of the W beams takes an operator step, z̃ = F(z);
2. the refiner ('student' or 'corrector', models/corrector.py) draws N candidates from N noise seeds;
3. every candidate is decoded by the trained decoder at the grid, de-normalised, and scored against its parent
   beam's field with ``inference/rewards.py`` (mass, energy, total variation);
4. lookahead (horizon H > 1): each candidate is rolled H − 1 further steps (operator + one refiner sample + decode)
   and the discounted rewards γ^j r_j are added to its score;
5. the W best of the W·N candidates by (beam's cumulative reward + own reward + lookahead value) become the new
   beams (``lax.top_k`` per sample). At the end each sample follows the back-pointers of its best beam.

Budget. One *model evaluation* = one network forward of one latent state for one trajectory: an operator step, one
refiner call (the corrector makes K+1, the student S), or one decoder call. Per step and trajectory a plan costs

    W·(1 + N·(S + 1)) + W·N·(H − 1)·(S + 2)

evaluations. ``make_plan`` refuses a budget below the candidate count, then shrinks the plan (horizon first, then
beam width, then candidates) until it fits; the evaluations actually made are counted from the array shapes each
call evaluates and returned per step, and a step above the budget is an internal error.

With ``model.corrector.kind='field'`` the state is (z, û) and the candidates are correction strengths, not
samples: inference/field_ttc.py (its own cost formula); ``ttc_refiner`` and ``plan_for_model`` pick it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ups_jax.errors import ConfigError
from ups_jax.eval.rollout import Rollout
from ups_jax.inference.beams import follow_best_beam, take_beams
from ups_jax.inference.rewards import reward


def step_cost(candidates: int, beam_width: int, horizon: int, refiner_calls: int) -> int:
    """Model evaluations per rollout step and trajectory (see the module docstring)."""
    N, W, H, S = int(candidates), int(beam_width), int(horizon), int(refiner_calls)
    return W * (1 + N * (S + 1)) + W * N * (H - 1) * (S + 2)


@dataclasses.dataclass(frozen=True)
class TTCPlan:
    preset: str
    candidates: int
    beam_width: int
    horizon: int
    budget: int                 # model evaluations per rollout step and trajectory (hard limit)
    refiner: str                # 'student' | 'corrector'
    refiner_calls: int
    gamma: float
    requested: tuple            # (candidates, beam_width, horizon) as configured
    kind: str = "latent"        # 'latent' (refiner samples) | 'field' (field corrector strengths, field_ttc.py)
    encode: bool = False        # field: the state update re-encodes each candidate (state='encode')

    @property
    def evaluations_per_step(self) -> int:
        return _cost(self.kind, self.refiner_calls, self.encode)(self.candidates, self.beam_width, self.horizon)

    def describe(self) -> str:
        shrunk = "" if self.requested == (self.candidates, self.beam_width, self.horizon) else \
            f" (configured {self.requested[0]}/{self.requested[1]}/{self.requested[2]}, shrunk to fit the budget)"
        what = (f"the field corrector (correction strengths, state '{'encode' if self.encode else 'carry'}')"
                if self.kind == "field" else f"the {self.refiner} ({self.refiner_calls} call(s))")
        return (f"TTC '{self.preset}': {self.candidates} candidates × beam {self.beam_width} × horizon "
                f"{self.horizon} with {what} = "
                f"{self.evaluations_per_step} of {self.budget} evaluations per step{shrunk}")


def _cost(kind: str, refiner_calls: int, encode: bool):
    if kind == "field":
        from ups_jax.inference.field_ttc import field_step_cost

        return lambda N, W, H: field_step_cost(N, W, H, encode)
    return lambda N, W, H: step_cost(N, W, H, refiner_calls)


def ttc_refiner(cfg) -> str:
    """The refiner TTC draws candidates from: ``ttc.refine``, or the corrector when it is the field kind (there is
    no student to draw from)."""
    from ups_jax.models.field_corrector import corrector_kind

    return "corrector" if corrector_kind(cfg.model) == "field" else str(cfg.ttc.refine)


def plan_for_model(ttc_cfg, preset: str, model, refine: str) -> "TTCPlan":
    """:func:`make_plan` for the model's refiner ``refine`` (its kind, calls and state update)."""
    net = getattr(model, refine)
    if getattr(net, "kind", "latent") == "field":
        return make_plan(ttc_cfg, preset, net.calls, refine, kind="field", encode=net.state_update == "encode")
    return make_plan(ttc_cfg, preset, net.calls, refine)


def preset_names(ttc_cfg) -> list[str]:
    return sorted(ttc_cfg.presets.keys())


def make_plan(ttc_cfg, preset: str, refiner_calls: int, refiner: str | None = None, *, kind: str = "latent",
              encode: bool = False) -> TTCPlan:
    """The plan of ``ttc.presets.<preset>`` for a refiner of ``refiner_calls`` calls; ConfigError (exit 2) for an
    unknown preset, a budget below the candidate count, or one that cannot pay a single candidate."""
    names = preset_names(ttc_cfg)
    if preset not in ttc_cfg.presets:
        raise ConfigError(f"unknown TTC preset {preset!r}; choose one of {', '.join(names)} (ttc.presets)")
    p = ttc_cfg.presets[preset]
    key = f"ttc.presets.{preset}"
    N, W, H, budget = int(p.candidates), int(p.beam_width), int(p.horizon), int(p.budget)
    if min(N, W, H) < 1:
        raise ConfigError(f"{key}: candidates={N}, beam_width={W}, horizon={H} must all be >= 1")
    if budget < N:
        raise ConfigError(f"{key}.budget={budget} is smaller than the candidate count {N}: every step draws {N} "
                          f"candidates; raise {key}.budget or lower {key}.candidates")
    S = int(refiner_calls)
    cost = _cost(kind, S, encode)
    requested = (N, W, H)
    while cost(N, W, H) > budget and H > 1:
        H -= 1
    while cost(N, W, H) > budget and W > 1:
        W -= 1
    while cost(N, W, H) > budget and N > 1:
        N -= 1
    if cost(N, W, H) > budget:
        raise ConfigError(f"{key}.budget={budget} cannot pay one candidate: {cost(1, 1, 1)} evaluations per "
                          f"step with a {S}-call refiner; raise the budget or use ttc.refine='student'")
    return TTCPlan(preset, N, W, H, budget, refiner or str(ttc_cfg.refine), S, float(ttc_cfg.gamma), requested,
                   kind, bool(encode))


def beam_search(step_fn: Callable, refine_fn: Callable, decode_fn: Callable, z0: jax.Array, f0: jax.Array,
                mean_ref: jax.Array, dt: jax.Array, nu: jax.Array, rng: jax.Array, *, steps: int, plan: TTCPlan,
                weights: Mapping[str, float]):
    """Per-sample beam search (jit-able; every shape static).

    step_fn(z, dt, nu) → z̃; refine_fn(z_prev, z̃, dt, nu, key) → z' (``plan.refiner_calls`` network calls);
    decode_fn(z) → (n, X) physical fields. Batched arrays are flattened sample-major as (B, W, N) → B·W·N.
    z0: (B, T, D) initial latents, f0: (B, X) their decoded fields, mean_ref: (B,) the conserved mean.

    Returns (latents (B, steps, T, D) along each sample's best beam, log) with log = {'evaluations': (steps,)
    evaluations per trajectory, 'chosen_reward': (B, steps), 'candidate_reward_mean': (steps,),
    'candidate_reward_best': (steps,)}.
    """
    B = z0.shape[0]
    N, W, H, S = plan.candidates, plan.beam_width, plan.horizon, plan.refiner_calls
    T, D = z0.shape[1:]

    def rep(a, n):
        return jnp.repeat(a, n, axis=0)

    def per_sample(x) -> int:   # states evaluated per trajectory by a call on the flat batch x
        return x.shape[0] // B

    dt_w, nu_w, dt_c, nu_c = rep(dt, W), rep(nu, W), rep(dt, W * N), rep(nu, W * N)
    ref = mean_ref[:, None, None]

    def body(carry, key):
        zb, fb, score = carry                                     # (B, W, T, D), (B, W, X), (B, W)
        evals = 0
        z_flat = zb.reshape(B * W, T, D)
        z_pred = step_fn(z_flat, dt_w, nu_w)
        evals += per_sample(z_flat)
        keys = jax.random.split(key, H)
        z_prev_c, z_pred_c = rep(z_flat, N), rep(z_pred, N)      # candidate n of beam w of sample b
        zc = refine_fn(z_prev_c, z_pred_c, dt_c, nu_c, keys[0])
        evals += S * per_sample(zc)
        fc = decode_fn(zc)
        evals += per_sample(zc)
        X = fc.shape[-1]
        r = reward(fc.reshape(B, W, N, X), fb[:, :, None], ref, weights)            # (B, W, N)
        value = jnp.zeros_like(r)
        zl, fl = zc, fc
        for j in range(1, H):                                     # greedy lookahead of every candidate
            zl_pred = step_fn(zl, dt_c, nu_c)
            zl = refine_fn(zl, zl_pred, dt_c, nu_c, keys[j])
            f_new = decode_fn(zl)
            evals += (S + 2) * per_sample(zl)
            value = value + plan.gamma ** j * reward(f_new.reshape(B, W, N, X), fl.reshape(B, W, N, X), ref,
                                                     weights)
            fl = f_new
        cum = (score[:, :, None] + r).reshape(B, W * N)
        _, idx = jax.lax.top_k(cum + value.reshape(B, W * N), W)                     # (B, W), per sample

        def take(a):
            return take_beams(a, idx)

        zb_new, fb_new = take(zc.reshape(B, W * N, T, D)), take(fc.reshape(B, W * N, X))
        out = {"z": zb_new, "parent": idx // N, "reward": take(r.reshape(B, W * N)),
               "evaluations": jnp.int32(evals), "cand_mean": jnp.mean(r), "cand_best": jnp.mean(jnp.max(r, (1, 2)))}
        return (zb_new, fb_new, take(cum)), out

    init = (jnp.broadcast_to(z0[:, None], (B, W, T, D)), jnp.broadcast_to(f0[:, None], (B, W) + f0.shape[1:]),
            jnp.zeros((B, W), jnp.float32))
    (_, _, score), outs = jax.lax.scan(body, init, jax.random.split(rng, int(steps)))
    return follow_best_beam(outs, score, "z")


def make_ttc_fn(graphdef, plan: TTCPlan, weights: Mapping[str, float], mean: float, std: float):
    weights = dict(weights)
    if plan.kind == "field":
        return make_field_ttc_fn(graphdef, plan, weights, mean, std)

    @functools.partial(jax.jit, static_argnames=("steps",))
    def run(state, u_ctx, nu, dt, x01, rng, steps: int):
        """u_ctx: (B, h, X) normalised, rng: (B,) keys (one per trajectory) → (latents (B, steps, T, D), log)."""
        from ups_jax.models.corrector import refiner

        m = nnx.merge(graphdef, state)
        net = refiner(m, plan.refiner)
        if net.calls != plan.refiner_calls:
            raise ValueError(f"plan made for a {plan.refiner_calls}-call refiner, the model's has {net.calls}")

        def decode(z):
            return m.decode(z, x01)[..., 0] * std + mean

        def one(u, nu1, dt1, key):   # one trajectory's search with its own key: independent of the batching
            z0 = m.encode_frames(u[None], x01)
            mean_ref = jnp.mean(u[-1] * std + mean)[None]
            zs, log = beam_search(m.step, net, decode, z0, decode(z0), mean_ref, dt1[None], nu1[None], key,
                                  steps=steps, plan=plan, weights=weights)
            return zs[0], log

        zs, log = jax.vmap(one)(u_ctx, nu, dt, rng)
        return zs, {"evaluations": log["evaluations"][0],            # the same for every trajectory (static)
                    "chosen_reward": log["chosen_reward"][:, 0],     # (B, steps)
                    "candidate_reward_mean": jnp.mean(log["candidate_reward_mean"], 0),   # equal-size groups
                    "candidate_reward_best": jnp.mean(log["candidate_reward_best"], 0)}

    return run


def make_field_ttc_fn(graphdef, plan: TTCPlan, weights: dict, mean: float, std: float):
    from ups_jax.inference.field_ttc import field_beam_search

    @functools.partial(jax.jit, static_argnames=("steps",))
    def run(state, u_ctx, nu, dt, x01, rng, steps: int):
        """u_ctx: (B, h, *grid) normalised → (û (B, steps, *grid) normalised, log); deterministic (rng unused)."""
        del rng
        m = nnx.merge(graphdef, state)

        def one(u, nu1, dt1):
            us, log = field_beam_search(m, x01, u[None], dt1[None], nu1[None], steps=steps, plan=plan,
                                        weights=weights, mean=mean, std=std)
            return us[0], log

        us, log = jax.vmap(one)(u_ctx, nu, dt)
        return us, {"evaluations": log["evaluations"][0], "chosen_reward": log["chosen_reward"][:, 0],
                    "candidate_reward_mean": jnp.mean(log["candidate_reward_mean"], 0),
                    "candidate_reward_best": jnp.mean(log["candidate_reward_best"], 0)}

    return run


class TTCRollout(Rollout):
    """The evaluation's Rollout interface (physical frames in and out, ``out_x01`` output points) with TTC steps;
    ``logs`` keeps one numpy log per batch call."""

    def __init__(self, model: nnx.Module, *, norm: dict, x01: np.ndarray, batch_size: int, plan: TTCPlan,
                 weights: Mapping[str, float], seed: int = 0, out_x01: np.ndarray | None = None):
        self.plan, self.weights = plan, dict(weights)
        self.logs: list[dict] = []
        if plan.kind == "field" and out_x01 is not None:
            from ups_jax.models.field_corrector import GRID_ONLY

            raise ValueError(GRID_ONLY)
        super().__init__(model, norm=norm, x01=x01, batch_size=batch_size, mode="latent", refine=plan.refiner,
                         seed=seed, out_x01=out_x01)
        graphdef = self.graphdef

        @jax.jit
        def decode(state, zs, xq01):
            b, s, t, d = zs.shape
            return nnx.merge(graphdef, state).decode(zs.reshape(b * s, t, d), xq01)[..., 0].reshape(b, s, -1)

        self._decode = decode

    def _make_fn(self):
        return make_ttc_fn(self.graphdef, self.plan, self.weights, self.mean, self.std)

    def _predict(self, u, nu, dt, steps, rng, valid) -> np.ndarray:
        out_, log = self.fn(self.state, u, nu, dt, self.x01, rng, steps=int(steps))
        log = jax.device_get(log)
        log["chosen_reward"] = log["chosen_reward"][:valid]
        if int(np.max(log["evaluations"])) > self.plan.budget:   # cannot happen by construction: a bug if it does
            raise RuntimeError(f"TTC made {int(np.max(log['evaluations']))} evaluations in a step, budget "
                               f"{self.plan.budget}")
        self.logs.append(log)
        if self.plan.kind == "field":          # the search returns the corrected fields û on the grid
            return np.asarray(out_)
        out = self.x01 if self.out_x01 is None else self.out_x01
        return np.asarray(self._decode(self.state, out_, out))

    def summary(self) -> dict:
        """What the TTC did over every call so far (JSON-ready)."""
        if not self.logs:
            return {"plan": dataclasses.asdict(self.plan)}
        ev = np.concatenate([np.asarray(l["evaluations"]) for l in self.logs])
        return {"plan": dataclasses.asdict(self.plan), "description": self.plan.describe(),
                "evaluations_per_step_max": int(ev.max()), "evaluations_per_step_mean": float(ev.mean()),
                "budget": self.plan.budget,
                "chosen_reward_mean": float(np.mean([np.mean(l["chosen_reward"]) for l in self.logs])),
                "candidate_reward_mean": float(np.mean([np.mean(l["candidate_reward_mean"]) for l in self.logs])),
                "candidate_reward_best_mean": float(np.mean([np.mean(l["candidate_reward_best"])
                                                             for l in self.logs]))}
