"""ups_jax.eval.evaluate: headline numbers are per-trajectory and do not depend on eval.batch_size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ups_jax.eval.evaluate import FRMSE_LX, evaluate

T, X = 6, 32   # 17 rfft modes: every fRMSE band is non-empty


class ScaledPersistence:
    """A stand-in for ``Rollout``: predicts ``factor * u0`` at every step, u0 = the last given frame (physical units
    in and out; like ``Rollout`` it receives every given frame, (B, frames, X))."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, given, nu, dt, steps, *, first_index=0):
        u0 = np.asarray(given, np.float64)[:, -1]
        return np.repeat(self.factor * u0[:, None], steps, axis=1)


def _trajectories(n=5):
    """n trajectories: trajectory i is (1 + i) * sin(2 pi x) decaying as 0.9^t (hand-checkable nRMSE)."""
    x = (np.arange(X) + 0.5) / X
    decay = 0.9 ** np.arange(T)
    return np.stack([(1.0 + i) * decay[:, None] * np.sin(2 * np.pi * x)[None] for i in range(n)])


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_headline_metrics_do_not_depend_on_eval_batch_size(batch_size):
    """5 trajectories in batches of 5 (one batch) vs 1+1+1+1+1, 2+2+1, 3+2, 4+1: same headline numbers."""
    traj = _trajectories()
    nu = np.full(len(traj), 0.01)
    kw = dict(dt=0.05, domain_length=2.0, initial_step=2, corr_threshold=0.8, keep_samples=0)
    ref, _ = evaluate(ScaledPersistence(1.1), traj, nu, batch_size=len(traj), **kw)
    res, _ = evaluate(ScaledPersistence(1.1), traj, nu, batch_size=batch_size, **kw)
    for part in ("model", "persistence"):
        for key, value in ref[part].items():
            if key in ("pdebench_batched", "n_batches"):
                continue
            assert res[part][key] == pytest.approx(value, rel=1e-12, abs=1e-15), (part, key)
        assert res[part]["n_batches"] == math.ceil(len(traj) / batch_size)
        assert sum(res[part]["pdebench_batched"]["batch_sizes"]) == len(traj)
    # by hand: from frame 1 the model predicts 1.1 * 0.9 * s, the truth is 0.9^t * s (t = 2..5), for every
    # trajectory (the amplitude (1 + i) cancels): nRMSE_t = |1.1 * 0.9 / 0.9^t - 1|
    hand = [abs(1.1 * 0.9 / 0.9 ** t - 1.0) for t in range(2, T)]
    assert res["model"]["nrmse_per_step"] == pytest.approx(hand)
    assert res["model"]["nrmse"] == pytest.approx(np.mean(hand))
    # the batch statistic max_error is the max over all trajectories: the largest amplitude (5) in every batching
    s_max = np.max(np.abs(np.sin(2 * np.pi * (np.arange(X) + 0.5) / X)))
    hand_max = [5 * abs(1.1 * 0.9 - 0.9 ** t) * s_max for t in range(2, T)]
    assert res["model"]["max_error"] == pytest.approx(np.mean(hand_max))


def test_batched_values_are_labelled_and_differ_for_batch_statistics():
    traj = _trajectories()
    nu = np.full(len(traj), 0.01)
    res, _ = evaluate(ScaledPersistence(1.1), traj, nu, dt=0.05, domain_length=2.0, initial_step=2, batch_size=3)
    m = res["model"]
    assert m["pdebench_batched"]["batch_sizes"] == [3, 2]
    assert m["pdebench_batched"]["nrmse"] == pytest.approx(m["nrmse"])          # per-sample metric: equal
    assert m["pdebench_batched"]["max_error"] < m["max_error"]                   # batch max <= set max
    c = res["conventions"]
    assert c["frmse_Lx"] == FRMSE_LX == 1.0 and c["domain_length"] == 2.0
    assert "every trajectory weighs the same" in c["headline"] and "3 trajectories" in c["pdebench_batched"]


def test_refined_rows_do_not_depend_on_the_batch_size(trained_run):
    """Issue 18, defect 6: a +corrector/+student prediction keys its noise by the trajectory's index, so it is the
    same whatever eval.batch_size puts the trajectory into (and each outer batch of score() draws new noise)."""
    from ups_jax.eval.evaluate import score
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    wd, cfg, _ = trained_run
    _, data, model, _, _ = load_run(wd)
    traj, nu = data.trajectories("test")
    assert len(traj) >= 2
    start, steps = cfg.eval.initial_step - 1, 5
    for refine in ("corrector", "student"):
        preds = {}
        for bs in (1, 2):
            r = Rollout(model, norm=data.norm, x01=data.x01, batch_size=bs, refine=refine, seed=cfg.seed)
            _, _, preds[bs] = score(r, traj[:, :start + steps + 1], nu, float(data.dataset.dt), start, batch_size=bs,
                                    keep=len(traj))
        np.testing.assert_allclose(preds[1], preds[2], rtol=1e-5, atol=1e-6, err_msg=refine)


def test_the_baseline_workdir_is_relative_to_the_run_not_the_cwd(tmp_path, monkeypatch):
    """Issue 18, defect 4: ``baseline.workdir`` is read against the run's WORKDIR, whichever directory the command
    starts in."""
    import ml_collections as mlc

    from ups_jax.training.pipeline import baseline_workdir

    run = tmp_path / "runs" / "a"
    cfg = mlc.ConfigDict({"baseline": {"config": "configs/fno_burgers.py", "workdir": ""}})
    for cwd in (tmp_path, tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        cfg.baseline.workdir = ""
        assert baseline_workdir(cfg, run) == run / "baselines" / "fno"
        cfg.baseline.workdir = "shared/fno"
        assert baseline_workdir(cfg, run) == run / "shared" / "fno"
        assert baseline_workdir(cfg, "runs/a") == cwd / "runs" / "a" / "shared" / "fno"   # a relative WORKDIR
        cfg.baseline.workdir = str(tmp_path / "fno")
        assert baseline_workdir(cfg, run) == tmp_path / "fno"


def test_the_comparison_names_an_unfinished_baseline_by_its_config(trained_run, tmp_path):
    """The table's note names the configured baseline (the FNO or the hybrid), not always "FNO"; without one it
    says how to configure either."""
    from ups_jax.training.comparison import run_comparison
    from ups_jax.training.restore import load_run

    wd, cfg, _ = trained_run
    _, data, model, _, _ = load_run(wd)
    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.eval.ttc_preset = "default"
        cfg.eval.max_trajectories = 2
        cfg.baseline.config = "configs/hybrid_burgers.py:test"
    assert "student" in cfg.stage_order and cfg.ttc.refine == "student"
    table = run_comparison(model, cfg, data, tmp_path / "a", done={"codec", "operator"})
    assert [r["row"] for r in table["rows"]] == ["operator", "persistence"]
    assert "baseline configs/hybrid_burgers.py:test: not evaluated (its run is not finished)" in table["notes"]
    assert "+TTC(default): not evaluated (its refiner stage 'student' is not finished)" in table["notes"]
    with cfg.unlocked():
        cfg.baseline.config = ""
        cfg.stage_order = ("codec", "operator")          # a run without refine stages
    notes = run_comparison(model, cfg, data, tmp_path / "b", done={"codec", "operator"})["notes"]
    assert any(n.startswith("baseline: not configured (set --config.baseline.config=configs/fno_burgers.py:cpu")
               for n in notes)
    assert any(n.startswith("+TTC(default): not evaluated (its refiner stage 'student' is not in stage_order; add "
                            "it with --config.stage_order=...,student") for n in notes)
