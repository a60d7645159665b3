"""The tools on a 2-D run (issue 20): ``python -m ups_jax.infer`` (the training grid, a finer grid and scattered
points, against the evaluation's own rollout; the output is valid input again; bad input is one line) and the
equal-error benchmark ``benchmarks/rollout_vs_solver.py`` in 2-D (item 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import rollout_vs_solver  # noqa: E402
import rollout_vs_solver_2d  # noqa: E402
from test_ns2d_models import _cfg, _one_error_line, ns2d_run, ns2d_test_file  # noqa: F401 (module fixtures)


def _infer(*args) -> int:
    from ups_jax.infer import main

    return run_cli(main, [str(a) for a in args])


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k]) for k in f}


@pytest.fixture(scope="module")
def grid_run(ns2d_run, ns2d_test_file, tmp_path_factory):
    """(workdir, the stored trajectories, the evaluation rollout's prediction of 4 steps from frame 0, out dir)."""
    from ups_jax.data.ns2d_reader import open_dataset
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    workdir, _ = ns2d_run
    ds = open_dataset([ns2d_test_file])
    traj = ds.read(np.arange(ds.num_trajectories))
    cfg, data, model, _, _ = load_run(workdir, [ns2d_test_file])
    want = Rollout(model, norm=data.norm, x01=data.x01, batch_size=8)(traj[:, :1], ds.nu, ds.dt, 4)
    return workdir, traj, want, tmp_path_factory.mktemp("ns2d_infer")


def test_infer_on_the_training_grid_is_the_evaluation_rollout_and_reads_back(grid_run, ns2d_test_file):
    workdir, traj, want, tmp = grid_run
    out = tmp / "grid.h5"
    assert _infer("--workdir", workdir, "--input", ns2d_test_file, "--steps", 4, "--out", out) == 0
    f = _read(out)
    assert f["tensor"].shape == (24, 5, 16, 16) and f["y-coordinate"].shape == (16,)
    np.testing.assert_array_equal(f["tensor"][:, 0], traj[:, 0])                 # frame 0: the given state
    np.testing.assert_allclose(f["tensor"][:, 1:], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f["t-coordinate"], np.arange(5.0))
    # valid input again: continue from its frame 2 = the rollout's 3rd frame... on the same grid
    out2 = tmp / "more.h5"
    assert _infer("--workdir", workdir, "--input", out, "--frame", 2, "--steps", 2, "--out", out2) == 0
    assert _read(out2)["tensor"].shape == (24, 3, 16, 16)
    np.save(tmp / "w0.npy", traj[:, 0])                                           # (N, X, Y) .npy, ν given
    out3 = tmp / "npy.h5"
    assert _infer("--workdir", workdir, "--input", tmp / "w0.npy", "--nu", 1e-3, "--steps", 4, "--out", out3) == 0
    np.testing.assert_allclose(_read(out3)["tensor"], f["tensor"], rtol=1e-5, atol=1e-5)


def test_infer_on_a_finer_grid_and_at_scattered_points(grid_run, ns2d_test_file):
    workdir, traj, want, tmp = grid_run
    fine = tmp / "fine.h5"
    assert _infer("--workdir", workdir, "--input", ns2d_test_file, "--steps", 4, "--nx-out", 32, "--out", fine) == 0
    f = _read(fine)
    assert f["tensor"].shape == (24, 5, 32, 32)
    np.testing.assert_allclose(f["x-coordinate"], np.arange(32) / 32, atol=1e-7)
    # every other point of the 32² grid is a training grid point i/16: decoded where the grid rollout predicts
    np.testing.assert_allclose(f["tensor"][:, 1:, ::2, ::2], want, rtol=1e-4, atol=1e-4)
    pts = tmp / "pts.npy"
    np.save(pts, np.array([[0.25, 0.5], [0.0625, 0.9375]]))                      # grid points (4, 8) and (1, 15)
    out = tmp / "pts.h5"
    assert _infer("--workdir", workdir, "--input", ns2d_test_file, "--steps", 4, "--x-query", pts, "--out", out) == 0
    f = _read(out)
    assert f["tensor"].shape == (24, 5, 2) and f["query-points"].shape == (2, 2)
    np.testing.assert_allclose(f["tensor"][:, 1:, 0], want[:, :, 4, 8], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f["tensor"][:, 1:, 1], want[:, :, 1, 15], rtol=1e-4, atol=1e-4)


def test_infer_2d_bad_input_is_one_line(grid_run, burgers_file, capsys):
    workdir, traj, _, tmp = grid_run
    out = tmp / "never.h5"
    assert _infer("--workdir", workdir, "--input", burgers_file, "--steps", 2, "--out", out) == 2
    line = _one_error_line(capsys)
    assert str(burgers_file) in line and "1-D data" in line and not out.exists()
    np.save(tmp / "small.npy", traj[:, 0, ::2, ::2])
    assert _infer("--workdir", workdir, "--input", tmp / "small.npy", "--steps", 2, "--out", out) == 2
    line = _one_error_line(capsys)
    assert "8x8 grid" in line and "16x16" in line and not out.exists()
    assert _infer("--workdir", workdir, "--input", ns2d_test_file, "--steps", 2, "--x-query", "0.1,0.2,0.3",
                  "--out", out) == 2
    assert "(Q, 2)" in _one_error_line(capsys) and not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# benchmarks/rollout_vs_solver.py in 2-D
# ---------------------------------------------------------------------------------------------------------------

def test_fourier_resampling_is_exact_for_band_limited_fields():
    x = np.arange(16) / 16
    w = np.cos(2 * np.pi * (3 * x[:, None] - 2 * x[None, :])) + 0.5 * np.sin(2 * np.pi * 5 * x)[None, :]
    fine = rollout_vs_solver_2d.resample(w, 32)
    np.testing.assert_allclose(fine[::2, ::2], w, atol=1e-12)                  # interpolation keeps the points
    x32 = np.arange(32) / 32
    np.testing.assert_allclose(fine[1, 3], np.cos(2 * np.pi * (3 * x32[1] - 2 * x32[3])) + 0.5 * np.sin(
        2 * np.pi * 5 * x32[3]), atol=1e-12)                                     # and is the field between them
    np.testing.assert_allclose(rollout_vs_solver_2d.resample(fine, 16), w, atol=1e-12)   # restriction back
    coarse = rollout_vs_solver_2d.resample(w, 8)                                 # |k| < 4 kept: the k=(3,-2) mode
    np.testing.assert_allclose(coarse, np.cos(2 * np.pi * (3 * x[::2, None] - 2 * x[None, ::2])), atol=1e-12)


def test_rollout_vs_solver_2d_rows_and_equal_error(ns2d_run, tmp_path, capsys):
    """:test data (solved at 32², stored at 16²): the reference re-solves at 32² from the redrawn initial fields,
    the solver runs at 8², 16² and 32², the :test model is a row, all scored against the reference."""
    workdir, results = ns2d_run
    argv = ["--workdir", str(workdir), "--resolutions", "8", "16", "32", "--reference", "32:0.02", "--repeats", "1",
            "--out", str(tmp_path / "r")]
    assert run_cli(rollout_vs_solver.main, argv) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["redraw_error"] < 1e-5                    # the generator's initial fields, redrawn from the seed
    assert rep["stored_vs_reference_nrmse"] < 1e-3       # the data (dt 0.08) against the dt 0.02 re-solve
    assert rep["steps"] == 5 and rep["protocol_grid"] == 16 and rep["n_trajectories"] == 6
    rows = {r["method"]: r for r in rep["rows"]}
    solver = [rows[f"solver, {n}²"] for n in (8, 16, 32)]
    assert solver[0]["nrmse"] > solver[1]["nrmse"] > solver[2]["nrmse"]
    for s in solver:                                     # the largest stable step of the ladder was taken
        stable = [dt for dt, ok in s["dt_ladder"] if ok]
        assert s["dt"] == max(stable) and all(ok for dt, ok in s["dt_ladder"] if dt <= s["dt"])
    model = rows[f"model {workdir}"]
    assert model["nrmse_vs_stored"] == pytest.approx(results["eval"]["model"]["nrmse"], rel=1e-5)
    assert model["nrmse"] == pytest.approx(model["nrmse_vs_stored"], rel=0.05)
    ok = [s for s in solver if s["nrmse"] <= model["nrmse"]]
    assert (model["equal_error"] or {}).get("cells") == (min(ok, key=lambda s: s["cells"])["cells"] if ok else None)
    assert "| method | solver step | nRMSE vs reference |" in out
    assert run_cli(rollout_vs_solver.main, ["--workdir", str(workdir), "--resolutions", "12"]) == 2
    assert "--resolutions [12]" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# benchmarks/accuracy.py with a config and its FNO-2D baseline
# ---------------------------------------------------------------------------------------------------------------

def test_accuracy_trains_the_baseline_once_and_the_table_uses_it(ns2d_test_file, tmp_path, capsys):
    import accuracy

    root = tmp_path / "acc"
    ups, fno = (f"{ROOT / 'configs' / name}:test" for name in ("ns2d.py", "fno_ns2d.py"))
    argv = ["--config", ups, "--config", fno, "--seeds", "1", "--workdir-root", str(root),
            "--override", f"data.paths=('{ns2d_test_file}',)"]
    assert run_cli(accuracy.main, argv) == 0
    out = capsys.readouterr().out
    ups_dir, fno_dir = root / "ns2d_test" / "seed0", root / "fno_ns2d_test" / "seed0"
    assert out.index(f"--workdir {fno_dir}") < out.index(f"--workdir {ups_dir}")      # the baseline first
    assert not (ups_dir / "baselines").exists()                                       # not trained a second time
    assert json.loads((ups_dir / "config.json").read_text())["baseline"]["workdir"] == "../../fno_ns2d_test/seed0"
    fno_eval = json.loads((fno_dir / "eval" / "test.json").read_text())["model"]["nrmse"]
    rows = {r["row"]: r for r in json.loads((ups_dir / "eval" / "table.json").read_text())["rows"]}
    assert rows["FNO"]["protocol"]["nrmse"] == pytest.approx(fno_eval, rel=1e-6)
    report = json.loads((root / "accuracy.json").read_text())
    assert [c["config"] for c in report["configs"]] == [ups, fno]                     # reported as given
    steps = report["configs"][0]["protocol"]["steps"]                                 # the 2-D protocol's own
    table = (root / "accuracy.md").read_text()
    assert f"nRMSE ({steps}-step protocol)" in table and "31-step" not in table
