"""benchmarks/accuracy.py (seeds, reuse, reproducibility, bad input), benchmarks/rollout_vs_solver.py and the
refiner benchmarks (stage_table.py, probes/refiner_diagnostics.py, probes/field_corrector_probe.py), on the
tiny ``:test`` config and the session's ``burgers_file`` (12 trajectories x 201 frames x 64 cells)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "probes"))      # the one-off probes

import accuracy  # noqa: E402
import field_corrector_probe  # noqa: E402
import refiner_diagnostics  # noqa: E402
import rollout_vs_solver  # noqa: E402
import stage_table  # noqa: E402

from ups_jax.errors import UserError, run_cli  # noqa: E402

TEST_SPEC = f"{ROOT / 'configs' / 'burgers32.py'}:test"


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_accuracy_two_seeds_reproducible_and_reused(trained_run, burgers_file, tmp_path, capsys):
    """Trains :test for seeds 0 and 1 with the real command; seed 0 gives the same eval JSON as the session's
    in-process run of the same config (same seed, same machine: identical bytes); a second call reuses both."""
    ref_dir, _, _ = trained_run
    root = tmp_path / "acc"
    argv = ["--config", TEST_SPEC, "--seeds", "2", "--workdir-root", str(root),
            "--override", f"data.paths=('{burgers_file}',)"]
    assert run_cli(accuracy.main, argv) == 0
    out = capsys.readouterr().out
    seed0, seed1 = root / "burgers32_test" / "seed0", root / "burgers32_test" / "seed1"
    assert (seed0 / "eval" / "test.json").read_text() == (ref_dir / "eval" / "test.json").read_text()
    report = json.loads((root / "accuracy.json").read_text())
    (c,) = report["configs"]
    assert [r["reused"] for r in c["per_seed"]] == [False, False]
    evals = [json.loads((d / "eval" / "test.json").read_text()) for d in (seed0, seed1)]
    assert evals[0]["model"]["nrmse"] != evals[1]["model"]["nrmse"]               # the seed matters
    s = c["summary"]
    m = [e["model"]["nrmse"] for e in evals]
    assert s["model"]["protocol/nrmse"]["mean"] == pytest.approx(np.mean(m))
    assert s["model"]["protocol/nrmse"]["std"] == pytest.approx(np.std(m, ddof=1))
    assert s["model"]["full_horizon/nrmse"]["mean"] == pytest.approx(
        np.mean([e["full_horizon"]["model"]["nrmse"] for e in evals]))
    assert s["persistence"]["protocol/nrmse"]["std"] == 0.0                        # same test trajectories
    assert s["train_wall_s"]["mean"] > 0 and c["train_wall_exact"]
    # error vs training time: every validation of both seeds, averaged per (stage, step)
    vals = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (seed0, seed1)]
    vals = [[r for r in recs if r.get("kind") == "val" and r["stage"] == "operator"] for recs in vals]
    curve = [p for p in s["val_curve"] if p["stage"] == "operator"]
    assert [p["step"] for p in curve] == [r["step"] for r in vals[0]] and len(curve) >= 2
    assert curve[-1]["value"]["mean"] == pytest.approx(np.mean([v[-1]["val/nrmse"] for v in vals]))
    assert 0 < curve[0]["elapsed_s"]["mean"] < curve[-1]["elapsed_s"]["mean"] <= s["train_wall_s"]["mean"]
    md = (root / "accuracy.md").read_text()
    assert md.strip() in out and f"| `{TEST_SPEC}` | 2 |" in md and "| persistence (test set of" in md

    assert run_cli(accuracy.main, argv + ["--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing the finished run") == 2 and "ups_jax.train" not in out
    again = json.loads((tmp_path / "again.json").read_text())["configs"][0]
    assert [r["reused"] for r in again["per_seed"]] == [True, True]
    assert again["summary"]["model"] == s["model"]


def test_accuracy_bad_input_is_one_line(trained_run, burgers_file, tmp_path, capsys):
    assert run_cli(accuracy.main, ["--config", str(tmp_path / "nope.py"), "--seeds", "1"]) == 2
    _one_line_error(capsys, "nope.py", "config file not found")
    assert run_cli(accuracy.main, ["--config", TEST_SPEC, "--seeds", "1", "--override", "model.latnt_dim=4"]) == 2
    _one_line_error(capsys, "unknown config key 'model.latnt_dim'")
    # a workdir written by another config (here: another latent width) is refused, untouched
    root = tmp_path / "acc"
    seed0 = root / "burgers32_test" / "seed0"
    shutil.copytree(trained_run[0], seed0)
    before = (seed0 / "config.json").read_text()
    argv = ["--config", TEST_SPEC, "--seeds", "1", "--workdir-root", str(root),
            "--override", f"data.paths=('{burgers_file}',)", "--override", "model.latent_dim=16"]
    assert run_cli(accuracy.main, argv) == 2
    _one_line_error(capsys, str(seed0), "written by another config", "model.latent_dim")
    assert (seed0 / "config.json").read_text() == before and not (root / "accuracy.json").exists()


def test_accuracy_labels_name_the_scored_rollout():
    """A UPS run scored with its refiner (eval.refine → the eval JSON's 'predictor') says so in the table; the
    operator alone, a baseline's own kind and a report from before the key do not add a label."""
    assert accuracy.label({"config": "c.py:cpu", "predictor": "operator+corrector"}) == "`c.py:cpu` (operator+corrector)"
    assert accuracy.label({"config": "c.py:cpu", "predictor": "operator+corrector", "budget": 2}) == (
        "`c.py:cpu` (operator+corrector) ×2 updates")
    for c in ({"config": "c.py"}, {"config": "c.py", "predictor": "operator"}, {"config": "c.py", "predictor": "fno"}):
        assert accuracy.label(c) == "`c.py`"


def test_accuracy_ignores_settings_of_stages_neither_run_trains(tmp_path):
    from ups_jax.errors import UserError

    have = {"seed": 0, "stage_order": ["operator"],
            "stages": {"operator": {"steps": 10}, "corrector": {"steps": 5}}}
    (tmp_path / "config.json").write_text(json.dumps(have))
    # a key added to a stage the run never trained (a refine stage of :cpu): the same run
    want = {**have, "stages": {"operator": {"steps": 10}, "corrector": {"steps": 5, "decoded_weight": 1.0}}}
    accuracy.check_workdir(tmp_path, want, "spec")
    # ... nor to that refine stage's own model section (model.corrector.kind, added later)
    accuracy.check_workdir(tmp_path, {**want, "model": {"corrector": {"kind": "latent"}}}, "spec")
    with pytest.raises(UserError, match="written by another config .*model.latent_dim"):
        accuracy.check_workdir(tmp_path, {**want, "model": {"latent_dim": 16}}, "spec")
    # a model key added later (model.scale_norm) at its "as before" value: the same run; at another value: not
    accuracy.check_workdir(tmp_path, {**want, "model": {"scale_norm": False}}, "spec")
    with pytest.raises(UserError, match="written by another config .*model.scale_norm"):
        accuracy.check_workdir(tmp_path, {**want, "model": {"scale_norm": True}}, "spec")
    # a TTC preset added later, which neither run's table uses (eval.ttc_preset): the same run; the used one: not
    old = tmp_path / "with_ttc"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({**have, "eval": {"ttc_preset": "default"},
                                                 "ttc": {"presets": {"default": {"budget": 100}}}}))
    ttc = {**have, "eval": {"ttc_preset": "default"},
           "ttc": {"presets": {"default": {"budget": 100}, "light": {"budget": 15}}}}
    accuracy.check_workdir(old, ttc, "spec")
    with pytest.raises(UserError, match="written by another config .*ttc.presets.default.budget"):
        accuracy.check_workdir(old, {**ttc, "ttc": {"presets": {"default": {"budget": 50}}}}, "spec")
    # ... but not once that stage is trained, nor a change to a trained stage
    for other in ({**want, "stage_order": ["operator", "corrector"]},
                  {**have, "stages": {"operator": {"steps": 11}, "corrector": {"steps": 5}}}):
        with pytest.raises(UserError, match="written by another config .*stages"):
            accuracy.check_workdir(tmp_path, other, "spec")


def test_stage_table_over_runs_and_its_refusals(trained_run, tmp_path, capsys):
    wd = trained_run[0]
    table = json.loads((wd / "eval" / "table.json").read_text())
    other = tmp_path / "seed1"                      # a second "seed": the same table with +corrector 10 % worse
    (other / "eval").mkdir(parents=True)
    t2 = json.loads(json.dumps(table))
    names = [r["row"] for r in table["rows"]]
    corr, op = names.index("+corrector"), names.index("operator")
    t2["rows"][corr]["protocol"]["nrmse"] = 1.1 * table["rows"][op]["protocol"]["nrmse"]
    (other / "eval" / "table.json").write_text(json.dumps(t2))
    assert run_cli(stage_table.main, [str(wd), str(other), "--out", str(tmp_path / "st")]) == 0
    s = json.loads((tmp_path / "st.json").read_text())
    rows = {r["row"]: r for r in s["rows"]}
    assert [r["row"] for r in s["rows"]] == names and s["n_trajectories"] == table["n_trajectories"]
    assert rows["operator"]["cells"]["protocol/nrmse"] == {"mean": pytest.approx(table["rows"][op]["protocol"]["nrmse"]),
                                                          "std": pytest.approx(0.0, abs=1e-12), "n": 2}
    first = table["rows"][corr]["protocol"]["nrmse"] / table["rows"][op]["protocol"]["nrmse"] - 1
    change = rows["+corrector"]["change_vs_operator"]["protocol"]
    assert change["mean"] == pytest.approx((first + 0.1) / 2) and change["n"] == 2
    assert rows["FNO"]["change_vs_operator"] == {} and rows["persistence"]["change_vs_operator"] == {}
    assert "| +corrector |" in capsys.readouterr().out
    # runs on other trajectories, or with other rows, are refused in one line
    t2["n_trajectories"] += 1
    (other / "eval" / "table.json").write_text(json.dumps(t2))
    assert run_cli(stage_table.main, [str(wd), str(other)]) == 2
    _one_line_error(capsys, str(other), "another n_trajectories")
    assert run_cli(stage_table.main, [str(wd), str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "table.json: not found")


def test_refiner_diagnostics_operator_rows_equal_the_evaluation(trained_run, monkeypatch):
    """Known answers: the operator rows are the evaluation's; the codec row is the encoder-decoder round trip of
    every true next frame, recomputed here; with a corrector that corrects nothing, the +corrector rows equal the
    operator's and it explains exactly none of the residual."""
    import jax
    import jax.numpy as jnp

    from ups_jax.eval.rollout import make_rollout_fn
    from ups_jax.models.corrector import ResidualCorrector
    from ups_jax.training.restore import load_run

    wd = trained_run[0]
    r = refiner_diagnostics.diagnose(wd, "test")
    ev = json.loads((wd / "eval" / "test.json").read_text())
    np.testing.assert_allclose(r["rollout_nrmse"]["operator"]["per_step"], ev["model"]["nrmse_per_step"], rtol=1e-4)
    assert set(r["rollout_nrmse"]) == {"operator", "+corrector", "corrector level 0 only"}

    _, data, model, _, _ = load_run(wd)
    traj, _ = data.trajectories("test", 0)
    u = ((traj - data.norm["mean"]) / data.norm["std"]).astype(np.float32)
    nxt = u[:, 1:].reshape(-1, u.shape[-1])
    x01 = jnp.asarray(data.x01)
    rec = np.asarray(model.decode(model.encode_frames(jnp.asarray(nxt[:, None]), x01), x01)[..., 0])
    want = np.sqrt(np.sum((rec - nxt) ** 2) / np.sum(nxt ** 2))
    assert r["one_step_rel_error"]["decoded encoder of the truth"] == pytest.approx(want, rel=1e-4)

    def no_correction(self, z_prev, z_pred, dt, nu, rng):
        return z_pred

    monkeypatch.setattr(ResidualCorrector, "__call__", no_correction)
    make_rollout_fn.cache_clear()          # compiled rollouts traced the real corrector
    jax.clear_caches()
    try:
        z = refiner_diagnostics.diagnose(wd, "test")
    finally:
        monkeypatch.undo()
        make_rollout_fn.cache_clear()
        jax.clear_caches()
    np.testing.assert_allclose(z["rollout_nrmse"]["+corrector"]["per_step"], z["rollout_nrmse"]["operator"]["per_step"],
                               rtol=1e-5)         # the refined rollout runs per trajectory (vmapped): float order
    assert z["one_step_rel_error"]["+corrector"] == z["one_step_rel_error"]["operator"]
    assert z["latent_rms"]["correction"] == 0.0
    assert z["latent_rms"]["remaining"] == z["latent_rms"]["residual"] > 0
    assert z["residual_explained"] == 0.0
    assert z["one_step_rel_error"]["operator"] == pytest.approx(r["one_step_rel_error"]["operator"], rel=1e-6)


def test_field_corrector_probe_rows(trained_run):
    """Known answers: the operator row is the evaluation's; the CNN starts at zero, so with a learning rate of 0
    it stays zero and explains exactly none of the one-step residual; its parameter count by hand."""
    wd = trained_run[0]
    r = field_corrector_probe.probe(wd, steps=2, split="test", lr=0.0)
    ev = json.loads((wd / "eval" / "test.json").read_text())
    rows = r["rollout_nrmse_per_step"]
    n = len(ev["model"]["nrmse_per_step"])
    np.testing.assert_allclose(rows["operator"][:n], ev["model"]["nrmse_per_step"], rtol=1e-4)
    assert len(rows) == 3 and all(len(v) == len(rows["operator"]) for v in rows.values())
    assert r["explained"] == 0.0
    assert r["one_step_nrmse_normalised"]["+ CNN"] == r["one_step_nrmse_normalised"]["operator"] > 0
    w, k = 64, 5            # make_cnn's defaults: 3 → w, 3 × (w → w), w → 1, kernel k, with biases
    assert r["params"] == (k * 3 * w + w) + 3 * (k * w * w + w) + (k * w + 1)


def test_refiner_benchmarks_bad_input_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert run_cli(field_corrector_probe.main, ["--workdir", missing, "--steps", "0"]) == 2
    _one_line_error(capsys, "--steps=0 must be >= 1")
    assert run_cli(field_corrector_probe.main, ["--workdir", missing]) == 2
    _one_line_error(capsys, missing, "workdir not found")
    assert run_cli(refiner_diagnostics.main, [missing, "--split", "train2"]) == 2
    _one_line_error(capsys, "refiner_diagnostics.py", "--split")
    assert run_cli(refiner_diagnostics.main, [missing]) == 2
    _one_line_error(capsys, missing, "workdir not found")
    assert run_cli(stage_table.main, []) == 2
    _one_line_error(capsys, "stage_table.py", "workdirs")


def test_interpolation_and_restriction_helpers():
    from ups_jax.data import burgers

    fine = np.arange(8.0)[None]                                   # cells of width 1/4 on [0, 2)
    np.testing.assert_allclose(burgers.restrict(fine, 2), [[1.5, 5.5]])
    with pytest.raises(ValueError, match="must divide"):
        burgers.restrict(fine, 3)
    # linear in x between centres, periodic across the boundary; exact at the centres themselves
    coarse = np.array([0.0, 1.0, 2.0, 3.0])                       # centres 0.25, 0.75, 1.25, 1.75
    got = burgers.interpolate_periodic(coarse, 0.0, 2.0, np.array([0.25, 0.5, 1.75, 1.9, 0.1]))
    np.testing.assert_allclose(got, [0.0, 0.5, 3.0, 3.0 * 0.7, 3.0 * 0.3])


def test_rollout_vs_solver_rows_and_equal_error(trained_run, burgers_file, tmp_path, capsys):
    """Solver at 16, 32 and the data's 64 cells (the :test protocol scores 16 of 64 cells) and the :test model."""
    wd, cfg, results = trained_run
    argv = ["--workdir", str(wd), "--resolutions", "16", "32", "64", "--repeats", "1", "--out", str(tmp_path / "r")]
    assert run_cli(rollout_vs_solver.main, argv) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "r.json").read_text())
    rows = {r["method"]: r for r in rep["rows"]}
    solver = [rows[f"solver, {n} cells"] for n in (16, 32, 64)]
    assert solver[2]["nrmse"] < 1e-4                                 # re-solving the data at its own resolution
    assert solver[0]["nrmse"] > solver[1]["nrmse"] > solver[2]["nrmse"]
    assert rep["n_trajectories"] == results["eval"]["n_trajectories"] and rep["steps"] == 31
    model = rows[f"model {wd}"]
    # the run's own evaluation rollout on the same trajectories: the number in its eval/test.json
    assert model["nrmse"] == pytest.approx(results["eval"]["model"]["nrmse"], rel=1e-5)
    eq = model["equal_error"]
    coarsest_ok = min((s for s in solver if s["nrmse"] <= model["nrmse"]), key=lambda s: s["cells"])
    assert eq["cells"] == coarsest_ok["cells"]
    assert "| method | nRMSE | wall s | trajectories/s | equal-error solver |" in out and f"model {wd}" in out
    model_line = next(line for line in out.splitlines() if line.startswith(f"| model {wd} |"))
    assert f"| {eq['cells']} cells" in model_line                   # the printed table has the equal-error solver
    assert (tmp_path / "r.md").read_text().strip() in out
    assert all(r["wall_s"] > 0 for r in rep["rows"])
    assert run_cli(rollout_vs_solver.main, ["--workdir", str(wd), "--resolutions", "24"]) == 2
    _one_line_error(capsys, "--resolutions [24]", "divide the data's 64 cells")


def test_accuracy_accepts_a_run_from_before_the_optimizer_keys_only_with_their_old_behaviour(tmp_path):
    from ups_jax.errors import UserError

    have = {"seed": 0, "stage_order": ["operator"], "stages": {"operator": {"steps": 10}}}
    (tmp_path / "config.json").write_text(json.dumps(have))
    old = {"steps": 10, "optimizer": "adamw", "schedule": "warmup_cosine", "lr_step_every": 0, "lr_gamma": 0.5}
    accuracy.check_workdir(tmp_path, {**have, "stages": {"operator": old}}, "spec")   # what the code did without them
    for changed in ({"optimizer": "adam_l2"}, {"schedule": "step", "lr_step_every": 5}):
        with pytest.raises(UserError, match="written by another config .*stages.operator"):
            accuracy.check_workdir(tmp_path, {**have, "stages": {"operator": {**old, **changed}}}, "spec")


def test_accuracy_budget_curves_scale_the_run_and_plot(burgers_file, tmp_path, capsys):
    """--budgets 1,2: the ×2 run trains twice the updates with the cadences and warm-up scaled (its config.json),
    the table has a row per budget and the coarse-solver rows, and the PNG is written."""
    root = tmp_path / "acc"
    argv = ["--config", TEST_SPEC, "--seeds", "1", "--workdir-root", str(root), "--budgets", "1,2",
            "--override", f"data.paths=('{burgers_file}',)", "--override", "stage_order=('operator',)",
            "--override", "baseline.config=", "--override", "eval.ttc_preset=",
            "--override", "stages.operator.trainable=('encoder','operator','decoder')"]
    assert run_cli(accuracy.main, argv) == 0
    out = capsys.readouterr().out
    one = json.loads((root / "burgers32_test" / "seed0" / "config.json").read_text())["stages"]["operator"]
    two = json.loads((root / "burgers32_test_x2" / "seed0" / "config.json").read_text())["stages"]["operator"]
    for key in ("steps", "eval_every", "log_every", "warmup_steps"):
        assert two[key] == 2 * one[key], key
    assert two["lr"] == one["lr"] and two["ema_decay"] == one["ema_decay"]
    report = json.loads((root / "accuracy.json").read_text())
    assert [(c["budget"], c["updates"]) for c in report["configs"]] == [(1, one["steps"]), (2, 2 * one["steps"])]
    assert [r["cells"] for r in report["solver"]] == [16, 32, 64]
    assert report["solver"][0]["nrmse"] > report["solver"][-1]["nrmse"] > 0     # finer grid, smaller error
    md = (root / "accuracy.md").read_text()
    assert f"| `{TEST_SPEC}` ×2 updates | 1 |" in md and f"| `{TEST_SPEC}` | ×2 | {2 * one['steps']} | 1 |" in md
    assert "| solver, 16 cells, from the given frame" in md and md.strip() in out
    png = root / "accuracy_budgets.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert run_cli(accuracy.main, argv[:-10] + ["--budgets", "2,1"]) == 2
    _one_line_error(capsys, "--budgets '2,1'", "start with 1")
    # the finished runs are reused; --quiet-wall-s puts budget × the 1× quiet wall beside the measured walls
    assert run_cli(accuracy.main, argv + ["--quiet-wall-s", "100"]) == 0
    report = json.loads((root / "accuracy.json").read_text())
    assert report["quiet_wall_s"] == {TEST_SPEC: 100.0}
    md = (root / "accuracy.md").read_text()
    assert "nominal wall (s, budget × the 1× quiet wall)" in md and md.count(" | 200 |") == 1
    capsys.readouterr()
    assert run_cli(accuracy.main, argv + ["--quiet-wall-s", "100,200"]) == 2      # two walls for one config
    _one_line_error(capsys, "--quiet-wall-s '100,200'", "one per --config (1)")


def test_accuracy_quiet_walls_one_or_one_per_config():
    assert accuracy.quiet_walls(None, ["a", "b"]) is None
    assert accuracy.quiet_walls("513", ["a", "b"]) == {"a": 513.0, "b": 513.0}
    assert accuracy.quiet_walls("513,522", ["a", "b"]) == {"a": 513.0, "b": 522.0}
    for bad in ("0", "1,2,3", "x", "", "nan"):
        with pytest.raises(UserError, match="--quiet-wall-s .*one per --config \\(2\\)"):
            accuracy.quiet_walls(bad, ["a", "b"])
    assert accuracy.quiet_wall({"quiet_wall_s": {"a": 1.0}}, "a") == 1.0
    assert accuracy.quiet_wall({}, "a") is None


def test_step_cost_times_each_case_interleaved(burgers_file, tmp_path, capsys):
    import step_cost

    data = f"data.paths=('{burgers_file}',)"
    argv = ["--rounds", "2", "--dispatches", "b=2", "--case", "a", TEST_SPEC, data,
            "--case", "b", TEST_SPEC, data, "stages.codec.batch_size=8", "--json", str(tmp_path / "c.json")]
    assert run_cli(step_cost.main, argv) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "c.json").read_text())
    assert set(res) == {"a", "b"} and res["b"]["overrides"] == [data, "stages.codec.batch_size=8"]
    for r in res.values():
        assert len(r["cpu_s_per_update"]) == len(r["wall_s_per_update"]) == 2 and min(r["cpu_s_per_update"]) > 0
    assert out.index("round 0 a:") < out.index("round 0 b:") < out.index("round 1 a:")    # interleaved
    assert "| a |" in out and "| b |" in out
    assert run_cli(step_cost.main, ["--case", "a"]) == 2
    _one_line_error(capsys, "--case needs a NAME and a config SPEC")
    assert run_cli(step_cost.main, ["--case", "a", TEST_SPEC, "--dispatches", "a=0"]) == 2
    _one_line_error(capsys, "--dispatches 'a=0'")
