"""The hybrid baseline (models/hybrid.py, configs/hybrid_burgers.py): the coarse built-in solver with a learned
correction. Untrained it *is* the coarse solver (checked against ``burgers.solve``, which nobody changed for it);
trained by the stage loop it changes; bad configs are refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ups_jax.config import load_config
from ups_jax.data import burgers
from ups_jax.driver.validate import errors, run_checks
from ups_jax.errors import ConfigError
from ups_jax.models import build_model

ROOT = Path(__file__).resolve().parents[1]
HYBRID = f"{ROOT / 'configs' / 'hybrid_burgers.py'}:test"
NO_DATA = f"data.default_dir={ROOT / 'tests' / 'no-such-data-dir'}"


def test_untrained_hybrid_is_the_coarse_solver():
    """Zero correction: the rollout equals burgers.solve on the restricted frame, interpolated to the points."""
    n_points, cells, dt, nu, steps = 64, 16, 0.05, 0.01, 5
    cfg = load_config(HYBRID, [NO_DATA, f"model.hybrid.cells={cells}", "model.hybrid.max_substeps=32"])
    model = build_model(cfg, num_points=n_points, rngs=nnx.Rngs(0))
    x = burgers.cell_centres(n_points)                                   # (−1, 1), as the :test data
    u0 = np.stack([np.sin(np.pi * x) + 0.5, 0.8 * np.cos(2 * np.pi * x)]).astype(np.float32)
    x01 = (x - (-1.0)) / 2.0
    got = model.rollout_fields(jnp.asarray(u0[:, None]), jnp.full((2,), dt), jnp.full((2,), nu),
                               jnp.asarray(x01, jnp.float32), steps)
    coarse = burgers.restrict(u0, cells)
    frames = burgers.solve(coarse, dx=2.0 / cells, nu=nu, t_save=np.arange(steps + 1) * dt, cfl=0.25,
                           advective_scale=2.0)
    want = burgers.interpolate_periodic(np.asarray(frames)[:, 1:], -1.0, 1.0, x)
    assert got.shape == (2, steps, n_points)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
    assert np.max(np.abs(want[:, -1] - u0)) > 0.05                     # the solver moved the field


@pytest.mark.parametrize("overrides,name,text", [
    (["model.normalize=True"], "hybrid raw fields", "needs physical values"),
    (["model.hybrid.cells=10"], "hybrid cells vs grid", "does not divide the data's 16 points"),
    (["model.context_frames=2"], "hybrid context", "starts from one frame"),
])
def test_hybrid_config_refusals(overrides, name, text, burgers_file):
    cfg = load_config(HYBRID, [f"data.paths=('{burgers_file}',)", *overrides])
    bad = [c for c in errors(run_checks(cfg)) if c.name == name]
    assert bad and text in bad[0].message and "\n" not in bad[0].message, [str(c) for c in errors(run_checks(cfg))]
    from ups_jax.training.pipeline import preflight

    with pytest.raises(ConfigError, match=name):
        preflight(cfg)


def test_hybrid_refuses_2d_data():
    from ups_jax.checks.report import Checks
    from ups_jax.checks.model import check_hybrid

    c = Checks()
    check_hybrid(load_config(HYBRID, [NO_DATA]), c, (16, 16))
    assert [x.name for x in c.items if not x.ok] == ["hybrid dims"]


def test_hybrid_trains_through_the_solver_and_is_evaluated(tmp_path, burgers_file):
    """The :test stage trains the correction with gradients through the unrolled solver (its weights leave zero),
    and the evaluation scores the trained hybrid on the test split beside persistence."""
    from ups_jax.training.pipeline import train_and_evaluate
    from ups_jax.training.restore import load_run

    wd = tmp_path / "hybrid"
    train_and_evaluate(load_config(HYBRID), wd, data_paths=[burgers_file])
    _, _, model, stage, _ = load_run(wd)
    assert stage == "hybrid"
    assert float(jnp.max(jnp.abs(model.correction.out.kernel[...]))) > 0      # trained away from zero
    ev = json.loads((wd / "eval" / "test.json").read_text())
    assert np.isfinite(ev["model"]["nrmse"]) and ev["persistence"]["nrmse"] > 0
    recs = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if r.get("kind") == "train" and "loss" in r]
    assert losses and all(np.isfinite(losses))
