"""The history context (which frames a model reads), the loss windows (context h, pushforward P, rollout K) and the
in-project FNO baseline (PDEBench's FNO1d design, trained by the same loop)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]


def _cfg(name: str, *overrides):
    from ups_jax.config import load_config

    return load_config(str(ROOT / "configs" / name), list(overrides))


# ------------------------------------------------------------------------------------------------- FNO1d
def test_fno_has_pdebench_parameter_count():
    from ups_jax.models import build_model, count_params

    counts = count_params(build_model(_cfg("fno_burgers.py"), 256, seed=0))
    # fc0 (10 frames + grid → 20), 4 spectral (20·20·12 complex), 4 pointwise 1x1 convs, fc1 20→128, fc2 128→1
    assert counts == {"total": 43137, "fc0": 11 * 20 + 20, "spectral": 4 * 20 * 20 * 12 * 2,
                      "pointwise": 4 * (20 * 20 + 20), "fc1": 20 * 128 + 128, "fc2": 128 + 1}
    # PyTorch's numel counts a complex weight once: PDEBench's "24K parameters"
    assert counts["total"] - counts["spectral"] // 2 == 23937


@pytest.mark.parametrize("k,kept", [(3, True), (5, False)])
def test_spectral_conv_multiplies_kept_modes_and_drops_the_rest(k, kept):
    from ups_jax.models import SpectralConv1d

    n, modes, a, b = 32, 4, 0.7, -0.3
    conv = SpectralConv1d(1, 1, modes, rngs=nnx.Rngs(0))
    w = np.zeros((1, 1, modes, 2), np.float32)
    w[0, 0, :, 0], w[0, 0, :, 1] = a, b                 # every kept mode multiplied by a + ib
    conv.weight[...] = jnp.asarray(w)
    theta = 2 * np.pi * k * np.arange(n) / n
    out = np.asarray(conv(jnp.asarray(np.cos(theta), jnp.float32)[None, :, None]))[0, :, 0]
    expected = a * np.cos(theta) - b * np.sin(theta) if kept else np.zeros(n)   # Re((a + ib) e^{iθ})
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ----------------------------------------------------------------------------------- which frames are read
@pytest.mark.parametrize("config,overrides", [
    ("burgers32.py:test", ("model.context_frames=3",)),
    ("fno_burgers.py:test", ()),                       # 3 context frames in the :test variant
])
def test_rollout_reads_exactly_the_last_context_frames(config, overrides):
    from ups_jax.eval.rollout import Rollout
    from ups_jax.models import build_model

    cfg = _cfg(config, *overrides)
    n, h = 64, 3
    model = build_model(cfg, n, seed=0)
    assert model.context_frames == h
    rollout = Rollout(model, norm={"mean": 0.0, "std": 1.0}, x01=(np.arange(n) + 0.5) / n, batch_size=2)
    rng = np.random.default_rng(0)
    given = rng.normal(size=(2, 10, n)).astype(np.float32)        # 10 given frames, oldest first
    nu, dt = np.full(2, 0.01, np.float32), 0.05
    base = rollout(given, nu, dt, 2)
    older = given.copy()
    older[:, :10 - h] += rng.normal(size=(2, 10 - h, n))           # frames the model must not read
    np.testing.assert_array_equal(rollout(older, nu, dt, 2), base)
    for f in range(10 - h, 10):                                     # every frame it does read matters
        read = given.copy()
        read[:, f] += 0.5
        assert np.abs(rollout(read, nu, dt, 2) - base).max() > 1e-4, f
    with pytest.raises(ValueError, match="reads 3 context frames but only 2 are given"):
        rollout(given[:, :2], nu, dt, 2)


# ------------------------------------------------------------------------------------- loss window layout
class _Clock(nnx.Module):
    """A model whose latent is the newest context frame and whose step adds 1: on data u[b, t, x] = t its
    predictions are exact iff every loss aligns context, pushforward and targets as documented."""

    def encode_frames(self, u_ctx, x01):
        return u_ctx[:, -1][..., None]                              # (B, T=X, D=1)

    def rollout(self, z, dt, nu, steps):
        return jnp.stack([z + k for k in range(1, steps + 1)], axis=1)

    def decode(self, z, xq01):
        idx = jnp.round(jnp.asarray(xq01) * z.shape[1] - 0.5).astype(jnp.int32)
        return z[:, idx]

    def rollout_fields(self, u_ctx, dt, nu, x01, steps, mode="latent"):
        return self.rollout(u_ctx[:, -1], dt, nu, steps)


@pytest.mark.parametrize("h,P,K", [(1, 0, 3), (3, 0, 2), (2, 2, 3)])
def test_losses_align_context_pushforward_and_targets(h, P, K):
    from ups_jax.training.losses import make_fno_loss, make_ups_loss

    n = 16
    x01 = jnp.asarray((np.arange(n) + 0.5) / n, jnp.float32)
    u = jnp.broadcast_to(jnp.arange(h + P + K, dtype=jnp.float32)[None, :, None], (2, h + P + K, n))
    batch = {"u": u, "dt": jnp.full((2,), 0.05), "nu": jnp.full((2,), 0.01)}
    weights = dict(recon=1.0, one_step=1.0, latent=1.0, rollout=1.0)
    common = dict(x01=x01, rollout_steps=K, context_frames=h, pushforward_steps=P)
    for loss_fn in (make_ups_loss(weights, query_points=8, **common), make_fno_loss(**common)):
        loss, terms = loss_fn(_Clock(), batch, jax.random.key(0))
        assert float(loss) == 0.0, terms
    shifted = {**batch, "u": u + jnp.arange(h + P + K, dtype=jnp.float32)[None, :, None]}   # t -> 2t: misaligned
    assert float(make_ups_loss(weights, **common)(_Clock(), shifted, jax.random.key(0))[0]) > 0
    noisy = make_ups_loss(weights, input_noise=0.1, **common)
    assert float(noisy(_Clock(), batch, jax.random.key(0))[1]["loss/one_step"]) > 0


# ------------------------------------------------------------------------------------ FNO through the loop
def test_fno_baseline_trains_with_the_stage_loop_and_beats_persistence(tmp_path, burgers_file):
    from ups_jax.training.pipeline import train_and_evaluate

    cfg = _cfg("fno_burgers.py:test", "stages.fno.steps=120", "stages.fno.eval_every=60", "stages.fno.log_every=5",
               "stages.fno.lr=3e-3")     # PDEBench's recipe otherwise: Adam-L2, StepLR, no EMA, raw fields
    results = train_and_evaluate(cfg, tmp_path / "fno", data_paths=[burgers_file])
    ev = results["eval"]
    assert ev["protocol"]["context_frames_read"] == 3
    assert ev["model"]["nrmse"] < 0.8 * ev["persistence"]["nrmse"], (ev["model"]["nrmse"], ev["persistence"]["nrmse"])
    records = [json.loads(line) for line in (tmp_path / "fno" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("n,modes", [(258, 12), (16, 9), (15, 8), (32, 4)])
def test_spectral_conv_equals_the_fft_formula(n, modes):
    from ups_jax.models import SpectralConv1d

    conv = SpectralConv1d(3, 2, modes, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (4, n, 3))
    w = np.asarray(conv.weight[...])
    m = min(modes, n // 2 + 1)
    wc = (w[..., 0] + 1j * w[..., 1])[:, :, :m]
    spec = np.einsum("bmi,iom->bmo", np.fft.rfft(np.asarray(x, np.float64), axis=1)[:, :m], wc)
    full = np.zeros((4, n // 2 + 1, 2), complex)
    full[:, :m] = spec
    np.testing.assert_allclose(np.asarray(conv(x)), np.fft.irfft(full, n=n, axis=1), atol=2e-5)


# ------------------------------------------------------------------------------------- raw skip path
@pytest.mark.parametrize("dec_overrides", [(), ("--config.model.decoder.num_layers=0",
                                                "--config.model.decoder.local_mlp=16")])
def test_raw_skip_reconstructs_grid_values_exactly_at_init_and_interpolates_linearly(dec_overrides):
    """With model.encoder.raw_skip the first `patch` latent dims are the newest frame's grid values and the decoder
    starts as their periodic linear interpolation: exact at the grid points, the mean of neighbours half-way."""
    from ups_jax.models import build_model

    cfg = _cfg("burgers32.py:test", "--config.model.encoder.raw_skip=True",
               "--config.model.encoder.final_norm=False", "--config.model.latent_dim=12", *dec_overrides)
    n = 64
    model = build_model(cfg, n, seed=0)
    rng = np.random.default_rng(1)
    u = rng.normal(size=(2, model.context_frames, n)).astype(np.float32)
    x01 = (np.arange(n) + 0.5) / n
    z = model.encode_frames(jnp.asarray(u), jnp.asarray(x01))
    np.testing.assert_allclose(np.asarray(model.decode(z, jnp.asarray(x01)))[..., 0], u[:, -1], atol=1e-5)
    mid = np.arange(n) / n                                          # half-way between grid points i-1 and i
    want = 0.5 * (u[:, -1] + np.roll(u[:, -1], 1, axis=-1))
    np.testing.assert_allclose(np.asarray(model.decode(z, jnp.asarray(mid)))[..., 0], want, atol=1e-5)


def test_raw_skip_needs_latent_dim_above_the_patch():
    from ups_jax.models import ModelConfigError, build_model

    cfg = _cfg("burgers32.py:test", "--config.model.encoder.raw_skip=True", "--config.model.latent_dim=2")
    with pytest.raises(ModelConfigError, match="raw_skip needs model.latent_dim=2 > the patch"):
        build_model(cfg, 64, seed=0)


# ----------------------------------------------------------------------------- per-sample amplitude (scale_norm)
def _perturbed(model, scale=0.05):
    """The model with every parameter moved off its init (zero-initialised heads would make equivariance trivial)."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape)
                                                   for x, k in zip(leaves, keys)]))
    return model


@pytest.mark.parametrize("config, grid, overrides", [
    ("burgers32.py:test", (64,), ()),
    ("burgers32.py:cpu", (256,), ()),                                            # raw skip + local MLP readout
    ("ns2d.py:test", (16, 16), ()),
])
def test_scale_norm_makes_the_codec_amplitude_equivariant(config, grid, overrides):
    """model.scale_norm: the last latent dim is log RMS of the newest frame and D(E(αu)) = α D(E(u)) for any
    amplitude α (up to the ε floor: 1e-6 relative at α = 0.2), whatever the weights; without it the codec is not
    equivariant."""
    from ups_jax.data.grids import grid_points, mesh01
    from ups_jax.models import build_model

    x01 = jnp.asarray((np.arange(grid[0]) + 0.5) / grid[0] if len(grid) == 1 else mesh01(grid), jnp.float32)
    xq = grid_points(x01)
    u = jnp.asarray(np.random.default_rng(0).normal(size=(2, 1) + grid), jnp.float32)
    errors = {}
    for on in (True, False):
        cfg = _cfg(config, f"--config.model.scale_norm={on}", *overrides)
        with cfg.unlocked():
            cfg.model.context_frames = 1
        model = _perturbed(build_model(cfg, grid if len(grid) > 1 else grid[0], seed=0))
        z = model.encode_frames(u, x01)
        if on:
            rms = np.sqrt(np.mean(np.square(np.asarray(u[:, -1])), axis=tuple(range(1, len(grid) + 1))))
            np.testing.assert_allclose(np.asarray(z[..., -1]), np.log(rms)[:, None] * np.ones(z.shape[1]), atol=1e-5)
        out = np.asarray(model.decode(z, xq))
        errors[on] = max(float(np.max(np.abs(np.asarray(model.decode(model.encode_frames(a * u, x01), xq)) - a * out)))
                         / (a * float(np.max(np.abs(out)))) for a in (0.2, 3.0))
    assert errors[True] < 1e-4, errors
    assert errors[False] > 1e-2, errors


def test_advance_scale_false_keeps_log_s_through_the_rollout():
    """model.operator.advance_scale=False: the operator reads log s but never changes it (the decoded amplitude
    stays the given frame's); True (default): it steps it like any latent dim."""
    from ups_jax.models import build_model

    u = jnp.asarray(np.random.default_rng(2).normal(size=(2, 1, 64)), jnp.float32)
    x01 = jnp.asarray((np.arange(64) + 0.5) / 64)
    for advance in (False, True):
        cfg = _cfg("burgers32.py:test", "--config.model.scale_norm=True",
                   f"--config.model.operator.advance_scale={advance}")
        model = _perturbed(build_model(cfg, 64, seed=0))
        z0 = model.encode_frames(u[:, :model.context_frames] if model.context_frames == 1 else
                                 jnp.repeat(u, model.context_frames, axis=1), x01)
        zs = model.rollout(z0, jnp.full((2,), 0.05), jnp.full((2,), 0.01), 3)
        moved = float(jnp.max(jnp.abs(zs[..., -1] - z0[:, None, :, -1])))
        assert (moved == 0.0) == (not advance), (advance, moved)


def test_scale_norm_keeps_the_raw_path_exact_at_the_grid_points():
    """With the raw skip, the raw dims hold u / s and the decoder multiplies by s: still u at the grid points."""
    from ups_jax.models import build_model

    cfg = _cfg("burgers32.py:test", "--config.model.encoder.raw_skip=True", "--config.model.scale_norm=True",
               "--config.model.encoder.final_norm=False", "--config.model.latent_dim=12")
    n = 64
    model = build_model(cfg, n, seed=0)
    u = 0.01 * np.random.default_rng(1).normal(size=(2, model.context_frames, n)).astype(np.float32)
    x01 = jnp.asarray((np.arange(n) + 0.5) / n)
    z = model.encode_frames(jnp.asarray(u), x01)
    np.testing.assert_allclose(np.asarray(model.decode(z, x01))[..., 0], u[:, -1], rtol=1e-4, atol=1e-7)


def test_scale_norm_needs_a_learned_dim():
    from ups_jax.models import ModelConfigError, build_model

    cfg = _cfg("burgers32.py:test", "--config.model.encoder.raw_skip=True", "--config.model.scale_norm=True",
               "--config.model.latent_dim=9")          # 64 points / 8 tokens: a patch of 8, + the scale = 9
    with pytest.raises(ModelConfigError, match=r"model.scale_norm needs model.latent_dim=9 > 9"):
        build_model(cfg, 64, seed=0)
