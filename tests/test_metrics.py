"""Behaviour tests for ups_jax.eval.metrics: every expected value is worked out by hand in the test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ups_jax.eval.metrics import (
    MetricAccumulator,
    gmean_nrmse,
    pdebench_batch_metrics,
    persistence_prediction,
)

S2 = math.sqrt(2.0)


def _hand_batch():
    """B=2, T=2, X=4. Differences d = p - y are single spikes or sign patterns, easy to work out by hand."""
    y = np.array(
        [
            [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0]],  # sample 0, t0 / t1
            [[2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 0.0, 0.0]],  # sample 1, t0 / t1
        ]
    )
    p = np.array(
        [
            [[2.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],  # d = [1,0,0,0]   | d = [-1,1,-1,1]
            [[2.0, 2.0, 2.0, 1.0], [3.0, 0.0, 0.0, 3.0]],  # d = [0,0,0,-1]  | d = [0,0,0,3]
        ]
    )
    return p, y


def test_pdebench_metrics_match_hand_values():
    p, y = _hand_batch()
    m = pdebench_batch_metrics(p, y, Lx=2.0)

    # err_mean = sqrt(mean_x d^2): t0 -> [sqrt(1/4), sqrt(1/4)] = [0.5, 0.5]; t1 -> [sqrt(4/4), sqrt(9/4)] = [1, 1.5]
    # nrm = sqrt(mean_x y^2): t0 -> [1, 2]; t1 -> [1, 1.5]
    np.testing.assert_allclose(m["rmse_t"], [(0.5 + 0.5) / 2, (1.0 + 1.5) / 2])
    # mean of ratios (0.375), not ratio of means (0.5 / 1.5)
    np.testing.assert_allclose(m["nrmse_t"], [(0.5 / 1 + 0.5 / 2) / 2, (1.0 / 1 + 1.5 / 1.5) / 2])
    # sum_x d: t0 -> [1, -1]; t1 -> [0, 3]; nx = 4
    np.testing.assert_allclose(m["crmse_t"], [math.sqrt((1 + 1) / 2) / 4, math.sqrt((0 + 9) / 2) / 4])
    # max |d| over samples and x: t0 -> 1, t1 -> 3
    np.testing.assert_allclose(m["max_error_t"], [1.0, 3.0])
    # boundary cells (first, last): t0 -> (1,0), (0,-1); t1 -> (-1,1), (0,3)
    np.testing.assert_allclose(
        m["brmse_t"],
        [(math.sqrt(1 / 2) + math.sqrt(1 / 2)) / 2, (math.sqrt(2 / 2) + math.sqrt(9 / 2)) / 2],
    )
    # rfft over X=4 (modes 0,1,2), |D_k| by hand:
    #  t0: d=[1,0,0,0] -> [1,1,1]; d=[0,0,0,-1] -> [1,1,1]
    #  t1: d=[-1,1,-1,1] -> [0,0,4]; d=[0,0,0,3] -> [3,3,3]
    # E[k] = sqrt(mean_b |D_k|^2) / nx * Lx, low band = mean over all 3 modes (mid/high are empty here).
    low_t0 = math.sqrt((1 + 1) / 2) / 4 * 2.0
    low_t1 = (math.sqrt(9 / 2) + math.sqrt(9 / 2) + math.sqrt(25 / 2)) / 3 / 4 * 2.0
    np.testing.assert_allclose(m["frmse_low_t"], [low_t0, low_t1])
    assert np.all(np.isnan(m["frmse_mid_t"])) and np.all(np.isnan(m["frmse_high_t"]))

    # scalars are time means; max_error is the mean over t of the per-step maxima (PDEBench), not the max.
    assert m["rmse"] == pytest.approx((0.5 + 1.25) / 2)
    assert m["nrmse"] == pytest.approx((0.375 + 1.0) / 2)
    assert m["max_error"] == pytest.approx(2.0)
    assert m["crmse"] == pytest.approx((1 / 4 + math.sqrt(4.5) / 4) / 2)
    assert m["frmse_low"] == pytest.approx((low_t0 + low_t1) / 2)
    for k in ("nrmse", "rmse", "crmse", "max_error", "brmse", "frmse_low"):
        assert isinstance(m[k], float)


def test_channel_axis_and_jax_input_give_same_values():
    import jax.numpy as jnp

    p, y = _hand_batch()
    a = pdebench_batch_metrics(p, y, Lx=2.0)
    b = pdebench_batch_metrics(jnp.asarray(p, dtype=jnp.float32)[..., None], jnp.asarray(y)[..., None], Lx=2.0)
    for k in ("nrmse", "rmse", "crmse", "max_error", "brmse", "frmse_low"):
        assert b[k] == pytest.approx(a[k], rel=1e-6)
    # two channels: metrics average over channels; channel 2 has zero error -> RMSE halves.
    p2 = np.stack([p, y], axis=-1)
    y2 = np.stack([y, y], axis=-1)
    c = pdebench_batch_metrics(p2, y2, Lx=2.0)
    assert c["rmse"] == pytest.approx(a["rmse"] / 2)
    assert c["max_error"] == pytest.approx(a["max_error"] / 2)


def test_shape_errors():
    with pytest.raises(ValueError):
        pdebench_batch_metrics(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), Lx=1.0)
    with pytest.raises(ValueError):
        pdebench_batch_metrics(np.zeros((3, 4)), np.zeros((3, 4)), Lx=1.0)


@pytest.mark.parametrize(
    "k, band, n_modes",
    [(1, "low", 4), (3, "low", 4), (4, "mid", 8), (11, "mid", 8), (12, "high", 21), (20, "high", 21)],
)
def test_frmse_pure_mode_error_lands_in_its_band(k, band, n_modes):
    nx, L, eps = 64, 3.0, 0.01  # rfft modes 0..32: low 4, mid 8, high 12..32 = 21 modes
    x = (np.arange(nx) + 0.5) * L / nx  # cell centres
    y = np.stack([np.sin(2 * np.pi * x / L), 1.0 + np.cos(4 * np.pi * x / L)])[:, None, :]  # (B=2, T=1, X)
    p = y + eps * np.cos(2 * np.pi * k * x / L)[None, None, :]
    m = pdebench_batch_metrics(p, y, Lx=L)
    # |rfft(eps cos(2 pi k j/N + phase))_k| = eps*N/2 for 0<k<N/2, zero elsewhere -> E_k = eps*N/2 / N * L.
    expected = eps * L / 2 / n_modes
    for b in ("low", "mid", "high"):
        want = expected if b == band else 0.0
        assert m[f"frmse_{b}"] == pytest.approx(want, abs=1e-12), b


def test_perfect_prediction_is_zero_and_persistence_on_drift_matches_hand_value():
    nx, L, c, dt, steps = 64, 1.0, 0.05, 1.0, 4
    x = np.arange(nx) * L / nx

    def field(t):
        return np.sin(2 * np.pi * (x - c * t) / L)

    true = np.stack([[field(dt * (s + 1)) for s in range(steps)]] * 2)  # (2, steps, X), t = dt .. steps*dt
    m0 = pdebench_batch_metrics(true, true, Lx=L)
    assert m0["nrmse"] == 0.0 and m0["rmse"] == 0.0 and m0["max_error"] == 0.0

    u0 = np.stack([field(0.0)] * 2)
    pers = persistence_prediction(u0, steps)
    assert pers.shape == (2, steps, nx)
    np.testing.assert_array_equal(pers[:, 2], u0)
    m = pdebench_batch_metrics(pers, true, Lx=L)
    # sin(a) - sin(a - delta) = 2 cos(a - delta/2) sin(delta/2); mean of its square = 2 sin^2(delta/2),
    # mean of sin^2 = 1/2 -> nRMSE = 2 |sin(delta/2)| with delta = 2 pi c t / L.
    hand = [2 * abs(math.sin(math.pi * c * dt * (s + 1) / L)) for s in range(steps)]
    np.testing.assert_allclose(m["nrmse_t"], hand, rtol=1e-10)


def test_accumulator_weighs_every_trajectory_the_same_and_labels_the_batched_values():
    acc = MetricAccumulator(Lx=1.0)
    ones = np.ones((2, 2, 8))  # 16 values per sample
    scale = np.array([1.5, 1.25])[:, None, None]
    acc.update(scale * ones, ones)  # batch 1: 2 samples with relative errors 0.5 and 0.25 -> batch nRMSE 0.375
    acc.update(2.0 * ones[:1], ones[:1])  # batch 2: 1 sample, nRMSE = 1.0
    r = acc.result()
    assert r["n_batches"] == 2 and r["n_trajectories"] == 3
    # per trajectory: (0.5 + 0.25 + 1.0) / 3, not the mean of the two batch means (0.375 + 1.0) / 2
    assert r["nrmse"] == pytest.approx(1.75 / 3)
    assert r["rmse"] == pytest.approx(1.75 / 3)
    assert r["nrmse_per_trajectory"] == pytest.approx([0.5, 0.25, 1.0])
    assert r["nrmse_per_step"] == pytest.approx([1.75 / 3, 1.75 / 3])
    # whole-set statistics: max over all trajectories; cRMSE = RMS over all of sum_x d (4, 2, 8) / nx
    assert r["max_error"] == pytest.approx(1.0)
    assert r["crmse"] == pytest.approx(math.sqrt((16 + 4 + 64) / 3) / 8)
    # PDEBench's batched values, batches weighted by size: per-sample metrics agree, batch statistics do not
    b = r["pdebench_batched"]
    assert b["batch_sizes"] == [2, 1]
    assert b["nrmse"] == pytest.approx(1.75 / 3)
    assert b["max_error"] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    assert b["crmse"] == pytest.approx((2 * math.sqrt((16 + 4) / 2) / 8 + 1 * math.sqrt(64) / 8) / 3)
    # rel_l2 is a mean over samples: (0.5 + 0.25 + 1.0) / 3
    assert r["rel_l2"] == pytest.approx(1.75 / 3)
    # global: ||e||^2 = 16*0.25 + 16*0.0625 + 16*1 = 21, ||y||^2 = 3*16 = 48
    assert r["rel_l2_global"] == pytest.approx(math.sqrt(21 / 48))
    json.dumps(r)
    for k, v in r.items():
        assert isinstance(v, (float, int, list, dict)), k


def test_frmse_uses_pdebench_lx_of_one_by_default():
    """PDEBench's training scripts pass Lx=1.0; a single spike d = [1, 0, 0, 0] has |D_k| = 1 for every mode."""
    y = np.ones((1, 1, 4))
    p = y + np.array([1.0, 0.0, 0.0, 0.0])
    default = MetricAccumulator()
    default.update(p, y)
    assert default.Lx == 1.0
    assert default.result()["frmse_low"] == pytest.approx(1.0 / 4)        # sqrt(1) / nx * 1.0
    domain = MetricAccumulator(Lx=2.0)
    domain.update(p, y)
    assert domain.result()["frmse_low"] == pytest.approx(2.0 / 4)


def test_frobenius_rel_l2_differs_from_per_step_nrmse():
    # one sample, two steps: step 0 has a large norm and 10% error, step 1 a small norm and 100% error.
    y = np.stack([10.0 * np.ones(8), np.ones(8)])[None]  # (1, 2, 8)
    p = y + 1.0
    acc = MetricAccumulator(Lx=1.0)
    acc.update(p, y)
    r = acc.result()
    assert r["nrmse"] == pytest.approx((0.1 + 1.0) / 2)
    # ||e||_F^2 = 8 + 8 = 16, ||y||_F^2 = 800 + 8 = 808
    assert r["rel_l2"] == pytest.approx(math.sqrt(16 / 808))
    assert r["rel_l2"] < 0.3 * r["nrmse"]


def test_correlation_per_step_and_time():
    nx = 32
    x = np.arange(nx) / nx
    cos, sin = np.cos(2 * np.pi * x), np.sin(2 * np.pi * x)
    a = np.array([0.0, 0.5, 0.7, 1.0, 2.0, 0.0])  # last step recovers but must not count
    # constant offsets: Pearson correlation is shift-invariant (an uncentred cosine similarity is not)
    y = np.stack([2.0 + cos] * a.size)[None]  # (1, T, X)
    p = np.stack([-1.0 + cos + ai * sin for ai in a])[None]
    acc = MetricAccumulator(Lx=1.0, corr_threshold=0.8)
    acc.update(p, y)
    r = acc.result()
    # cos and sin are orthogonal and zero-mean on the grid: corr = 1 / sqrt(1 + a^2)
    hand = [1.0, 1 / math.sqrt(1.25), 1 / math.sqrt(1.49), 1 / math.sqrt(2.0), 1 / math.sqrt(5.0), 1.0]
    assert r["corr_per_step"] == pytest.approx(hand)
    assert r["corr_time"] == 3  # 1, 0.894, 0.819 >= 0.8; 0.707 stops it
    acc2 = MetricAccumulator(Lx=1.0, corr_threshold=0.7)
    acc2.update(p, y)
    assert acc2.result()["corr_time"] == 4
    # mean over samples: add a sample that is perfectly correlated everywhere -> mean corr per step
    acc3 = MetricAccumulator(Lx=1.0, corr_threshold=0.8)
    acc3.update(np.concatenate([p, y]), np.concatenate([y, y]))
    assert acc3.result()["corr_per_step"] == pytest.approx([(h + 1.0) / 2 for h in hand])
    assert acc3.result()["corr_time"] == 4  # (1+0.707)/2 = 0.854 passes, (1+0.447)/2 = 0.724 stops it


def test_accumulator_rejects_mismatched_batches_and_empty_result():
    acc = MetricAccumulator(Lx=1.0)
    with pytest.raises(ValueError):
        acc.result()
    acc.update(np.ones((1, 2, 8)), np.ones((1, 2, 8)))
    with pytest.raises(ValueError):
        acc.update(np.ones((1, 3, 8)), np.ones((1, 3, 8)))


def test_gmean_nrmse():
    assert gmean_nrmse([1e-2, 1e-4]) == pytest.approx(1e-3)
    assert gmean_nrmse([2.0, 8.0, 1e9], max_steps=2) == pytest.approx(4.0)
    assert gmean_nrmse([0.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        gmean_nrmse([])


def test_per_sample_nrmse_known_answers():
    """RMS(pred − true) / RMS(true) per sample over the grid: the one definition validators and tables use."""
    from ups_jax.eval.metrics import MetricAccumulator, per_sample_nrmse

    true = np.array([[3.0, 4.0, 3.0, 4.0], [1.0, -1.0, 1.0, -1.0]])          # RMS 3.5355…, 1
    pred = np.array([[3.0, 4.0, 3.0, 4.0], [2.0, -2.0, 2.0, -2.0]])          # exact; error RMS 1
    np.testing.assert_allclose(per_sample_nrmse(pred, true), [0.0, 1.0])
    np.testing.assert_allclose(per_sample_nrmse(2 * true, true), [1.0, 1.0])
    np.testing.assert_allclose(per_sample_nrmse(pred.T, true.T, axis=0), [0.0, 1.0])
    # the evaluation's headline nRMSE of one step is its mean over trajectories
    acc = MetricAccumulator(1.0)
    acc.update(pred[:, None, :], true[:, None, :])
    assert acc.result()["nrmse"] == pytest.approx(per_sample_nrmse(pred, true).mean())


def test_a_small_nrmse_and_a_zero_correlation_time_agree_on_fields_with_a_large_mean():
    """Issue 18: docs/results/accuracy_*.json has corr_time 0 for the FNO (nRMSE 0.19) and for persistence. Not a
    defect: nRMSE divides by ||y|| including the field's spatial mean, the Pearson correlation only sees the
    fluctuation about it, and the Burgers data's mean dominates (|mean| ≈ 0.41 vs spatial std ≈ 0.14 on the
    test data). Known answer: y = m + cos, p = m + cos(x − φ): nRMSE = sqrt(1 − cos φ) / sqrt(m² + ½), corr =
    cos φ."""
    nx, m, phi = 64, 3.0, math.acos(0.7)
    x = 2 * np.pi * np.arange(nx) / nx
    y = np.stack([m + np.cos(x)] * 3)[None]
    p = np.stack([m + np.cos(x - phi)] * 3)[None]
    acc = MetricAccumulator(Lx=1.0, corr_threshold=0.8)
    acc.update(p, y)
    r = acc.result()
    assert r["corr_per_step"] == pytest.approx([0.7] * 3)
    assert r["nrmse"] == pytest.approx(math.sqrt(1 - 0.7) / math.sqrt(m * m + 0.5))       # 0.18
    assert r["nrmse"] < 0.19 and r["corr_time"] == 0
