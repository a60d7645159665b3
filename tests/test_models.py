"""Tests for ups_jax.models: shapes, parameter counts, config errors, residual init, conditioning, off-grid decoding,
scan rollouts in pattern-B style, single tracing, resampling semantics and checkpoint-shape helpers.

Costs are kept small for a shared 2-core CPU: the full-size config is only traced abstractly (``nnx.eval_shape`` /
``jax.eval_shape``), and one jitted ``step`` (wrapped in ``chex.assert_max_traces(n=1)``) is shared by the tests.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ups_jax.config import load_config
from ups_jax.errors import UserError
from ups_jax.models import (ChannelSeparatedSelfAttention, GridEncoder, LatentOperator, ModelConfigError,
                            abstract_model, build_model, config_key_for, count_params, downsample_tokens,
                            param_shapes, shape_mismatches, upsample_tokens_linear)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "burgers32.py")
DOCS = ROOT / "docs" / "models.md"
VARIANTS = {"full": "", "cpu": ":cpu", "test": ":test"}


def cfg_for(variant: str, *overrides: str):
    return load_config(CONFIG + VARIANTS[variant], overrides)


def grid_size(cfg) -> int:
    """Points per frame after PDEBench-style spatial subsampling (u[..., ::reduced_resolution])."""
    return -(-cfg.data.generate.nx // cfg.data.reduced_resolution)


def grid01(n: int) -> np.ndarray:
    return ((np.arange(n) + 0.5) / n).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# hand-computed parameter counts (independent of the module code)
# ------------------------------------------------------------------------------------------------------------

def lin(i, o):
    return i * o + o


def expected_counts(cfg, num_points: int, channels: int = 1) -> dict[str, int]:
    m = cfg.model
    d, t = m.latent_dim, m.latent_tokens
    e = m.encoder
    w, k, nf = e.width, e.kernel_size, 2 * len(e.fourier_freqs)
    enc = 0
    c_in = channels + nf
    for _ in range(e.num_conv):
        enc += k * c_in * w + w
        c_in = w
    raw = num_points // t if e.get("raw_skip", False) else 0          # raw skip: the first dims are grid values
    enc += lin((num_points // t) * c_in, d - raw) + (2 * (d - raw) if e.get("final_norm", True) else 0)

    def pdet(o):         # U-shaped PDE-Transformer of width H with AdaLN (cond_dim) and its final LN
        h, g, c = o.hidden_dim, o.group_size, o.cond_dim
        f = int(h * o.mlp_ratio)
        layer = 2 * h + (4 * lin(g, g) + 2 * g) + (2 * h + lin(h, f) + lin(f, h)) + 2 * lin(c, 3 * h)
        n_layers = 2 * sum(o.depths[:-1]) + o.depths[-1]
        return n_layers * layer + 2 * (len(o.depths) - 1) * lin(h, h) + 2 * h

    o = m.operator
    h, c = o.hidden_dim, o.cond_dim
    op = lin(2, c) + lin(c, c) + lin(d, h) + lin(h, d) + pdet(o)
    if o.pos_embed:      # learned token positions (T, H)
        op += t * h

    def denoiser(o, inputs, levels):   # (dt, ν) + level embeddings, input proj, positions, PDET, output proj
        return (lin(2, o.cond_dim) + lin(o.cond_dim, o.cond_dim) + levels * o.cond_dim + lin(inputs * d, o.hidden_dim)
                + t * o.hidden_dim + pdet(o) + lin(o.hidden_dim, d))

    dc = m.decoder
    hd, mh, nq = dc.hidden_dim, dc.mlp_hidden, 2 * len(dc.fourier_freqs)
    block = 3 * 2 * hd + 4 * lin(hd, hd) + lin(hd, mh) + lin(mh, hd)
    dec = 2 * lin(nq, hd) + lin(d, hd) + dc.num_layers * block + 2 * hd + lin(hd, mh) + lin(mh, channels)
    if dc.local_freqs:   # local patch readout: Linear(D → C·(1 + 2·len(local_freqs)))
        dec += lin(d, channels * (1 + 2 * len(dc.local_freqs)))
    if dc.get("local_mlp", 0):   # local MLP readout: (2·neighbours + 1) tokens + 2·2 offset features + 1 → C
        n_in, lm = (2 * dc.get("local_neighbors", 1) + 1) * d + 5, dc.local_mlp
        dec += lin(n_in, lm) + lin(lm, channels)
    out = dict(encoder=enc, operator=op, decoder=dec)
    if m.get("corrector") is not None and m.corrector.get("kind", "latent") == "field":
        # the periodic CNN (models/field_cnn.py, 1-D): in (û, D(z'), log ν) → width, depth − 2 residual convs, → 1;
        # one deterministic call per step: no student
        f = m.corrector.field
        kk, w = f.kernel, f.width
        out["corrector"] = (kk * 3 * w + w) + (f.depth - 2) * (kk * w * w + w) + (kk * w + 1)
    elif m.get("corrector") is not None:
        out["corrector"] = denoiser(m.corrector, 3, m.corrector.refine_steps + 1)
        if m.get("student") is not None:
            out["student"] = out["corrector"]          # the student copies the corrector's architecture
    if m.get("steady") is not None:
        out["steady"] = denoiser(m.steady, 2, m.steady.iterations)
    return dict(total=sum(out.values()), **out)


# ------------------------------------------------------------------------------------------------------------
# shared tiny model (the :test config) with one jitted, trace-counted step
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    chex.clear_trace_counter()
    cfg = cfg_for("test")
    n = grid_size(cfg)
    model = build_model(cfg, n, seed=0)
    graphdef, state = nnx.split(model)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, z, dt, nu):
        return nnx.merge(graphdef, state).step(z, dt, nu)

    @jax.jit
    def encode(state, u, x01):
        return nnx.merge(graphdef, state).encode(u, x01)

    _, unravel = jax.flatten_util.ravel_pytree(state)
    unravel = jax.jit(unravel)

    def perturb(state, seed: int):
        """Adds N(0, 0.3²) noise to every Param (switches the zero-initialised AdaLN modulation on)."""
        flat, _ = jax.flatten_util.ravel_pytree(state)
        noise = np.random.default_rng(seed).normal(0.0, 0.3, flat.shape).astype(np.float32)
        return unravel(flat + noise)

    b = 3
    x01 = grid01(n)
    xs = jnp.asarray(x01)[None, :, None]
    phase = jnp.arange(b, dtype=jnp.float32)[:, None, None] * 0.21
    u = jnp.sin(2 * jnp.pi * (xs + phase)) + 0.5 * jnp.cos(4 * jnp.pi * xs)
    dt = jnp.full((b,), 0.05, jnp.float32)
    nu = jnp.full((b,), 0.01, jnp.float32)
    return SimpleNamespace(cfg=cfg, n=n, model=model, graphdef=graphdef, state=state, step=step, encode=encode,
                           perturb=perturb, u=u, x01=x01, dt=dt, nu=nu, b=b)


# ------------------------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------------------------

def test_shapes_test_config(tiny):
    cfg, b = tiny.cfg, tiny.b
    t, d = cfg.model.latent_tokens, cfg.model.latent_dim
    z = tiny.encode(tiny.state, tiny.u, tiny.x01)
    assert z.shape == (b, t, d) and z.dtype == jnp.float32
    z1 = tiny.step(tiny.state, z, tiny.dt, tiny.nu)
    assert z1.shape == (b, t, d)

    xq = jnp.asarray(np.random.default_rng(0).uniform(0, 1, 13), jnp.float32)

    @jax.jit
    def decode_both(state, z):
        m = nnx.merge(tiny.graphdef, state)
        return m.decode(z, xq), m.decode(z, jnp.broadcast_to(xq, (b, 13)))

    out_shared, out_batched = decode_both(tiny.state, z1)
    assert out_shared.shape == (b, 13, 1)
    np.testing.assert_allclose(out_shared, out_batched, rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(out_shared)))
    # latents from the encoder are LayerNorm-ed per token
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(z ** 2, -1)), 1.0, rtol=0.2)


def test_shapes_full_config_abstract():
    cfg = cfg_for("full")
    n = grid_size(cfg)
    assert n == 256
    model = abstract_model(cfg, n)
    graphdef, state = nnx.split(model)
    b, q = 2, 37

    def fwd(state, u, x01, xq, dt, nu):
        m = nnx.merge(graphdef, state)
        z = m.encode(u, x01)
        z1 = m.step(z, dt, nu)
        return z, z1, m.decode(z1, xq)

    sds = jax.ShapeDtypeStruct
    z, z1, out = jax.eval_shape(fwd, state, sds((b, n, 1), jnp.float32), sds((n,), jnp.float32),
                                sds((b, q), jnp.float32), sds((b,), jnp.float32), sds((b,), jnp.float32))
    t, d = cfg.model.latent_tokens, cfg.model.latent_dim
    assert (z.shape, z1.shape, out.shape) == ((b, t, d), (b, t, d), (b, q, 1))
    assert all(x.dtype == jnp.float32 for x in (z, z1, out))
    shapes = param_shapes(model)
    assert shapes["operator/input_proj/kernel"] == (32, 96)
    assert shapes["encoder/proj/kernel"] == ((n // t) * cfg.model.encoder.width, d)
    assert shapes["operator/pdet/mid_layers/0/attn/qkv/kernel"] == (12, 36)     # q, k, v stacked: one matmul
    assert shapes["operator/pdet/mid_layers/0/mod/proj/kernel"] == (64, 6 * 96)  # both AdaLN branches: one matmul


@pytest.mark.parametrize("tokens", [6, 5, 1])
def test_operator_odd_token_counts(tokens):
    """U-shape with odd T (repeat-last-token downsampling) and T=1 keeps the token count end to end."""
    op = nnx.eval_shape(lambda: LatentOperator(latent_dim=8, hidden_dim=16, group_size=8, num_heads=2,
                                               depths=(1, 1, 1), mlp_ratio=2.0, cond_dim=8, rngs=nnx.Rngs(0)))
    gd, st = nnx.split(op)
    sds = jax.ShapeDtypeStruct
    out = jax.eval_shape(lambda s, z, dt, nu: nnx.merge(gd, s)(z, dt, nu), st, sds((2, tokens, 8), jnp.float32),
                         sds((2,), jnp.float32), sds((2,), jnp.float32))
    assert out.shape == (2, tokens, 8)


# ------------------------------------------------------------------------------------------------------------
# parameter counts
# ------------------------------------------------------------------------------------------------------------

def test_param_count_channel_separated_attention():
    # H=16, g=8: 4 Linear(8,8) with bias + 2 RMSNorm(8) = 4·(8·8+8) + 2·8 = 304 (G=2 groups share the weights)
    m = nnx.eval_shape(lambda: ChannelSeparatedSelfAttention(16, 8, 2, rngs=nnx.Rngs(0)))
    assert count_params(m)["total"] == 4 * (8 * 8 + 8) + 2 * 8 == 304
    # the 32-dim production PDET attention of the original (H=96, g=12, h=6): 648 per layer
    m = nnx.eval_shape(lambda: ChannelSeparatedSelfAttention(96, 12, 6, rngs=nnx.Rngs(0)))
    assert count_params(m)["total"] == 648


@pytest.mark.parametrize("variant", ["full", "cpu", "test"])
def test_param_counts_match_hand_formula_and_docs(variant):
    cfg = cfg_for(variant)
    n = grid_size(cfg)
    counts = count_params(abstract_model(cfg, n))
    assert counts == expected_counts(cfg, n)
    # docs/models.md table row for this variant lists encoder | operator | decoder | corrector | student | steady | total
    row = next((line for line in DOCS.read_text().splitlines() if line.startswith(f"| `{variant}`")), None)
    assert row is not None, f"docs/models.md has no parameter-count row for `{variant}`"
    cells = [c.strip() for c in row.strip().strip("|").split("|")][-7:]          # "—": the variant has no such module
    keys = ("encoder", "operator", "decoder", "corrector", "student", "steady", "total")
    assert [None if c == "—" else int(c.replace(",", "")) for c in cells] == [counts.get(k) for k in keys], row


def test_full_operator_count_vs_original():
    """Without the AdaLN/conditioning parameters our operator is the original PDET (234,632 of its 236,872)."""
    cfg = cfg_for("full")
    o = cfg.model.operator
    counts = count_params(abstract_model(cfg, grid_size(cfg)))
    n_layers = 2 * sum(o.depths[:-1]) + o.depths[-1]
    adaln = n_layers * 2 * lin(o.cond_dim, 3 * o.hidden_dim)
    cond = lin(2, o.cond_dim) + lin(o.cond_dim, o.cond_dim)
    pos = cfg.model.latent_tokens * o.hidden_dim if o.pos_embed else 0
    assert counts["operator"] - adaln - cond - pos == 234_632


# ------------------------------------------------------------------------------------------------------------
# configuration errors
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,needles", [
    ("model.operator.group_size=10", ["model.operator.hidden_dim=96", "model.operator.group_size=10"]),
    ("model.operator.num_heads=5", ["model.operator.group_size=12", "model.operator.num_heads=5"]),
    ("model.latent_tokens=30", ["model.latent_tokens=30", "256"]),
    ("model.decoder.num_heads=5", ["model.decoder.hidden_dim=96", "model.decoder.num_heads=5"]),
])
def test_divisibility_errors_name_config_keys(override, needles):
    cfg = cfg_for("full", override)
    with pytest.raises(ValueError) as info:
        abstract_model(cfg, grid_size(cfg))
    assert isinstance(info.value, ModelConfigError) and isinstance(info.value, UserError)
    for needle in needles:
        assert needle in str(info.value)


def test_encoder_rejects_wrong_grid(tiny):
    with pytest.raises(ValueError, match="data grid does not match"):
        tiny.model.encode(jnp.zeros((1, tiny.n + 2, 1)), grid01(tiny.n + 2))


# ------------------------------------------------------------------------------------------------------------
# operator: residual init, conditioning, rollouts, tracing
# ------------------------------------------------------------------------------------------------------------

def test_operator_is_small_residual_at_init(tiny):
    z = tiny.encode(tiny.state, tiny.u, tiny.x01)
    z1 = tiny.step(tiny.state, z, tiny.dt, tiny.nu)
    rel = float(jnp.linalg.norm(z1 - z) / jnp.linalg.norm(z))
    # output_proj std = 1e-2/sqrt(H) on a unit-RMS final LN ⇒ update RMS ≈ 1e-2 of the unit-RMS latent
    assert 1e-3 < rel < 3e-2, rel


def test_conditioning_on_dt_and_nu(tiny):
    z = tiny.encode(tiny.state, tiny.u, tiny.x01)
    dt2, nu2 = tiny.dt * 2.0, tiny.nu * 3.0
    # adaLN-Zero: at init the modulation is exactly zero, so (dt, ν) cannot change the output yet
    base = tiny.step(tiny.state, z, tiny.dt, tiny.nu)
    np.testing.assert_array_equal(base, tiny.step(tiny.state, z, dt2, tiny.nu))
    # once the parameters move (here: a random perturbation), both dt and ν change the step
    state = tiny.perturb(tiny.state, 1)
    base = tiny.step(state, z, tiny.dt, tiny.nu)
    scale = float(jnp.linalg.norm(base - z))
    for dt, nu in ((dt2, tiny.nu), (tiny.dt, nu2)):
        diff = float(jnp.linalg.norm(tiny.step(state, z, dt, nu) - base))
        assert diff > 1e-2 * scale, (diff, scale)
    # per-sample conditioning: a batch with mixed ν equals the per-sample results
    mixed = tiny.step(state, z, tiny.dt, tiny.nu.at[0].set(nu2[0]))
    np.testing.assert_allclose(mixed[1:], base[1:], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(mixed[0] - base[0]).max()) > 1e-4


def test_scan_rollout_matches_python_loop(tiny):
    state = tiny.perturb(tiny.state, 2)
    z0 = tiny.encode(tiny.state, tiny.u, tiny.x01)
    k = 5
    graphdef = tiny.graphdef

    @jax.jit
    def scan_rollout(state, z0, dt, nu):
        def body(z, _):
            m = nnx.merge(graphdef, state)      # pattern B: merge inside the scan body
            z = m.step(z, dt, nu)
            return z, z
        _, zs = jax.lax.scan(body, z0, None, length=k)
        via_method = nnx.merge(graphdef, state).rollout(z0, dt, nu, k)   # UPS.rollout (scan inside the module)
        return jnp.swapaxes(zs, 0, 1), via_method

    zs, via_method = scan_rollout(state, z0, tiny.dt, tiny.nu)
    z, loop = z0, []
    for _ in range(k):
        z = tiny.step(state, z, tiny.dt, tiny.nu)
        loop.append(z)
    loop = jnp.stack(loop, axis=1)
    assert zs.shape == (tiny.b, k) + z0.shape[1:]
    np.testing.assert_allclose(zs, loop, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(via_method, loop, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(loop[:, -1] - z0).max()) > 1e-3   # the rollout actually moved


def test_rollout_hoisted_conditioning_gives_the_per_step_loss_and_gradient(tiny):
    """``UPS.rollout`` computes the (dt, ν) AdaLN modulation once, for all layers in one matmul, and carries the
    operator's variables into its scan as one vector (issue 16: fewer kernels). Same mathematics as calling the
    operator step by step: the same loss and the same gradient for every parameter."""
    state = tiny.perturb(tiny.state, 3)
    z0 = tiny.encode(tiny.state, tiny.u, tiny.x01)
    k, graphdef = 3, tiny.graphdef
    weights = jnp.arange(1, k + 1, dtype=jnp.float32)[None, :, None, None]

    def loss(state, hoisted):
        model = nnx.merge(graphdef, state)
        if hoisted:
            zs = model.rollout(z0, tiny.dt, tiny.nu, k)
        else:                       # the operator's own __call__, conditioning recomputed at every step
            z, out = z0, []
            for _ in range(k):
                z = model.operator(z, tiny.dt, tiny.nu)
                out.append(z)
            zs = jnp.stack(out, axis=1)
        return jnp.mean(weights * jnp.square(zs - 0.5 * z0[:, None]))

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (l_hoisted, g_hoisted), (l_loop, g_loop) = grad(state, True), grad(state, False)
    np.testing.assert_allclose(l_hoisted, l_loop, rtol=1e-5)
    flat_h, flat_l = (jax.flatten_util.ravel_pytree(nnx.State(g).filter(nnx.Param))[0] for g in (g_hoisted, g_loop))
    assert float(jnp.linalg.norm(flat_l)) > 0
    assert float(jnp.linalg.norm(flat_h - flat_l) / jnp.linalg.norm(flat_l)) < 1e-5
    # every layer's row of the one-matmul modulation is that layer's own AdaLN projection (U-shape: 5 layers)
    op = LatentOperator(latent_dim=4, hidden_dim=8, group_size=4, num_heads=2, depths=(1, 1, 1), cond_dim=6,
                        rngs=nnx.Rngs(0))
    layers = op.pdet.layers_in_order()
    rng = np.random.default_rng(0)
    for layer in layers:        # AdaLN-Zero starts at zero: give every layer its own nonzero projection
        layer.mod.proj.kernel[...] = jnp.asarray(rng.normal(size=layer.mod.proj.kernel.shape), jnp.float32)
        layer.mod.proj.bias[...] = jnp.asarray(rng.normal(size=layer.mod.proj.bias.shape), jnp.float32)
    c = op.cond_embed(tiny.dt, tiny.nu)
    m = op.pdet.modulation(c)
    assert len(layers) == 5 and m.shape == (tiny.b, 5, 6 * 8)
    for i, layer in enumerate(layers):
        np.testing.assert_allclose(m[:, i], layer.mod.proj(c), rtol=1e-5, atol=1e-6)


def test_step_traces_once_for_fixed_shapes(tiny):
    z = tiny.encode(tiny.state, tiny.u, tiny.x01)
    for i in range(3):   # new values (params, latents, dt, ν), same shapes: no retrace
        state = tiny.perturb(tiny.state, 10 + i)
        z = tiny.step(state, z + 0.1 * i, tiny.dt * (1 + i), tiny.nu / (1 + i))
    jax.block_until_ready(z)
    # the guard is live: a new batch size would be a second trace and is refused
    with pytest.raises(AssertionError):
        tiny.step(tiny.state, z[:1], tiny.dt[:1], tiny.nu[:1])


# ------------------------------------------------------------------------------------------------------------
# encoder / decoder behaviour
# ------------------------------------------------------------------------------------------------------------

def test_encoder_circular_padding_is_shift_equivariant():
    """Without positional features, shifting the field by one patch rolls the tokens by one (periodic stem)."""
    n, t = 32, 8
    enc = GridEncoder(num_points=n, latent_tokens=t, latent_dim=4, width=6, kernel_size=5, num_conv=2,
                      fourier_freqs=(), rngs=nnx.Rngs(0))
    gd, st = nnx.split(enc)
    u = jax.random.normal(jax.random.key(0), (2, n, 1))
    x01 = grid01(n)
    f = jax.jit(lambda s, u: nnx.merge(gd, s)(u, x01))
    z, z_shift = f(st, u), f(st, jnp.roll(u, n // t, axis=1))
    np.testing.assert_allclose(z_shift, jnp.roll(z, 1, axis=1), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(z_shift - z).max()) > 1e-2


def test_autoencoder_reproduces_periodic_field_off_grid():
    """Encoder+decoder fit on grid points of a few smooth periodic fields; evaluated at random OFF-grid points.

    Decoder Fourier frequencies stay below the 32-point Nyquist limit of this grid (see docs/models.md: with
    frequencies at Nyquist, a decoder trained on grid points only can alias between them).
    """
    cfg = cfg_for("test", "model.decoder.fourier_freqs=(1,2,4,8)")
    n = grid_size(cfg)
    model = build_model(cfg, n, seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x01 = jnp.asarray(grid01(n))
    amps = jnp.array([1.0, 0.5, -0.8, 1.2])
    shifts = jnp.array([0.0, 0.13, 0.37, 0.71])

    def fields(x):   # (Q,) → (4, Q, 1): a·sin(2π(x+s)) + 0.5·cos(4π(x+s))
        xs = x[None, :] + shifts[:, None]
        return (amps[:, None] * jnp.sin(2 * jnp.pi * xs) + 0.5 * jnp.cos(4 * jnp.pi * xs))[..., None]

    u = fields(x01)
    steps = 400
    tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.1))

    def loss_fn(p):
        m = nnx.merge(graphdef, p, rest)
        return jnp.mean((m.decode(m.encode(u, x01), x01) - u) ** 2)

    @jax.jit
    def fit(p):
        def body(carry, _):
            p, o = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            upd, o = tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o), loss
        (p, _), losses = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
        return p, losses

    fitted, losses = fit(params)
    assert float(losses[-1]) < 1e-2 * float(losses[0])
    # every part was trained (the encoder is not frozen)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), nnx.to_pure_dict(fitted), nnx.to_pure_dict(params))
    assert moved["encoder"]["proj"]["kernel"] > 1e-3 and moved["decoder"]["head"]["fc2"]["kernel"] > 1e-3

    xq = jax.random.uniform(jax.random.key(3), (257,))
    mids = x01 + 0.5 / n                                      # the points furthest from the grid
    m = nnx.merge(graphdef, fitted, rest)

    @jax.jit
    def predict(z, xq):
        return m.decode(z, xq)

    z = jax.jit(m.encode)(u, x01)
    for q in (xq, mids):
        pred, target = predict(z, q), fields(q)
        rel = float(jnp.linalg.norm(pred - target) / jnp.linalg.norm(target))
        assert rel < 5e-2, rel


# ------------------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------------------

def test_token_resampling_semantics():
    x = jnp.asarray([0.0, 1.0, 4.0])[None, :, None]
    # odd T: repeat last token, then average pairs → [(0+1)/2, (4+4)/2]
    np.testing.assert_allclose(downsample_tokens(x)[0, :, 0], [0.5, 4.0])
    np.testing.assert_allclose(downsample_tokens(x[:, :1])[0, :, 0], [0.0])
    # torch F.interpolate(linear, align_corners=False): [0,1] → 4 = [0, .25, .75, 1]; [0,1,4] → 5 = [0,.4,1,2.8,4]
    np.testing.assert_allclose(upsample_tokens_linear(x[:, :2], 4)[0, :, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(upsample_tokens_linear(x, 5)[0, :, 0], [0.0, 0.4, 1.0, 2.8, 4.0], atol=1e-6)
    y = jax.random.normal(jax.random.key(0), (2, 3, 4))
    np.testing.assert_allclose(upsample_tokens_linear(y, 8), jax.image.resize(y, (2, 8, 4), "linear"), atol=1e-5)


def test_channel_separated_attention_matches_per_group_reference():
    h, g, nh = 16, 8, 2
    attn = ChannelSeparatedSelfAttention(h, g, nh, rngs=nnx.Rngs(0))
    # RMS scales away from their init (ones) and a non-zero bias: the fused kernel must fold them in exactly
    attn.q_norm.scale[...] = jax.random.uniform(jax.random.key(2), (g,), minval=0.5, maxval=2.0)
    attn.k_norm.scale[...] = jax.random.uniform(jax.random.key(3), (g,), minval=0.5, maxval=2.0)
    attn.qkv.bias[...] = 0.1 * jax.random.normal(jax.random.key(4), (3 * g,))
    x = jax.random.normal(jax.random.key(1), (2, 5, h))

    def reference(a, x):
        outs = []
        for i in range(h // g):                               # same Linear(g, g) weights for every group
            xg = x[..., i * g:(i + 1) * g]
            w, bias = a.qkv.kernel[...], a.qkv.bias[...]       # the stacked kernel, used unfused here
            q = a.q_norm(xg) @ w[:, :g] + bias[:g]
            k = a.k_norm(xg) @ w[:, g:2 * g] + bias[g:2 * g]
            v = xg @ w[:, 2 * g:] + bias[2 * g:]
            heads = []
            for j in range(nh):
                s = slice(j * (g // nh), (j + 1) * (g // nh))
                w = jax.nn.softmax(q[..., s] @ jnp.swapaxes(k[..., s], -1, -2) / np.sqrt(g // nh), axis=-1)
                heads.append(w @ v[..., s])
            outs.append(a.o_proj(jnp.concatenate(heads, -1)))
        return jnp.concatenate(outs, -1)

    gd, st = nnx.split(attn)
    out, ref = jax.jit(lambda s, x: (nnx.merge(gd, s)(x), reference(nnx.merge(gd, s), x)))(st, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


class _UnfusedCrossAttention(nnx.Module):
    """The decoder's cross-attention as it was before train-state format 3: separate q/k/v/out Linear(E, E)."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.k_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.v_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.o_proj = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, q, kv):
        b, nq, e = q.shape
        nh, dh = self.num_heads, self.head_dim
        qh = self.q_proj(q).reshape(b, nq, nh, dh)
        kh = self.k_proj(kv).reshape(b, kv.shape[1], nh, dh)
        vh = self.v_proj(kv).reshape(b, kv.shape[1], nh, dh)
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", qh, kh) / jnp.sqrt(jnp.float32(dh)), axis=-1)
        return self.o_proj(jnp.einsum("bhqk,bkhd->bqhd", w, vh).reshape(b, nq, e))


@pytest.mark.parametrize("variant", ["test", "full"])     # :cpu's decoder has no attention layers
def test_fused_decoder_qkv_is_the_unfused_decoder_from_the_same_seed(variant, monkeypatch):
    """Train-state format 3 fused the decoder's q/k/v projections into one parameter, initialised from the same
    draws in the same order: a whole UPS model built from a seed has the same decoder (every other module too) and
    gives the same decoder output as the model the unfused layout built from that seed."""
    import ups_jax.models.decoder as decoder_module
    from ups_jax.models.ups import param_arrays

    cfg = cfg_for(variant)
    fused = build_model(cfg, grid_size(cfg), seed=cfg.seed)
    monkeypatch.setattr(decoder_module, "CrossAttention", _UnfusedCrossAttention)
    unfused = build_model(cfg, grid_size(cfg), seed=cfg.seed)
    a0 = unfused.decoder.layers[0].attn
    a1 = fused.decoder.layers[0].attn
    d = a1.dim
    np.testing.assert_array_equal(a1.qkv.kernel[...], jnp.concatenate(
        [a0.q_proj.kernel[...], a0.k_proj.kernel[...], a0.v_proj.kernel[...]], 1))
    np.testing.assert_array_equal(a1.o_proj.kernel[...], a0.o_proj.kernel[...])
    assert a1.qkv.kernel[...].shape == (d, 3 * d)
    # every parameter outside the decoder's attention is bitwise the same (the draws after it did not shift)
    p0, p1 = param_arrays(unfused), param_arrays(fused)
    others = [k for k in p1 if "/attn/" not in k or not k.startswith("decoder/")]
    assert others and all(np.array_equal(p0[k], p1[k]) for k in others)
    # and the same function: trained-looking (non-zero) biases included
    for attn0, attn1 in zip((l.attn for l in unfused.decoder.layers), (l.attn for l in fused.decoder.layers)):
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            bias = 0.1 * jax.random.normal(jax.random.key(i), (d,))
            getattr(attn0, name).bias[...] = bias
            attn1.qkv.bias[...] = attn1.qkv.bias[...].at[i * d:(i + 1) * d].set(bias)
    z = jax.random.normal(jax.random.key(7), (3, int(cfg.model.latent_tokens), int(cfg.model.latent_dim)))
    xq = jax.random.uniform(jax.random.key(8), (3, 50))
    np.testing.assert_allclose(fused.decoder(z, xq), unfused.decoder(z, xq), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# checkpoint-shape helpers
# ------------------------------------------------------------------------------------------------------------

def test_param_shapes_and_config_key_messages():
    cfg = cfg_for("test")
    n = grid_size(cfg)
    shapes = param_shapes(abstract_model(cfg, n))
    d, h = cfg.model.latent_dim, cfg.model.operator.hidden_dim
    assert shapes["operator/input_proj/kernel"] == (d, h)
    assert shapes["encoder/convs/0/kernel"] == (cfg.model.encoder.kernel_size, 1 + 2 * 4, cfg.model.encoder.width)
    assert config_key_for("operator/input_proj/kernel") == "model.latent_dim / model.operator.hidden_dim"
    assert "model.encoder.width" in config_key_for("encoder/convs/1/kernel")
    assert config_key_for("decoder/layers/0/mlp/fc1/kernel") == "model.decoder.hidden_dim / model.decoder.mlp_hidden"
    # the refiners' outer projections follow the latent width (a latent_dim change shows up there first)
    assert config_key_for("corrector/net/input_proj/kernel") == "model.latent_dim / model.corrector.hidden_dim"
    assert config_key_for("student/net/output_proj/kernel") == "model.corrector.hidden_dim / model.latent_dim"
    assert config_key_for("steady/net/pos_embed") == "model.latent_tokens / model.steady.hidden_dim"
    assert config_key_for("corrector/net/pdet/mid_layers/0/attn/qkv/kernel") == "model.corrector"
    assert shape_mismatches(shapes, shapes) == []

    wider = param_shapes(abstract_model(cfg_for("test", "model.operator.hidden_dim=32"), n))
    lines = shape_mismatches(wider, shapes)
    line = next(x for x in lines if x.startswith("operator/input_proj/kernel:"))
    assert f"checkpoint ({d}, {h}) vs config ({d}, 32)" in line and "model.operator.hidden_dim" in line
    assert not any(x.startswith(("encoder/", "decoder/")) for x in lines)

    deeper = param_shapes(abstract_model(cfg_for("test", "model.operator.depths=(1,2,1)"), n))
    lines = shape_mismatches(deeper, shapes)
    assert lines and all("only in config" in x and "model.operator.depths" in x for x in lines)


def test_checkpoint_shape_check_names_the_depth_key_when_layers_differ():
    """The production check (before any restore) reports a layer present on one side only by its repeat key."""
    from ups_jax.errors import CheckpointError
    from ups_jax.training.checkpoints import check_param_shapes

    cfg = cfg_for("test")
    n = grid_size(cfg)
    shapes = param_shapes(abstract_model(cfg, n))
    check_param_shapes(shapes, shapes, where="w")            # identical: no error
    deeper = param_shapes(abstract_model(cfg_for("test", "model.operator.depths=(1,2,1)"), n))
    with pytest.raises(CheckpointError, match=r"w: architecture differs, operator/.*only in config — set by "
                                              r"model\.operator\.depths .*use another --workdir or --fresh"):
        check_param_shapes(shapes, deeper, where="w")


def test_field_cnn_is_zero_at_init_and_shift_equivariant_on_the_periodic_grid():
    """The physical-space corrector's network: an untrained one adds nothing; trained weights commute with
    periodic shifts (circular padding), in 1-D and 2-D."""
    from ups_jax.models.field_cnn import FieldCNN

    rng = np.random.default_rng(0)
    for dims, grid in ((1, (16,)), (2, (8, 8))):
        net = FieldCNN(num_inputs=2, width=8, kernel=3, depth=3, dims=dims, rngs=nnx.Rngs(0))
        x = jnp.asarray(rng.standard_normal((2, *grid, 2)), jnp.float32)
        nu = jnp.asarray([0.01, 0.001])
        assert net(x, nu).shape == (2, *grid)
        np.testing.assert_array_equal(np.asarray(net(x, nu)), 0.0)
        net.out.kernel.value = jnp.asarray(rng.standard_normal(net.out.kernel.value.shape), jnp.float32)
        y = net(x, nu)
        shifted = net(jnp.roll(x, 3, axis=1), nu)
        np.testing.assert_allclose(np.asarray(shifted), np.asarray(jnp.roll(y, 3, axis=1)), atol=1e-5)
        with pytest.raises(ValueError, match="expects"):
            net(x[..., 0], nu)


@pytest.mark.parametrize("dims,grid,k", [(1, (16,), 5), (2, (8, 6), 3)])
def test_circular_conv_equals_nnx_conv_with_circular_padding(dims, grid, k):
    """FieldCNN's shifted-copies matmul (fast gradient inside lax.scan on the CPU) is nnx.Conv(padding='CIRCULAR')."""
    from ups_jax.models.field_cnn import circular_conv

    rng = np.random.default_rng(1)
    conv = nnx.Conv(3, 4, kernel_size=(k,) * dims, padding="CIRCULAR", rngs=nnx.Rngs(0))
    conv.bias.value = jnp.asarray(rng.standard_normal(4), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, *grid, 3)), jnp.float32)
    np.testing.assert_allclose(np.asarray(circular_conv(conv, x)), np.asarray(conv(x)), atol=1e-5)
