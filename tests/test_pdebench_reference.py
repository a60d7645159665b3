"""The built-in solver against PDEBench's own generator (the ``pdebench`` 0.1.0 wheel; ``make install`` installs it
without its dependencies), from identical initial states: ``generate burgers1d --initial-from FILE``.

PDEBench's generator runs once per module in a subprocess (tests/pdebench_reference.py): 4 trajectories, 128 cells
on (-1, 1), nu = 0.01, 21 frames (t = 0 .. 0.2).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_jax.data import generate
from ups_jax.errors import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
NX, SAMPLES, FRAMES = 128, 4, 21


@pytest.fixture(scope="module")
def pdebench_file(tmp_path_factory):
    assert importlib.util.find_spec("pdebench") is not None, \
        "pdebench is not installed (test-only dependency): run make install"
    out = tmp_path_factory.mktemp("pdebench")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "pdebench_reference.py"), str(out), "--nu", "0.01",
                           "--nx", str(NX), "--samples", str(SAMPLES), "--frames", str(FRAMES)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = out / "1D_Burgers_Sols_Nu0.01.hdf5"
    with h5py.File(path) as f:
        assert f["tensor"].shape == (SAMPLES, FRAMES, NX)
        np.testing.assert_allclose(f["x-coordinate"][[0, -1]], [-1 + 1 / NX, 1 - 1 / NX], rtol=1e-6)
    return path


def test_flux_u_squared_reproduces_pdebench_generator_from_its_initial_states(pdebench_file):
    res = generate.resolve_initial_states(pdebench_file, progress=False)          # advective_scale=2 (default)
    assert res["rel_l2"].shape == (SAMPLES, FRAMES) and res["nu"] == pytest.approx(0.01)
    assert np.all(res["rel_l2"][:, 0] == 0.0)                                    # the same initial states
    assert res["rel_l2"].max() < 1e-5                                            # float32 round-off
    # the current-code convention u_t + (u^2/2)_x solves another equation: off by % after one frame
    half = generate.resolve_initial_states(pdebench_file, advective_scale=1.0, progress=False)
    assert half["rel_l2"][:, 1].max() > 0.05 and half["rel_l2"][:, -1].max() > 0.5


def test_initial_from_cli_writes_and_checks(pdebench_file, tmp_path, capsys):
    args = ["burgers1d", "--initial-from", str(pdebench_file), "--no-progress"]
    assert run_cli(generate.main, args + ["--check", "--frames", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "re-solved 4 trajectories x 3 frames at nx=128, Nu=0.01, advective_scale=2" in line

    assert run_cli(generate.main, args + ["--out", str(tmp_path), "--nx", "64", "--nu", "0.1", "--samples", "2"]) == 0
    with h5py.File(tmp_path / "1D_Burgers_Sols_Nu0.1.hdf5") as f, h5py.File(pdebench_file) as ref:
        assert f["tensor"].shape == (2, FRAMES, 64) and f.attrs["Nu"] == pytest.approx(0.1)
        assert f.attrs["advective_scale"] == 2.0 and f.attrs["pde"] == "u_t + (u^2)_x = (Nu/pi) u_xx"
        assert "frame 0 of 1D_Burgers_Sols_Nu0.01.hdf5" in f.attrs["initial_conditions"]
        # initial states restricted by cell averages; the grid keeps the file's domain
        np.testing.assert_allclose(f["tensor"][:, 0], ref["tensor"][:2, 0].reshape(2, 64, 2).mean(-1), rtol=1e-6)
        np.testing.assert_allclose(f["x-coordinate"][[0, -1]], [-1 + 1 / 64, 1 - 1 / 64], rtol=1e-6)
        np.testing.assert_allclose(f["t-coordinate"][:3], [0.0, 0.01, 0.02], atol=1e-7)


@pytest.mark.parametrize("extra, needle", [
    (["--check", "--out", "x"], "exactly one of --check"),
    (["--check", "--nx", "100"], "--nx 100: must divide the 128 cells"),
    (["--check", "--samples", "9"], "--samples 9: "),
])
def test_initial_from_bad_arguments_are_one_line_errors(pdebench_file, capsys, extra, needle):
    assert run_cli(generate.main, ["burgers1d", "--initial-from", str(pdebench_file), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err


def test_initial_from_refuses_to_write_over_its_source(pdebench_file, tmp_path):
    src = tmp_path / pdebench_file.name
    src.write_bytes(pdebench_file.read_bytes())
    with pytest.raises(UserError, match="is the --initial-from file itself"):
        generate.resolve_initial_states(src, tmp_path, overwrite=True, progress=False)
    assert src.read_bytes() == pdebench_file.read_bytes()
