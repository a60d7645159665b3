"""2-D Navier–Stokes through the model, training and evaluation layers (issue 20 items 2, 3, 5): the 2-D metrics
against hand-computed values, shape round trips of the one 1-D/2-D code path and FNO2d, ``configs/ns2d.py:test``
trained end to end (UPS beats persistence, FNO-2D in the same table), and the bad-input lines."""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ups_jax.config import load_config
from ups_jax.data.grids import grid_points, mesh01
from ups_jax.errors import run_cli
from ups_jax.eval.metrics import MetricAccumulator, pdebench_batch_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _cfg(name="ns2d.py", variant="test"):
    return load_config(f"{CONFIGS / name}:{variant}")


# ---------------------------------------------------------------------------------------------------------------
# 2-D metrics against hand-computed values (PDEBench metric_func's 2D branch)
# ---------------------------------------------------------------------------------------------------------------

def _mode(n, k, l, amp=1.0):
    x = np.arange(n) / n
    return amp * np.cos(2 * np.pi * (k * x[:, None] + l * x[None, :]))


@pytest.mark.parametrize("k, l, band", [(3, 0, "low"), (0, 2, "low"), (5, 2, "mid"), (4, 4, "mid")])
def test_frmse_of_one_fourier_mode_is_half_its_amplitude_over_the_band_width(k, l, band):
    # d = A cos 2π(kx + ly): |fftn d| = A n²/2 at (k, l) (and at (-k, -l), outside the quadrant PDEBench sums), so
    # shell ⌊√(k² + l²)⌋ holds sqrt(mean_b (A n²/2)²) / n² = A/2; the band is the mean over its shells:
    # low = shells 0..3 (4), mid = 4..7 on a 16² grid (min(16, 16)//2 = 8 shells), high is empty (nan).
    n, amp = 16, 0.7
    true = np.ones((2, 1, n, n))
    pred = true + _mode(n, k, l, amp)[None, None]
    m = pdebench_batch_metrics(pred, true, Lx=1.0, dims=2)
    assert m[f"frmse_{band}"] == pytest.approx(amp / 2 / 4, rel=1e-12)
    other = "mid" if band == "low" else "low"
    assert m[f"frmse_{other}"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(m["frmse_high"])


def test_frmse_2d_keeps_pdebench_quadrant_a_mode_with_negative_frequency_enters_no_band():
    n = 16
    true = np.ones((1, 1, n, n))
    m = pdebench_batch_metrics(true + _mode(n, 1, -1), true, Lx=1.0, dims=2)
    assert m["frmse_low"] == pytest.approx(0.0, abs=1e-12) and m["frmse_mid"] == pytest.approx(0.0, abs=1e-12)


def test_frmse_2d_high_band_and_scale():
    # 32² grid: 16 shells, high = shells 12..15 (4 of them); a mode at (12, 5) sits in shell 13; Lx = Ly = 2
    # multiplies by Lx·Ly = 4
    n, amp = 32, 0.5
    true = np.zeros((1, 1, n, n)) + 2.0
    m = pdebench_batch_metrics(true + _mode(n, 12, 5, amp), true, Lx=2.0, dims=2)
    assert m["frmse_high"] == pytest.approx(4 * amp / 2 / 4, rel=1e-12)


def test_2d_pointwise_metrics_by_hand():
    n, c = 8, 0.3
    true = np.full((3, 2, n, n), 2.0)
    pred = true + c                                  # a constant error c everywhere
    m = pdebench_batch_metrics(pred, true, Lx=1.0, dims=2)
    assert m["rmse"] == pytest.approx(c)
    assert m["nrmse"] == pytest.approx(c / 2.0)
    assert m["crmse"] == pytest.approx(c)            # sum over n² points / (nx·ny)
    assert m["brmse"] == pytest.approx(c)            # (2·ny + 2·nx)·c² / (2nx + 2ny)
    assert m["max_error"] == pytest.approx(c)
    # an error only inside the square leaves the boundary RMSE at 0; one edge cell (x = 0, y = 3) of size e gives
    # sqrt(e² / (2nx + 2ny))
    inner = true.copy()
    inner[:, :, 3, 4] += 1.0
    assert pdebench_batch_metrics(inner, true, Lx=1.0, dims=2)["brmse"] == pytest.approx(0.0)
    edge = true.copy()
    edge[:, :, 0, 3] += 1.0
    assert pdebench_batch_metrics(edge, true, Lx=1.0, dims=2)["brmse"] == pytest.approx(np.sqrt(1 / (4 * n)))


def test_2d_accumulator_is_the_batch_metric_on_one_batch_and_batch_size_invariant():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(6, 3, 16, 16)) + 1.0
    pred = true + 0.1 * rng.normal(size=true.shape)
    one = MetricAccumulator(dims=2)
    one.update(pred, true)
    whole = pdebench_batch_metrics(pred, true, Lx=1.0, dims=2)
    r1 = one.result()
    for k in ("nrmse", "rmse", "crmse", "brmse", "max_error", "frmse_low", "frmse_mid"):
        assert r1[k] == pytest.approx(whole[k], rel=1e-12), k
    split = MetricAccumulator(dims=2)
    split.update(pred[:4], true[:4])
    split.update(pred[4:], true[4:])
    r2 = split.result()
    for k in ("nrmse", "crmse", "frmse_low", "frmse_mid", "rel_l2"):
        assert r2[k] == pytest.approx(r1[k], rel=1e-12), k
    with pytest.raises(ValueError, match=r"\(B, T, X, Y\)"):
        MetricAccumulator(dims=2).update(pred[0], true[0])


# ---------------------------------------------------------------------------------------------------------------
# models: one code path, 2-D shapes
# ---------------------------------------------------------------------------------------------------------------

def test_ups_2d_round_trip_is_exact_at_grid_points_and_bilinear_between():
    from ups_jax.models import build_model

    cfg = _cfg()
    model = build_model(cfg, (16, 16), seed=0)
    assert model.encoder.token_grid == (4, 4) and model.encoder.patch_shape == (4, 4)
    x01 = jnp.asarray(mesh01((16, 16)))
    u = jax.random.normal(jax.random.key(1), (2, 1, 16, 16))
    z = model.encode_frames(u, x01)
    assert z.shape == (2, 16, cfg.model.latent_dim)          # T tokens x D, as in 1-D
    rec = model.decode(z, grid_points(x01))
    assert rec.shape == (2, 256, 1)
    # raw skip + zero-initialised heads: decode(encode(u)) = u at the grid points, at initialisation
    np.testing.assert_allclose(np.asarray(rec[..., 0]).reshape(2, 16, 16), np.asarray(u[:, 0]), atol=1e-6)
    # between cell centres (i + 0.5)/16 the raw path is bilinear, periodic across the edge
    q = jnp.asarray([[4 / 16, 5.5 / 16], [0.0, 0.5 / 16], [4 / 16, 6 / 16]])
    got = np.asarray(model.decode(z, q)[0, :, 0])
    v = np.asarray(u[0, 0])
    want = [(v[3, 5] + v[4, 5]) / 2, (v[15, 0] + v[0, 0]) / 2, (v[3, 5] + v[4, 5] + v[3, 6] + v[4, 6]) / 4]
    np.testing.assert_allclose(got, want, atol=1e-6)
    out = model.rollout_fields(u, jnp.ones(2), jnp.full(2, 1e-3), x01, 3)
    assert out.shape == (2, 3, 16, 16)
    again = model.rollout_fields(u, jnp.ones(2), jnp.full(2, 1e-3), x01, 3, mode="reencode")
    assert again.shape == (2, 3, 16, 16)


def test_latent_tokens_must_be_a_square_that_divides_the_2d_grid():
    from ups_jax.models import ModelConfigError, build_model

    cfg = _cfg()
    with cfg.unlocked():
        cfg.model.latent_tokens = 12
    with pytest.raises(ModelConfigError, match="perfect square"):
        build_model(cfg, (16, 16), seed=0)
    with cfg.unlocked():
        cfg.model.latent_tokens = 9
    with pytest.raises(ModelConfigError, match="3x3.*16x16"):
        build_model(cfg, (16, 16), seed=0)


def test_fno2d_shapes_and_the_papers_recipe():
    from ups_jax.models import FNO2d, build_model, count_params

    cfg = _cfg("fno_ns2d.py", "cpu")
    assert (cfg.model.fno.modes, cfg.model.fno.width, cfg.model.context_frames) == (12, 20, 10)
    model = build_model(cfg, (32, 32), seed=0)
    assert isinstance(model, FNO2d)
    # 4 layers x 2 complex (20, 20, 12, 12) tensors; fc0 (10 + 2 → 20); 1x1 convs; fc1 (20 → 128); fc2 (128 → 1)
    spectral = 4 * 2 * 20 * 20 * 12 * 12 * 2
    assert count_params(model)["spectral"] == spectral
    assert count_params(model)["fc0"] == 12 * 20 + 20
    x01 = jnp.asarray(mesh01((32, 32)))
    out = model.rollout_fields(jnp.zeros((2, 10, 32, 32)), 1.0, 1e-3, x01, 3)
    assert out.shape == (2, 3, 32, 32)


def test_fno2d_spectral_conv_keeps_the_positive_and_negative_x_modes():
    from ups_jax.models.fno2d import SpectralConv2d

    conv = SpectralConv2d(1, 1, 3, rngs=nnx.Rngs(0))
    one = jnp.zeros_like(conv.weight_pos[...]).at[..., 0].set(1.0)    # identity on the kept modes
    conv.weight_pos[...] = one
    conv.weight_neg[...] = one
    n = 16
    kept = _mode(n, 2, 1) + _mode(n, -2, 1) + _mode(n, 1, -2)
    dropped = _mode(n, 5, 0) + _mode(n, 0, 4)
    x = jnp.asarray((kept + dropped)[None, :, :, None], jnp.float32)
    np.testing.assert_allclose(np.asarray(conv(x))[0, :, :, 0], kept, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# :test end to end, and the bad-input lines
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ns2d_test_file(tmp_path_factory):
    from ups_jax.data.default_ns2d import wanted
    from ups_jax.data.ns2d_generate import generate_ns2d_file

    g = wanted(_cfg())
    del g["max_dt"]
    return generate_ns2d_file(tmp_path_factory.mktemp("ns2d_models"), **g, progress=False)


@pytest.fixture(scope="module")
def ns2d_run(tmp_path_factory, ns2d_test_file):
    from ups_jax.training.pipeline import train_and_evaluate

    workdir = tmp_path_factory.mktemp("ns2d_run") / "w"
    return workdir, train_and_evaluate(_cfg(), workdir, data_paths=[ns2d_test_file])


def test_ns2d_test_config_trains_end_to_end_and_beats_persistence(ns2d_run):
    workdir, results = ns2d_run
    ev = results["eval"]
    assert ev["protocol"]["grid"] == [16, 16] and ev["protocol"]["initial_step"] == 3
    assert ev["model"]["nrmse"] < 0.8 * ev["persistence"]["nrmse"], (ev["model"]["nrmse"], ev["persistence"]["nrmse"])
    rows = {r["row"]: r for r in results["table"]["rows"]}
    assert set(rows) == {"operator", "FNO", "persistence"}          # FNO-2D: same loop, same evaluation
    assert rows["FNO"]["protocol"]["nrmse"] > 0 and np.isfinite(rows["FNO"]["protocol"]["frmse_low"])
    assert (workdir / "eval" / "test_snapshots_0.png").stat().st_size > 0
    assert (workdir / "eval" / "test_nrmse_vs_step.png").is_file()
    with np.load(workdir / "eval" / "test_samples.npz") as s:
        assert s["pred"].shape[1:] == (5, 16, 16) and s["y"].shape == (16,)


def test_evaluate_reloads_the_2d_run(ns2d_run, ns2d_test_file):
    from ups_jax.training.restore import load_run

    workdir, _ = ns2d_run
    cfg, data, model, stage, _ = load_run(workdir, [ns2d_test_file])
    assert stage == "operator" and data.grid == (16, 16) and model.encoder.grid == (16, 16)


def _train(argv):
    return run_cli(importlib.import_module("ups_jax.train").main, argv)


def _one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_2d_file_given_to_a_1d_config_is_one_line(ns2d_test_file, tmp_path, capsys):
    work = tmp_path / "w"
    code = _train(["--config", str(CONFIGS / "burgers32.py") + ":test", "--workdir", str(work),
                   "--data", str(ns2d_test_file)])
    line = _one_error_line(capsys)
    assert code == 2 and not work.exists()
    assert str(ns2d_test_file) in line and "is 2-D data" in line and "data.dims=1" in line and "ns2d.py" in line


def test_a_1d_file_given_to_a_2d_config_is_one_line(burgers_file, tmp_path, capsys):
    work = tmp_path / "w"
    code = _train(["--config", str(CONFIGS / "ns2d.py") + ":test", "--workdir", str(work),
                   "--data", str(burgers_file)])
    line = _one_error_line(capsys)
    assert code == 2 and not work.exists()
    assert str(burgers_file) in line and "is 1-D data" in line and "data.dims=2" in line


def test_a_grid_the_patches_do_not_divide_is_one_line(ns2d_test_file, tmp_path, capsys):
    work = tmp_path / "w"
    code = _train(["--config", str(CONFIGS / "ns2d.py") + ":test", "--workdir", str(work),
                   "--data", str(ns2d_test_file), "--config.model.latent_tokens=9"])
    line = _one_error_line(capsys)
    assert code == 2 and not work.exists()
    assert str(ns2d_test_file) in line and "16x16" in line and "3x3" in line and "model.latent_tokens" in line


def test_nan_frames_are_one_line(ns2d_test_file, tmp_path, capsys):
    bad = tmp_path / "bad" / Path(ns2d_test_file).name
    bad.parent.mkdir()
    bad.write_bytes(Path(ns2d_test_file).read_bytes())
    with h5py.File(bad, "r+") as f:
        f["tensor"][2, 4, 3, 3] = np.nan
    work = tmp_path / "w"
    code = _train(["--config", str(CONFIGS / "ns2d.py") + ":test", "--workdir", str(work), "--data", str(bad)])
    line = _one_error_line(capsys)
    assert code == 2 and not work.exists()
    assert bad.name in line and "NaN" in line
