"""The pushforward depth options and the rollout loss (training/losses.py, issue 19 item 1): the fixed depth is
today's loss, the drawn depth per window is the documented formula, depth 0 is the clean one-step loss, the
curriculum's max depth, the relative-L2 loss against a hand computation, the gradient through the last G unrolled
steps (none with G = 0), the steps of one dispatch against two (resume), and the config refusals."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ups_jax.errors import ConfigError
from ups_jax.training.losses import make_ups_loss, pushforward_depths, pushforward_max_depth

ROOT = Path(__file__).resolve().parents[1]
N = 16
X01 = jnp.asarray((np.arange(N) + 0.5) / N, jnp.float32)
DYNAMICS = dict(recon=0.0, one_step=1.0, latent=0.0, rollout=1.0)


class _Drift(nnx.Module):
    """Latent = the newest context frame (one channel per grid point); a step adds the parameter ``a``; the decoder
    reads the grid point back. On data u[b, t, x] = t + c[b, x] (a = 1 exact) every error is a closed form."""

    def __init__(self, a: float):
        self.a = nnx.Param(jnp.asarray(a, jnp.float32))

    def encode_frames(self, u_ctx, x01):
        return u_ctx[:, -1][..., None]                                   # (B, T=X, D=1)

    def step(self, z, dt, nu):
        return z + self.a[...]

    def rollout(self, z, dt, nu, steps):
        return jnp.stack([z + self.a[...] * k for k in range(1, steps + 1)], axis=1)

    def decode(self, z, xq01):
        idx = jnp.round(jnp.asarray(xq01) * z.shape[1] - 0.5).astype(jnp.int32)
        return z[:, idx]


def _clock_batch(B: int, frames: int, offset=None):
    u = jnp.broadcast_to(jnp.arange(frames, dtype=jnp.float32)[None, :, None], (B, frames, N))
    if offset is not None:
        u = u + offset[:, None, :]
    return {"u": u, "dt": jnp.full((B,), 0.05), "nu": jnp.full((B,), 0.01)}


def _tiny_ups():
    from ups_jax.config import load_config
    from ups_jax.models import build_model

    cfg = load_config(f"{ROOT / 'configs' / 'burgers32.py'}:test", [])
    return build_model(cfg, N, seed=0)


def _random_batch(B: int, frames: int, seed=0):
    u = jax.random.normal(jax.random.key(seed), (B, frames, N))
    return {"u": u, "dt": jnp.full((B,), 0.05), "nu": jnp.full((B,), 0.01)}


# ----------------------------------------------------------------------------------------- depth and its draw
def test_curriculum_max_depth_grows_linearly_to_P():
    steps = [0, 149, 150, 299, 300, 5000]
    assert [int(pushforward_max_depth(s, 2, 300)) for s in steps] == [0, 0, 1, 1, 2, 2]
    assert [int(pushforward_max_depth(s, 3, 300)) for s in (0, 99, 100, 200, 299, 300)] == [0, 0, 1, 2, 2, 3]
    assert int(pushforward_max_depth(7, 2, 0)) == 2              # off
    assert int(pushforward_max_depth(None, 2, 300)) == 2         # no step (a caller outside training): finished
    step = jnp.int32(150)                                        # traced inside the compiled step
    assert int(jax.jit(lambda s: pushforward_max_depth(s, 2, 300))(step)) == 1


def test_fixed_depth_loss_is_todays_loss():
    """Default options: the value of the loss as before issue 19, built by hand: P steps without gradient, then
    the K trained steps against the frames shifted by P; and the per-window path at full depth agrees."""
    model, (h, P, K, B) = _tiny_ups(), (1, 2, 3, 4)
    batch = _random_batch(B, h + P + K)
    loss_fn = make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, context_frames=h, pushforward_steps=P)
    loss, terms = loss_fn(model, batch, jax.random.key(1), jnp.int32(5))

    z0 = model.encode_frames(batch["u"][:, :h], X01)
    z0 = jax.lax.stop_gradient(model.rollout(z0, batch["dt"], batch["nu"], P)[:, -1])
    zs = model.rollout(z0, batch["dt"], batch["nu"], K)
    T, D = zs.shape[-2:]
    dec = model.decode(zs.reshape(B * K, T, D), X01)[..., 0].reshape(B, K, -1)
    per_step = jnp.mean(jnp.square(dec - batch["u"][:, h + P:h + P + K]), axis=(0, 2))
    assert float(terms["loss/one_step"]) == float(per_step[0])
    assert float(terms["loss/rollout"]) == float(jnp.mean(per_step))
    assert float(loss) == float(per_step[0] + jnp.mean(per_step))
    assert "diag/pushforward_depth" not in terms                  # today's path, not the per-window one

    # the per-window path with every window at depth P (fixed + curriculum, past its end) computes the same
    late = make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, context_frames=h, pushforward_steps=P,
                         pushforward_curriculum=10)
    loss_late, terms_late = late(model, batch, jax.random.key(1), jnp.int32(10))
    assert float(terms_late["diag/pushforward_depth"]) == P
    np.testing.assert_allclose(float(loss_late), float(loss), rtol=1e-6)


def test_uniform_depth_per_window_is_the_formula():
    """With a step that adds a = 1.5 to a clock (u = t), the window at depth p predicts frame h+p as 1.5(p+1)
    against p+1: its one-step error is 0.5(p+1), so the loss reveals every window's p."""
    B, P, K, key = 32, 2, 2, jax.random.key(7)
    loss_fn = make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, context_frames=1, pushforward_steps=P,
                            pushforward_sampling="uniform")
    _, terms = loss_fn(_Drift(1.5), _clock_batch(B, 1 + P + K), key, jnp.int32(3))
    p = np.asarray(jax.random.randint(jax.random.split(key, 3)[2], (B,), 0, P + 1))     # the documented draw
    np.testing.assert_array_equal(p, pushforward_depths(jax.random.split(key, 3)[2], B, 3, pushforward_steps=P,
                                                        sampling="uniform"))
    assert set(p.tolist()) == {0, 1, 2}                          # this key draws every depth: the test can fail
    np.testing.assert_allclose(float(terms["loss/one_step"]), np.mean((0.5 * (p + 1)) ** 2), rtol=1e-6)
    rollout = np.mean([(0.5 * (p + k)) ** 2 for k in range(1, K + 1)])
    np.testing.assert_allclose(float(terms["loss/rollout"]), rollout, rtol=1e-6)
    assert float(terms["diag/pushforward_depth"]) == pytest.approx(p.mean())
    # the exact model (a = 1) is exact at every depth: targets and start states are aligned per window
    loss, _ = loss_fn(_Drift(1.0), _clock_batch(B, 1 + P + K), key, jnp.int32(3))
    assert float(loss) == 0.0


@pytest.mark.parametrize("sampling,recon", [("uniform", 1.0), ("fixed", 1.0), ("uniform", 0.0)])
def test_depth_zero_is_the_clean_one_step_loss(sampling, recon):
    """At step 0 of a curriculum every window has p = 0: the loss of a real (tiny) UPS model equals the loss
    without pushforward on the window's first h + K frames (a hand-built call). recon = 0 takes the latent term's
    other branch (only the window p + 1 encoded, as `:cpu`)."""
    model, (h, P, K) = _tiny_ups(), (1, 2, 2)
    weights = dict(recon=recon, one_step=1.0, latent=0.5, rollout=1.0)
    batch = _random_batch(3, h + P + K, seed=2)
    curriculum = make_ups_loss(weights, x01=X01, rollout_steps=K, context_frames=h, pushforward_steps=P,
                               pushforward_sampling=sampling, pushforward_curriculum=100)
    clean = make_ups_loss(weights, x01=X01, rollout_steps=K, context_frames=h, pushforward_steps=0)
    loss, terms = curriculum(model, batch, jax.random.key(0), jnp.int32(0))
    ref, ref_terms = clean(model, {**batch, "u": batch["u"][:, :h + K]}, jax.random.key(0))
    assert float(terms["diag/pushforward_depth"]) == 0.0
    for k in ("loss/one_step", "loss/rollout", "loss/latent"):
        np.testing.assert_allclose(float(terms[k]), float(ref_terms[k]), rtol=1e-6, err_msg=k)
    # recon covers the encoder's windows 0..P+K (the longer window), the rest of the loss is the clean one's
    rec, ref_rec = (terms["loss/recon"], ref_terms["loss/recon"]) if recon else (0.0, 0.0)
    np.testing.assert_allclose(float(loss - rec), float(ref - ref_rec), rtol=1e-6)


# ----------------------------------------------------------------------------------------- the relative-L2 loss
def test_rel_l2_is_the_per_frame_relative_error_in_physical_units():
    B, K, mean, std = 3, 2, 0.5, 2.0
    offset = 0.3 * jnp.sin(jnp.arange(B)[:, None] + 4 * X01[None, :] * np.pi)
    batch = _clock_batch(B, 1 + K, offset)
    loss_fn = make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, context_frames=1, rollout_loss="rel_l2",
                            norm={"mean": mean, "std": std})
    loss, terms = loss_fn(_Drift(1.3), batch, jax.random.key(0))
    u = np.asarray(batch["u"], np.float64)
    pred = np.stack([u[:, 0] + 1.3 * k for k in range(1, K + 1)], axis=1)            # normalised
    phys = lambda v: v * std + mean                                                    # noqa: E731
    rel = np.linalg.norm(phys(pred) - phys(u[:, 1:]), axis=-1) / np.linalg.norm(phys(u[:, 1:]), axis=-1)  # (B, K)
    np.testing.assert_allclose(float(terms["loss/one_step"]), rel[:, 0].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss/rollout"]), rel.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), rel[:, 0].mean() + rel.mean(), rtol=1e-5)
    with pytest.raises(ConfigError, match="rollout_loss='rel_l2' needs the train split's normalisation"):
        make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, rollout_loss="rel_l2")


# ----------------------------------------------------------------------------------------- gradient through steps
@pytest.mark.parametrize("G,expected", [(0, 5.5), (1, 9.0), (2, 12.5)])
def test_gradient_flows_through_the_last_G_pushforward_steps(G, expected):
    """Clock data, a step adding a = 1.5, P = 2, K = 2, rollout term only: the k-th trained prediction is
    start + a·k with start = 2a, error e_k = 0.5(2 + k) (e = 1.5, 2). d loss/da = mean_k 2 e_k (G + k): the start
    contributes G (the steps with gradient) — none when G = 0 — so 5.5, 9, 12.5."""
    loss_fn = make_ups_loss(dict(DYNAMICS, one_step=0.0), x01=X01, rollout_steps=2, context_frames=1,
                            pushforward_steps=2, pushforward_grad_steps=G)
    graphdef, params = nnx.split(_Drift(1.5))
    batch = _clock_batch(4, 5)
    grad = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, jax.random.key(0), jnp.int32(0))[0])(params)
    assert float(grad["a"][...]) == pytest.approx(expected, rel=1e-6)


def test_uniform_depth_without_grad_steps_has_no_gradient_through_the_pushforward():
    """p ~ U{0..2} per window, G = 0: d loss/da = mean_{b,k} 2 e_bk · k with e_bk = 0.5 (p_b + k): the start state
    contributes nothing whatever its depth."""
    B, key = 16, jax.random.key(3)
    loss_fn = make_ups_loss(dict(DYNAMICS, one_step=0.0), x01=X01, rollout_steps=2, context_frames=1,
                            pushforward_steps=2, pushforward_sampling="uniform")
    graphdef, params = nnx.split(_Drift(1.5))
    grad = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), _clock_batch(B, 5), key, jnp.int32(0))[0])(params)
    p = np.asarray(pushforward_depths(jax.random.split(key, 3)[2], B, 0, pushforward_steps=2, sampling="uniform"))
    assert len(set(p.tolist())) > 1
    expected = np.mean([2 * 0.5 * (p + k) * k for k in (1, 2)])
    assert float(grad["a"][...]) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------------------- the compiled step
def test_curriculum_in_one_dispatch_equals_two_dispatches(burgers_file):
    """The depth depends on the optimizer step inside the compiled dispatch: 4 updates in one call and 2 + 2
    (a resume at step 2) give bitwise the same state and losses, and the logged depth follows the curriculum."""
    from ups_jax.config import load_config
    from ups_jax.data.loader import WindowLoader
    from ups_jax.models import build_model
    from ups_jax.training.loop import trainable_filter
    from ups_jax.training.optim import make_optimizer
    from ups_jax.training.run_data import RunData
    from ups_jax.training.step import StageStep

    over = ["stages.operator.pushforward_steps=2", "stages.operator.pushforward_sampling=fixed",
            "stages.operator.pushforward_curriculum=4", "stages.operator.pushforward_grad_steps=1",
            "stages.operator.rollout_loss=rel_l2", "stages.operator.trainable=('encoder','operator','decoder')"]
    cfg = load_config(f"{ROOT / 'configs' / 'burgers32.py'}:test", over)
    data = RunData(cfg, [burgers_file])
    sc = cfg.stages.operator
    from ups_jax.training.losses import make_stage_loss

    def runner():
        model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(0))
        loader = WindowLoader(data.dataset, data.splits["train"], window=1 + 2 + int(sc.rollout_steps),
                              batch_size=sc.batch_size, seed=5, prefetch=0, cache_in_memory=True)
        loss_fn = make_stage_loss(cfg, sc, x01=jnp.asarray(data.x01), norm=data.norm)
        return StageStep(model, trainable_filter(tuple(sc.trainable)), loss_fn, make_optimizer(sc),
                         float(sc.ema_decay), loader=loader, prepare_batch=data.prepare_batch)

    key = jax.random.key(11)
    one = runner()
    state_a, out_a = one.run(one.initial_state(), key, 0, one.next_inputs(4))
    two = runner()
    state_b, out_b1 = two.run(two.initial_state(), key, 0, two.next_inputs(2))
    state_b, out_b2 = two.run(state_b, key, 2, two.next_inputs(2))
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(out_a["loss"], np.concatenate([out_b1["loss"], out_b2["loss"]]))
    # P = 2, C = 4: max depth min(2, 2s // 4) at s = 0..3 -> 0, 0, 1, 1 ('fixed' uses the max for every window)
    np.testing.assert_array_equal(out_a["diag/pushforward_depth"], [0, 0, 1, 1])
    one.loader.close()
    two.loader.close()


# ----------------------------------------------------------------------------------------- config refusals
@pytest.mark.parametrize("override,name,text", [
    ("stages.operator.pushforward_sampling=gauss", "operator pushforward sampling", "pushforward_sampling='gauss'"),
    ("stages.operator.pushforward_curriculum=-1", "operator pushforward curriculum", "pushforward_curriculum=-1"),
    ("stages.operator.pushforward_grad_steps=1", "operator pushforward grad steps",
     "pushforward_grad_steps=1 with pushforward_steps=0"),
    ("stages.operator.rollout_loss=l1", "operator rollout loss", "rollout_loss='l1'"),
    ("stages.corrector.rollout_loss=rel_l2", "corrector pushforward options", "rollout_loss set on a stage"),
])
def test_bad_pushforward_options_are_refused(override, name, text):
    from ups_jax.checks import errors, run_checks
    from ups_jax.config import load_config

    cfg = load_config(f"{ROOT / 'configs' / 'burgers32.py'}:test",
                      [f"data.default_dir={ROOT / 'tests' / 'no-such-data-dir'}", override])
    checks, _ = run_checks(cfg)
    bad = [c for c in errors(checks) if c.name == name]
    assert bad and text in bad[0].message and "\n" not in bad[0].message, [c.message for c in errors(checks)]
    good, _ = run_checks(load_config(f"{ROOT / 'configs' / 'burgers32.py'}:test",
                                     [f"data.default_dir={ROOT / 'tests' / 'no-such-data-dir'}"]))
    assert [c for c in good if c.name == name and not c.ok] == []


def test_loss_builders_refuse_bad_values_and_the_fno_options():
    from ups_jax.config import load_config
    from ups_jax.training.losses import make_stage_loss

    with pytest.raises(ConfigError, match=r"^stage.pushforward_grad_steps=3: use 0 .. pushforward_steps=2$"):
        make_ups_loss(DYNAMICS, x01=X01, rollout_steps=1, pushforward_steps=2, pushforward_grad_steps=3)
    with pytest.raises(ConfigError, match="pushforward_sampling='per_batch': choose 'fixed' or 'uniform'"):
        make_ups_loss(DYNAMICS, x01=X01, rollout_steps=1, pushforward_sampling="per_batch")
    cfg = load_config(f"{ROOT / 'configs' / 'fno_burgers.py'}:test", ["stages.fno.rollout_loss=rel_l2"])
    with pytest.raises(ConfigError, match=r"\['rollout_loss'\]: the FNO baseline's loss is PDEBench's"):
        make_stage_loss(cfg, cfg.stages.fno, x01=X01)


# ----------------------------------------------------------------------------------------- the recon term's windows
class _Biased(_Drift):
    """_Drift whose decoder adds ``b`` (a reconstruction error of exactly b² per point) and which counts the
    windows it encodes."""

    def __init__(self, a: float, b: float):
        super().__init__(a)
        self.b, self.encoded = float(b), 0

    def encode_frames(self, u_ctx, x01):
        self.encoded += int(u_ctx.shape[0])
        return super().encode_frames(u_ctx, x01)

    def decode(self, z, xq01):
        return super().decode(z, xq01) + self.b


@pytest.mark.parametrize("windows,encoded_per_sample", [("all", 2 + 2 + 1 + 1), ("given", 1)])
def test_recon_on_the_given_encoding_costs_no_encoder_call(windows, encoded_per_sample):
    """recon_windows='given' reconstructs the given frame from z0, the encoding the dynamics terms use anyway:
    the same b² as 'all' on this model, but one encoded window per sample instead of P + K + 1 more."""
    B, P, K = 3, 2, 2
    offset = 0.3 * jnp.sin(jnp.arange(B)[:, None] + 4 * X01[None, :] * np.pi)
    model = _Biased(1.0, 0.25)
    loss_fn = make_ups_loss(dict(DYNAMICS, recon=1.0), x01=X01, rollout_steps=K, context_frames=1,
                            pushforward_steps=P, recon_windows=windows)
    _, terms = loss_fn(model, _clock_batch(B, 1 + P + K, offset), jax.random.key(0))
    np.testing.assert_allclose(float(terms["loss/recon"]), 0.25 ** 2, rtol=1e-5)
    assert model.encoded == B * encoded_per_sample
    with pytest.raises(ConfigError, match="recon_windows='first': choose 'all' or 'given'"):
        make_ups_loss(DYNAMICS, x01=X01, rollout_steps=K, recon_windows="first")
