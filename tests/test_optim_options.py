"""The optimizer/schedule options of a stage (training/optim.py), the EMA off switch, and the FNO options that make
``configs/fno_burgers.py`` PDEBench's recipe (torch-like init, the grid range, raw fields): known answers, and
the refusals of bad values. No torch: the references are torch's documented update rules, written out."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest
from flax import nnx

from ups_jax.config import load_config
from ups_jax.driver.validate import errors, run_checks
from ups_jax.errors import ConfigError
from ups_jax.models.fno import FNO1d
from ups_jax.training.optim import learning_rate_schedule, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
NO_DATA = f"data.default_dir={ROOT / 'tests' / 'no-such-data-dir'}"


def stage(**kw):
    s = mlc.ConfigDict(dict(steps=100, lr=0.01, warmup_steps=0, end_lr_factor=0.05, weight_decay=0.1, b1=0.9,
                            b2=0.999, grad_clip=0.0, optimizer="adamw", schedule="warmup_cosine", lr_step_every=0,
                            lr_gamma=0.5))
    s.update(kw)
    return s


def run_updates(tx, theta0: float, grads):
    params = jnp.array([theta0], jnp.float32)
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(jnp.array([g], jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        out.append(float(params[0]))
    return out


def torch_adam_l2(theta, grads, *, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam(weight_decay=wd).step, as its documentation writes it (L2 into the gradient)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + wd * theta
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(theta)
    return out


def test_adam_l2_is_torch_adam_weight_decay():
    grads = [0.5, -0.3, 0.2]
    got = run_updates(make_optimizer(stage(optimizer="adam_l2", schedule="step", lr_step_every=1000)), 2.0, grads)
    want = torch_adam_l2(2.0, grads, lr=0.01, wd=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # by hand: g1' = 0.5 + 0.1·2 = 0.7 → θ1 = 2 − 0.01; g2' = −0.3 + 0.1·1.99 = −0.101, m̂2 = 0.0529/0.19,
    # v̂2 = 0.000499711/0.001999 → θ2 = 1.99 − 0.01·0.278421/0.499981
    assert got[0] == pytest.approx(1.99, abs=1e-7)
    assert got[1] == pytest.approx(1.99 - 0.01 * 0.278421 / 0.499981, abs=2e-7)
    # adamw decays θ outside the moments: a different trajectory from the same gradients
    adamw = run_updates(make_optimizer(stage(optimizer="adamw", schedule="step", lr_step_every=1000)), 2.0, grads)
    assert abs(adamw[1] - got[1]) > 1e-4


def test_step_schedule_is_steplr():
    sched = learning_rate_schedule(stage(lr=1e-3, schedule="step", lr_step_every=8, lr_gamma=0.5))
    lrs = [float(sched(i)) for i in range(25)]
    np.testing.assert_allclose(lrs, [1e-3] * 8 + [5e-4] * 8 + [2.5e-4] * 8 + [1.25e-4], rtol=1e-6)
    # through adam with a constant gradient the update is -lr_t itself (m̂/√v̂ = 1): it halves at update 8
    tx = make_optimizer(stage(lr=1e-3, weight_decay=0.0, optimizer="adam_l2", schedule="step", lr_step_every=8))
    thetas = run_updates(tx, 0.0, [1.0] * 10)
    steps = -np.diff([0.0] + thetas)
    np.testing.assert_allclose(steps, [1e-3] * 8 + [5e-4] * 2, rtol=1e-4)


def test_default_options_build_the_old_optimizer():
    """A config without the new keys (an old checkpoint's) gets exactly the optimizer it was trained with."""
    old = stage(warmup_steps=10)
    del old.optimizer, old.schedule, old.lr_step_every, old.lr_gamma
    params = jnp.zeros((3,))
    new_state = make_optimizer(stage(warmup_steps=10)).init(params)
    old_state = make_optimizer(old).init(params)
    assert jax.tree.structure(new_state) == jax.tree.structure(old_state)
    sched = learning_rate_schedule(old)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(0.01)
    assert float(sched(100)) == pytest.approx(0.01 * 0.05)


def test_ema_decay_zero_means_the_ema_is_the_params():
    from ups_jax.training.step import init_state, make_update, ravel_state

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    pf, rf = ravel_state(params), ravel_state(rest)
    tx = make_optimizer(stage(lr=0.1, optimizer="adam_l2", schedule="step", lr_step_every=100))

    def loss_fn(m, batch, rng):
        return jnp.mean(jnp.square(m(batch["x"]) - 1.0)), {}

    update = jax.jit(make_update(graphdef, pf.unravel, rf.unravel, loss_fn, tx, 0.0))
    state = init_state(pf.vector, tx)
    batch = {"x": jnp.ones((4, 2))}
    for step in range(3):
        state, _ = update(state, rf.vector, batch, jax.random.key(0), jnp.int32(step))
    assert not np.allclose(state.params, pf.vector)
    np.testing.assert_array_equal(state.ema, state.params)


def test_fno_torch_init_bounds():
    m = FNO1d(context_frames=10, modes=4, width=20, head_width=128, init="torch", rngs=nnx.Rngs(0))
    layers = {"fc0": (m.fc0, 11), "fc1": (m.fc1, 20), "fc2": (m.fc2, 128), "pointwise0": (m.pointwise[0], 20)}
    for name, (layer, fan_in) in layers.items():
        bound = 1.0 / math.sqrt(fan_in)
        for kind in ("kernel", "bias"):
            w = np.asarray(getattr(layer, kind)[...])
            assert np.abs(w).max() <= bound, (name, kind)
            if w.size >= 100:       # uniform: std = bound/√3 and the bound is nearly reached
                assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.1), (name, kind)
                assert np.abs(w).max() > 0.95 * bound, (name, kind)
        assert np.any(np.asarray(layer.bias[...]) != 0), name
    flax_init = FNO1d(context_frames=10, modes=4, width=20, rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(flax_init.fc1.bias[...]))                    # flax: zero biases
    assert np.std(np.asarray(flax_init.fc1.kernel[...])) > 1.4 * np.std(np.asarray(m.fc1.kernel[...]))


def test_fno_grid_range_feeds_the_mapped_coordinate():
    x01 = (jnp.arange(16) + 0.5) / 16
    u = jax.random.normal(jax.random.key(1), (2, 3, 16))
    domain = FNO1d(context_frames=3, modes=4, width=8, head_width=8, grid_range=(-1.0, 1.0), rngs=nnx.Rngs(0))
    unit = FNO1d(context_frames=3, modes=4, width=8, head_width=8, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(domain(u, x01), unit(u, -1.0 + 2.0 * x01), rtol=1e-6, atol=1e-6)
    assert not np.allclose(domain(u, x01), unit(u, x01))


def test_fno_config_is_pdebench_recipe():
    cfg = load_config(f"{ROOT / 'configs' / 'fno_burgers.py'}:cpu")
    s = cfg.stages.fno
    assert (s.optimizer, s.schedule, s.ema_decay, s.warmup_steps, s.grad_clip, s.lr, s.weight_decay) == \
        ("adam_l2", "step", 0.0, 0, 0.0, 1e-3, 1e-4)
    assert (s.lr_step_every, s.lr_gamma) == (800, 0.5)           # 100 epochs of 8 updates
    assert cfg.model.normalize is False and cfg.model.fno.init == "torch"
    assert tuple(cfg.model.fno.grid_range) == (cfg.data.generate.x_min, cfg.data.generate.x_max)


FNO = f"{ROOT / 'configs' / 'fno_burgers.py'}:test"


@pytest.mark.parametrize("overrides,name,text", [
    (["stages.fno.optimizer=sgd"], "fno optimizer", "stages.fno.optimizer='sgd'"),
    (["stages.fno.schedule=linear"], "fno schedule", "stages.fno.schedule='linear'"),
    (["stages.fno.lr_step_every=0"], "fno step schedule", "lr_step_every=0"),
    (["stages.fno.lr_gamma=1.5"], "fno step schedule", "lr_gamma=1.5"),
    (["stages.fno.warmup_steps=2"], "fno step schedule warmup", "StepLR has no warm-up"),
    (["model.fno.init=jax"], "fno init", "model.fno.init='jax'"),
    (["model.fno.grid_range=(1.0,-1.0)"], "fno grid range", "grid_range=(1.0, -1.0)"),
])
def test_fno_config_refusals(overrides, name, text):
    cfg = load_config(FNO, [NO_DATA, *overrides])
    checks = run_checks(cfg)
    bad = [c for c in errors(checks) if c.name == name]
    assert bad and text in bad[0].message and "\n" not in bad[0].message, [str(c) for c in errors(checks)]
    assert not errors(run_checks(load_config(FNO, [NO_DATA])))
    from ups_jax.training.pipeline import preflight

    with pytest.raises(ConfigError, match=name):         # `train` refuses it before anything runs: one line, exit 2
        preflight(cfg)


def test_raw_fields_normalisation_is_the_identity(burgers_file):
    from ups_jax.training.run_data import RunData

    cfg = load_config(FNO)
    raw = RunData(cfg, [burgers_file])
    assert raw.norm == {"mean": 0.0, "std": 1.0}
    batch = {"u": np.ones((1, 2, 3), np.float32) * 0.7, "dt": np.float32(0.05), "nu": np.float32(0.01)}
    np.testing.assert_allclose(raw.prepare_batch(batch)["u"], 0.7)
    with cfg.unlocked():
        cfg.model.normalize = True
    assert RunData(cfg, [burgers_file]).norm["std"] != 1.0


def test_faithful_fno_resumes_exactly_across_a_steplr_decay(tmp_path, burgers_file):
    """:test halves the lr every 3 updates (``lr_step_every=3``): stopped at update 3 and resumed, the run ends with
    the same weights as an uninterrupted one (same test evaluation, same logged losses)."""
    import json

    from ups_jax.training.pipeline import train_and_evaluate

    def run(wd, stop=None):
        cfg = load_config(FNO)
        return train_and_evaluate(cfg, wd, data_paths=[burgers_file], max_steps=stop)

    straight = run(tmp_path / "straight")
    run(tmp_path / "resumed", stop=3)
    resumed = run(tmp_path / "resumed")
    assert resumed["eval"]["model"]["nrmse"] == straight["eval"]["model"]["nrmse"]

    def losses(wd):
        return [(r["step"], r["loss"], r["lr"]) for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"]

    assert losses(tmp_path / "resumed")[-1] == losses(tmp_path / "straight")[-1]
    # the logged lr is the schedule at the logged step (updates 2, 4, 6): halved at 3 and at 6
    assert [lr for _, _, lr in losses(tmp_path / "straight")] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_fno_faithful_benchmark_bad_input_is_one_line(tmp_path, burgers_file, capsys):
    """benchmarks/fno_faithful.py without torch: a missing data file, an interpreter that does not exist."""
    import importlib.util

    from ups_jax.errors import run_cli

    spec = importlib.util.spec_from_file_location("fno_faithful", ROOT / "benchmarks" / "fno_faithful.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert run_cli(bench.main, ["--data", str(tmp_path / "none.h5"), "--skip-jax"]) == 2
    assert run_cli(bench.main, ["--data", str(burgers_file), "--torch-python", str(tmp_path / "no-python"),
                                "--skip-jax", "--workdir-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "none.h5" in err[0] and "check --torch-python" in err[1], err
