"""Physics rewards and test-time compute: constructed cases with known answers (no trained model needed).

The beam search runs on stub networks: a latent state (B, X, 1) *is* the field, the operator is the identity,
the decoder reads the field, and the "refiner" adds a designed offset to candidate n of sample b, so the best
candidate of every sample is known in advance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from ups_jax.errors import ConfigError
from ups_jax.inference.rewards import penalties, reward, total_variation
from ups_jax.inference.ttc import TTCPlan, beam_search, make_plan, step_cost

X = 32
W1 = dict(mass=1.0, energy=1.0, tv=1.0)


def _field(b=3, seed=0):
    x = np.arange(X) / X
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 4, size=(b, 1))
    return jnp.asarray(np.sin(2 * np.pi * k * x) + 0.3 + 0.1 * rng.normal(size=(b, 1)), jnp.float32)


# ---------------------------------------------------------------------------------------------------- rewards
def test_rewards_are_zero_for_an_exactly_conserved_non_dissipating_field():
    u = _field()
    shifted = jnp.roll(u, 5, axis=-1)      # translation on the periodic grid: same mass, energy and variation
    for new, tol in ((u, 0.0), (shifted, 1e-6)):     # the translation only differs by float32 summation order
        p = penalties(new, u, jnp.mean(u, -1))
        for name, v in p.items():
            np.testing.assert_allclose(np.asarray(v), 0.0, atol=tol, rtol=0, err_msg=name)
        np.testing.assert_allclose(np.asarray(reward(new, u, jnp.mean(u, -1), W1)), 0.0, atol=3 * tol, rtol=0)


def test_dissipation_without_mass_change_is_not_penalised():
    u = _field() - jnp.mean(_field(), -1, keepdims=True)   # zero mean, so damping keeps the mass
    p = penalties(0.9 * u, u, jnp.zeros(u.shape[0]))
    for name in ("mass", "energy", "tv"):
        np.testing.assert_allclose(np.asarray(p[name]), 0.0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("change,positive", [
    (lambda u: u + 0.05, {"mass"}),                                     # mass gained; energy too (mean > 0)
    (lambda u: u * 1.1, {"energy", "tv"}),                              # amplified: more energy and variation
    (lambda u: u + 0.2 * (-1.0) ** jnp.arange(X), {"tv"}),                # grid-scale oscillation
])
def test_violations_give_positive_penalties_per_sample(change, positive):
    u = _field(b=4)
    p = {k: np.asarray(v) for k, v in penalties(change(u), u, jnp.mean(u, -1)).items()}
    for name in positive:
        assert p[name].shape == (4,) and np.all(p[name] > 0), (name, p[name])
    r = np.asarray(reward(change(u), u, jnp.mean(u, -1), W1))
    assert r.shape == (4,) and np.all(r < 0)
    # each sample is scored on its own: changing sample 0 only changes sample 0's reward
    mixed = u.at[0].set(change(u)[0])
    r_mixed = np.asarray(reward(mixed, u, jnp.mean(u, -1), W1))
    assert r_mixed[0] < 0 and np.all(r_mixed[1:] == 0)


def test_total_variation_is_periodic():
    u = jnp.asarray([[0.0, 1.0, 0.0, 1.0]])
    assert float(total_variation(u)[0]) == 4.0


# ---------------------------------------------------------------------------------------------------- TTC
def _ttc_cfg(**presets):
    c = mlc.ConfigDict()
    c.refine, c.gamma = "student", 1.0
    c.weights = mlc.ConfigDict(W1)
    c.presets = mlc.ConfigDict({k: mlc.ConfigDict(dict(zip(("candidates", "beam_width", "horizon", "budget"), v)))
                                for k, v in presets.items()})
    return c


def _stub(offsets: np.ndarray, W: int, N: int):
    """Stub networks; candidate n of (sample b, beam w) = z̃ + offsets[b, n] (a mass change of that size)."""
    B = offsets.shape[0]
    off = jnp.asarray(offsets, jnp.float32)

    def step(z, dt, nu):
        return z

    def refine(z_prev, z_pred, dt, nu, key):
        flat = jnp.arange(z_pred.shape[0])          # flattened sample-major (b, w, n) → b·W·N + w·N + n
        b, n = flat // (W * N), flat % N
        return z_pred + off[b % B, n][:, None, None]

    def decode(z):
        return z[..., 0]

    return step, refine, decode


def _counting(fn, rows_per_call: list, weight: int = 1):
    """``fn`` that records, every time it runs (not when traced), ``weight`` × the rows it was given."""
    def counted(z, *args):
        jax.debug.callback(lambda n: rows_per_call.append(int(n) * weight), z.shape[0])
        return fn(z, *args)

    return counted


def _run(plan, offsets, steps=3, calls: list | None = None):
    """``calls``: if given, a list that receives the network evaluations of every call as it runs (the operator
    and the decoder one per row, the refiner ``plan.refiner_calls`` per row)."""
    B = offsets.shape[0]
    u0 = _field(B)
    z0 = u0[..., None]
    step, refine, decode = _stub(offsets, plan.beam_width, plan.candidates)
    if calls is not None:
        step, decode = _counting(step, calls), _counting(decode, calls)
        refine = _counting(refine, calls, plan.refiner_calls)
    ones = jnp.ones(B)
    fn = jax.jit(lambda z, f, m, k: beam_search(step, refine, decode, z, f, m, ones, ones, k, steps=steps,
                                                plan=plan, weights=W1))
    zs, log = fn(z0, u0, jnp.mean(u0, -1), jax.random.key(0))
    jax.effects_barrier()
    return np.asarray(zs[..., 0]), jax.device_get(log), np.asarray(u0)


def test_ttc_picks_per_sample_the_candidate_with_the_best_reward():
    # the smallest |offset| conserves mass best; it is a different candidate for every sample
    offsets = np.array([[0.3, -0.2, 0.01, 0.5],
                        [0.0, 0.4, -0.3, 0.2],
                        [0.2, 0.3, 0.1, -0.05]])
    plan = TTCPlan("t", candidates=4, beam_width=1, horizon=1, budget=100, refiner="student", refiner_calls=1,
                   gamma=1.0, requested=(4, 1, 1))
    fields, log, u0 = _run(plan, offsets, steps=1)
    best = np.abs(offsets).argmin(axis=1)                    # [2, 0, 3]
    np.testing.assert_allclose(fields[:, 0], u0 + offsets[np.arange(3), best][:, None], atol=1e-6)
    # a batch-mean choice (the original's) would have given every sample the same candidate
    assert len(set(best.tolist())) == 3
    cands = jnp.asarray(u0)[:, None] + jnp.asarray(offsets, jnp.float32)[:, :, None]          # (B, N, X)
    r = np.asarray(reward(cands, jnp.asarray(u0)[:, None], jnp.mean(jnp.asarray(u0), -1)[:, None], W1))
    np.testing.assert_array_equal(r.argmax(1), best)
    np.testing.assert_allclose(np.asarray(log["chosen_reward"])[:, 0], r.max(1), rtol=1e-5, atol=1e-6)


def test_beam_search_with_lookahead_follows_the_best_beam():
    offsets = np.array([[0.3, -0.2, 0.01, 0.5], [0.0, 0.4, -0.3, 0.2]])
    plan = TTCPlan("t", candidates=4, beam_width=2, horizon=2, budget=1000, refiner="student", refiner_calls=1,
                   gamma=1.0, requested=(4, 2, 2))
    fields, log, u0 = _run(plan, offsets, steps=3)
    best = offsets[np.arange(2), np.abs(offsets).argmin(axis=1)]
    # every step the chosen path adds the sample's best offset (the constant one is also best in the lookahead)
    np.testing.assert_allclose(fields[:, -1], u0 + 3 * best[:, None], atol=1e-5)


@pytest.mark.parametrize("preset,calls,plan_nwh", [
    ((4, 3, 2, 100), 1, (4, 3, 2)),      # 3 · (1 + 4 · 2) + 3 · 4 · 1 · 3 = 63 (the lookahead: H = 2)
    ((4, 3, 2, 100), 4, (4, 3, 1)),      # H = 2 would cost 135; 3 · (1 + 4 · 5) = 63
    ((16, 5, 2, 300), 1, (16, 5, 1)),    # 405 → 165
    ((8, 3, 3, 40), 2, (8, 1, 1)),       # 1 + 8 · 3 = 25
    ((6, 2, 2, 6), 1, (2, 1, 1)),        # 1 operator + 2 · (1 refiner + 1 decoder) = 5
    ((6, 2, 2, 6), 0, (5, 1, 1)),        # a refiner without network calls: 1 + 5 decoder calls = 6
])
def test_budget_is_never_exceeded(preset, calls, plan_nwh):
    cfg = _ttc_cfg(p=preset)
    plan = make_plan(cfg, "p", calls)
    assert (plan.candidates, plan.beam_width, plan.horizon) == plan_nwh
    offsets = np.random.default_rng(1).normal(size=(2, plan.candidates)) * 0.1
    seen: list[int] = []
    steps, B = 2, offsets.shape[0]
    _, log, _ = _run(plan, offsets, steps=steps, calls=seen)
    made = sum(seen) / (steps * B)        # network evaluations the search really made, per step and trajectory
    assert made <= plan.budget
    assert made == step_cost(plan.candidates, plan.beam_width, plan.horizon, calls)
    np.testing.assert_array_equal(np.asarray(log["evaluations"]), [made] * steps)   # the log tells the truth


def dataclasses_replace(plan, **kw):
    import dataclasses

    return dataclasses.replace(plan, **kw)


def test_budget_errors_and_unknown_preset():
    cfg = _ttc_cfg(small=(8, 1, 1, 4), tiny=(1, 1, 1, 1), ok=(4, 3, 2, 100))
    with pytest.raises(ConfigError, match=r"ttc.presets.small.budget=4 is smaller than the candidate count 8"):
        make_plan(cfg, "small", 1)
    with pytest.raises(ConfigError, match="cannot pay one candidate"):
        make_plan(cfg, "tiny", 1)               # 1 operator + 1 refiner + 1 decoder call > 1
    with pytest.raises(ConfigError, match=r"unknown TTC preset 'fast'; choose one of ok, small, tiny"):
        make_plan(cfg, "fast", 1)
    plan = make_plan(cfg, "ok", 4)              # the corrector (4 calls) cannot afford the lookahead: horizon → 1
    assert (plan.candidates, plan.beam_width, plan.horizon) == (4, 3, 1) and plan.evaluations_per_step == 63
    assert "shrunk to fit the budget" in plan.describe()
