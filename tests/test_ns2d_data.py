"""2-D Navier–Stokes data: the solver against exact solutions and an independent solver (exponax), the generated
layout, the FNO ``.mat`` layout, validate-data on 2-D files, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ups_jax.data import generate, ns2d
from ups_jax.data.ns2d_reader import Field2DDataset, open_dataset
from ups_jax.data.pdebench import PDEBenchDataset, compute_normalization, make_splits
from ups_jax.data.validation import validate_files
from ups_jax.driver import validate_data
from ups_jax.errors import DataError, run_cli


def _enable_x64():
    ctx = getattr(jax, "enable_x64", None)          # jax >= 0.8; older: jax.experimental.enable_x64
    if ctx is None:
        from jax.experimental import enable_x64 as ctx
    return ctx(True)


def _rel(a, b):
    """Relative L2 per frame of (T, X, Y) arrays, max over frames."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return max(np.linalg.norm(a[t] - b[t]) / np.linalg.norm(b[t]) for t in range(b.shape[0]))


# --------------------------------------------------------------------------------------------------------------
# the solver: exact solutions
# --------------------------------------------------------------------------------------------------------------
def test_taylor_green_vortex_decays_exactly():
    """w = 2k cos(kx) cos(ky) (u . grad w = 0) decays as exp(-2 nu k^2 t); target: relative error <= 1e-5."""
    s, nu, k = 32, 1e-2, 2 * np.pi * 2
    x = ns2d.points(s, np.float64)
    w0 = 2 * k * np.cos(k * x)[:, None] * np.cos(k * x)[None, :]
    exact = np.stack([w0 * np.exp(-2 * nu * k * k * t) for t in range(6)])       # decays to 4 % by t = 5
    with _enable_x64():
        out = np.asarray(ns2d.solve(jnp.asarray(w0[None], jnp.float64), nu=nu, frames=6, max_dt=0.05))
    assert out.dtype == np.float64
    assert _rel(out[0], exact) <= 1e-5
    # the velocity of the vortex: u = psi_y, v = -psi_x with psi = w / (2 k^2)
    u, v = (np.asarray(c[0]) for c in ns2d.velocity(jnp.asarray(w0[None], jnp.float32)))
    np.testing.assert_allclose(u, -np.cos(k * x)[:, None] * np.sin(k * x)[None, :], atol=2e-5)
    np.testing.assert_allclose(v, np.sin(k * x)[:, None] * np.cos(k * x)[None, :], atol=2e-5)


def test_fno_forcing_spin_up_is_exact():
    """f depends on x + y only, so u . grad w = 0 for w = c f: from w0 = 0, w(t) = (1 - exp(-lam t)) f / lam with
    lam = 8 pi^2 nu (checks the forcing term and its time integration)."""
    s, nu = 32, 1e-2
    lam = 8 * np.pi ** 2 * nu
    f = ns2d.fno_forcing(s, dtype=np.float64)
    exact = np.stack([(1 - np.exp(-lam * t)) * f / lam for t in range(1, 6)])
    with _enable_x64():
        out = np.asarray(ns2d.solve(jnp.zeros((1, s, s), jnp.float64), nu=nu, frames=6, max_dt=0.05, forcing=f))
    assert np.all(out[0, 0] == 0)
    assert _rel(out[0, 1:], exact) <= 1e-6


def test_grf_has_the_fno_covariance():
    """Zero mean per sample; pointwise variance = sum over k != 0 of (sqrt(2) 7^1.5 (4 pi^2 |k|^2 + 49)^-1.25)^2
    (FNO's GaussianRF(2, s, 2.5, 7)); 256 samples estimate it to a few per cent."""
    s = 16
    w = np.asarray(ns2d.gaussian_random_field(jax.random.PRNGKey(3), 256, s), np.float64)
    np.testing.assert_allclose(w.mean(axis=(1, 2)), 0.0, atol=1e-6)
    k = np.fft.fftfreq(s, 1.0 / s)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    c2 = (np.sqrt(2) * 7 ** 1.5 * (4 * np.pi ** 2 * k2 + 49) ** -1.25) ** 2
    c2[0, 0] = 0.0
    assert w.var() == pytest.approx(c2.sum(), rel=0.1)
    again = np.asarray(ns2d.gaussian_random_field(jax.random.PRNGKey(3), 256, s), np.float64)
    np.testing.assert_array_equal(w, again)


# --------------------------------------------------------------------------------------------------------------
# an independent solver: exponax (ETDRK4; this solver is IF-RK4)
# --------------------------------------------------------------------------------------------------------------
def _exponax_forced_ns(s, nu, dt, forcing, convection_scale):
    """exponax's NavierStokesVorticity with a constant vorticity forcing added to its nonlinear term (exponax has
    only Kolmogorov forcing built in)."""
    import exponax as ex
    from exponax._spectral import fft
    from exponax.nonlin_fun import VorticityConvection2d

    class Forced(VorticityConvection2d):
        forcing_hat: jax.Array

        def __init__(self, *args, forcing, **kwargs):
            super().__init__(*args, **kwargs)
            self.forcing_hat = fft(jnp.asarray(forcing)[None], num_spatial_dims=2)

        def __call__(self, u_hat):
            return super().__call__(u_hat) + self.forcing_hat

    class ForcedNS(ex.stepper.NavierStokesVorticity):
        forcing: jax.Array

        def __init__(self, *args, forcing, **kwargs):
            self.forcing = forcing
            super().__init__(*args, **kwargs)

        def _build_nonlinear_fun(self, derivative_operator):
            return Forced(self.num_spatial_dims, self.num_points, convection_scale=self.vorticity_convection_scale,
                          derivative_operator=derivative_operator, dealiasing_fraction=self.dealiasing_fraction,
                          forcing=self.forcing)

    return ForcedNS(2, 1.0, s, dt, diffusivity=nu, vorticity_convection_scale=convection_scale, order=4,
                    forcing=jnp.asarray(forcing, jnp.float32))


def test_agrees_with_exponax_on_fno_trajectories():
    """Two FNO trajectories (64^2, nu = 1e-3, the FNO forcing, 3 time units, dt = 0.01 in both) agree to 1e-5
    relative L2 per frame: both solvers are spectrally exact in space and 4th order in time (error ~(dt)^4 ~ 1e-8
    here), so what is left is float32 round-off (measured 5e-7). exponax writes the convection with the stream
    function lap^-1 w (= -psi), i.e. the mirror flow: its convection_scale -1 is this equation, +1 differs at
    O(1) (checked, so the comparison can fail)."""
    import exponax as ex

    s, nu, dt, frames = 64, 1e-3, 0.01, 4
    f = ns2d.fno_forcing(s, dtype=np.float64)
    w0 = ns2d.gaussian_random_field(jax.random.PRNGKey(1), 2, s)
    ours = np.asarray(ns2d.solve(w0, nu=nu, frames=frames, max_dt=dt, forcing=f))
    errors = {}
    for b in (-1.0, 1.0):
        stepper = ex.RepeatedStepper(_exponax_forced_ns(s, nu, dt, f, b), int(round(1 / dt)))
        theirs = np.asarray(jax.vmap(ex.rollout(stepper, frames - 1, include_init=True))(w0[:, None])[:, :, 0])
        errors[b] = max(_rel(theirs[i], ours[i]) for i in range(w0.shape[0]))
    assert errors[-1.0] <= 1e-5, errors
    assert errors[1.0] > 1e-2, errors


# --------------------------------------------------------------------------------------------------------------
# generated files: layout and round trip
# --------------------------------------------------------------------------------------------------------------
TINY = dict(samples=3, frames=3, solve_grid=32, grid=16, seed=7, nu=1e-3)


def _gen_args(out, **overrides):
    opts = dict(TINY, **overrides)
    args = ["ns2d", "--out", str(out), "--no-progress"]
    flags = {"solve_grid": "--solve-grid"}
    for key, value in opts.items():
        args += [flags.get(key, f"--{key.replace('_', '-')}"), str(value)]
    return args


@pytest.fixture(scope="module")
def ns2d_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("ns2d")
    assert run_cli(generate.main, _gen_args(out, chunk=2)) == 0          # chunk 2: the last chunk is padded
    return out / "2D_NS_Vorticity_Nu0.001.hdf5"


def test_generated_layout_round_trip(ns2d_file):
    with h5py.File(ns2d_file, "r") as f:
        tensor = f["tensor"][()]
        attrs = dict(f.attrs)
        assert tensor.shape == (3, 3, 16, 16) and tensor.dtype == np.float32
        np.testing.assert_array_equal(f["x-coordinate"][()], np.arange(16) / 16)
        np.testing.assert_array_equal(f["y-coordinate"][()], np.arange(16) / 16)
        np.testing.assert_array_equal(f["t-coordinate"][()], [0.0, 1.0, 2.0])
    assert attrs["Nu"] == 1e-3 and attrs["dims"] == 2 and attrs["seed"] == 7
    assert (attrs["solve_grid"], attrs["grid"], attrs["store_every"]) == (32, 16, 2)
    assert attrs["forcing"] == "0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))" and attrs["forcing_amplitude"] == 0.1
    assert attrs["dt"] == 1 / 13                    # auto --max-dt at 32^2: 1e-2 * 256/32 = 0.08 -> 13 steps a frame
    assert attrs["generator"] == "ups_jax.data.generate ns2d" and "integrating-factor RK4" in attrs["scheme"]
    # the same arrays as the solver called directly on the same initial states (sample i: key i of the seed)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    w0 = jax.vmap(lambda k: ns2d.gaussian_random_field(k, 1, 32)[0])(keys)
    direct = np.asarray(ns2d.solve(w0, nu=1e-3, frames=3, max_dt=attrs["dt"], store_every=2,
                                   forcing=ns2d.fno_forcing(32, dtype=np.float64)))
    np.testing.assert_allclose(tensor, direct, rtol=0, atol=1e-5 * np.abs(direct).max())
    np.testing.assert_array_equal(tensor[:, 0], np.asarray(w0)[:, ::2, ::2])
    # the reader
    ds = open_dataset(ns2d_file)
    assert isinstance(ds, Field2DDataset) and ds.dims == 2
    assert (ds.num_trajectories, ds.nt, ds.nx, ds.ny, ds.dt) == (3, 3, 16, 16, 1.0)
    np.testing.assert_array_equal(ds.t, [0, 1, 2])
    np.testing.assert_array_equal(ds.read([2, 0, 2]), tensor[[2, 0, 2]])
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds)).read([1]), tensor[[1]])   # no open handles pickled
    np.testing.assert_allclose(ds.nu, 1e-3)
    fp = ds.fingerprint()
    assert fp["dims"] == 2 and fp["shape"] == [3, 16, 16] and fp["layouts"] == ["pdebench-2d"]
    reduced = Field2DDataset(ns2d_file, reduced_resolution=2, reduced_resolution_t=2)
    np.testing.assert_array_equal(reduced.read([1]), tensor[[1], ::2, ::2, ::2])
    assert make_splits(ds, 1 / 3, 1 / 3) == {"test": [0], "val": [1], "train": [2]}
    stats = compute_normalization(ds, [0, 1, 2])
    assert stats["mean"] == pytest.approx(float(tensor.astype(np.float64).mean()), abs=1e-6)


def test_generate_sample_does_not_depend_on_chunk(ns2d_file, tmp_path, capsys):
    assert run_cli(generate.main, _gen_args(tmp_path, samples=2, chunk=5)) == 0
    assert "wrote" in capsys.readouterr().out
    with h5py.File(ns2d_file) as a, h5py.File(tmp_path / ns2d_file.name) as b:
        np.testing.assert_allclose(b["tensor"][()], a["tensor"][:2], rtol=0, atol=1e-6)


def test_validate_data_passes_2d_files(ns2d_file, capsys):
    rows = validate_files(ns2d_file)
    assert all(r["status"] == "PASS" for r in rows), rows
    assert {r["check"] for r in rows} == {"open", "keys", "nu", "tensor", "coords", "consistent", "finite",
                                          "bounded", "constant"}
    code = run_cli(validate_data.main, [str(ns2d_file)])
    out = capsys.readouterr().out
    assert code == 0 and "3 x 3 x 16 x 16 (N, T, X, Y)" in out and "0 FAIL" in out


# --------------------------------------------------------------------------------------------------------------
# the FNO paper's .mat layout (MATLAB v7.3: HDF5 with a 512-byte user block, arrays stored transposed)
# --------------------------------------------------------------------------------------------------------------
def _write_mat(path, a, u, t=None, *, keys=("a", "u", "t")):
    """a: (N, X, Y), u: (N, X, Y, T) as MATLAB sees them; written column-major as MATLAB does."""
    with h5py.File(path, "w", userblock_size=512) as f:
        if "a" in keys:
            f["a"] = np.ascontiguousarray(np.transpose(a))                 # (Y, X, N)
        if "u" in keys:
            f["u"] = np.ascontiguousarray(np.transpose(u))                 # (T, Y, X, N)
        if "t" in keys:
            f["t"] = np.transpose(np.asarray(t, np.float32)[None, :])     # MATLAB (1, T) -> (T, 1)
    return path


def test_fno_mat_layout(tmp_path):
    rng = np.random.default_rng(0)
    n, nx, ny, nt = 4, 8, 6, 5                                            # X != Y: catches a swapped transpose
    a = rng.normal(size=(n, nx, ny)).astype(np.float32)
    u = rng.normal(size=(n, nx, ny, nt)).astype(np.float32)
    path = _write_mat(tmp_path / "NavierStokes_V1e-3_N4_T5.mat", a, u, np.arange(1, nt + 1))
    ds = open_dataset(path)
    assert isinstance(ds, Field2DDataset) and ds.layouts == ["fno-mat"]
    assert (ds.num_trajectories, ds.nt, ds.nx, ds.ny) == (n, nt + 1, nx, ny)
    expected = np.concatenate([a[:, None], np.moveaxis(u, 3, 1)], axis=1)          # (N, T+1, X, Y), a first
    np.testing.assert_array_equal(ds.read([3, 0]), expected[[3, 0]])
    np.testing.assert_array_equal(ds.t, np.arange(nt + 1))
    np.testing.assert_allclose(ds.nu, 1e-3)
    np.testing.assert_allclose(ds.x, np.arange(nx) / nx)
    reduced = Field2DDataset(path, reduced_resolution=2, reduced_resolution_t=2)
    np.testing.assert_array_equal(reduced.read([1, 2]), expected[[1, 2], ::2, ::2, ::2])
    # without 'a': u alone, frames at its own times; the viscosity from nu= when the name lacks it
    bare = _write_mat(tmp_path / "vorticity.mat", a, u, np.arange(1, nt + 1), keys=("u", "t"))
    ds2 = open_dataset(bare, nu=1e-4)
    np.testing.assert_array_equal(ds2.read([1]), np.moveaxis(u, 3, 1)[[1]])
    np.testing.assert_array_equal(ds2.t, np.arange(1, nt + 1))
    np.testing.assert_allclose(ds2.nu, 1e-4)
    rows = validate_files(path)
    assert all(r["status"] == "PASS" for r in rows), rows


# --------------------------------------------------------------------------------------------------------------
# bad input: one line naming the file and the fix, exit 2, nothing written
# --------------------------------------------------------------------------------------------------------------
def _one_line(e) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def test_mat_with_other_keys_is_refused(tmp_path, capsys):
    path = tmp_path / "NavierStokes_V1e-3_N4_T5.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["sol"] = np.zeros((5, 4, 4, 2), np.float32)
        f["coeff"] = np.zeros((4, 4, 2), np.float32)
    with pytest.raises(DataError) as e:
        open_dataset(path)
    message = _one_line(e)
    assert message.startswith(f"{path}: not a known layout") and "a, u, t" in message and "['coeff', 'sol']" in message
    nameless = _write_mat(tmp_path / "data.mat", np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 4, 3), np.float32),
                          [1, 2, 3])
    with pytest.raises(DataError, match=r"viscosity is not in the file: name it like NavierStokes_V1e-3") as e:
        open_dataset(nameless)
    _one_line(e)
    swapped = tmp_path / "NavierStokes_V1e-3_bad.mat"
    _write_mat(swapped, np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 4, 3), np.float32), [1, 2])
    with pytest.raises(DataError, match=r"'t' has 2 values but 'u' has 3 frames") as e:
        open_dataset(swapped)
    assert str(swapped) in _one_line(e)
    assert run_cli(validate_data.main, [str(path)]) == 1                 # a check that failed: FAIL row, exit 1
    out = capsys.readouterr().out
    assert "keys" in out and "missing tensor, x-coordinate, t-coordinate (found coeff, sol)" in out


def test_nan_frames(ns2d_file, tmp_path, capsys):
    """A file with a NaN frame: validate-data names the sample, normalisation refuses. A solve that blows up
    (a step far above the stability limit): one line, exit 2, no file and no temporary left."""
    bad = tmp_path / "nan.hdf5"
    bad.write_bytes(ns2d_file.read_bytes())
    with h5py.File(bad, "a") as f:
        f["tensor"][2, 1] = np.nan
    rows = {r["check"]: r for r in validate_files(bad)}
    assert rows["finite"]["status"] == "FAIL"
    assert rows["finite"]["detail"] == "NaN/Inf in 1 of 3 samples (first: sample 2)"
    with pytest.raises(DataError, match="not finite"):
        compute_normalization(Field2DDataset(bad), [0, 1, 2])
    out = tmp_path / "blowup"
    code = run_cli(generate.main, _gen_args(out, samples=2, frames=6, solve_grid=16, grid=16, nu=1e-5,
                                            **{"max_dt": 1.0, "forcing_amplitude": 20}))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "non-finite values (sample 0); lower --max-dt" in err
    assert list(out.iterdir()) == []


def test_grid_that_the_coarsening_does_not_divide(tmp_path, capsys):
    out = tmp_path / "never"
    code = run_cli(generate.main, _gen_args(out, solve_grid=64, grid=24))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--grid 24 does not divide --solve-grid 64" in err and "e.g. --grid 64" in err
    assert not out.exists()                                              # nothing written, not even the directory


def test_existing_output_is_kept(ns2d_file, capsys):
    before = ns2d_file.read_bytes()
    code = run_cli(generate.main, _gen_args(ns2d_file.parent))
    err = capsys.readouterr().err
    assert code == 2 and str(ns2d_file) in err and "--overwrite" in err
    assert ns2d_file.read_bytes() == before


def test_2d_file_where_1d_is_expected(ns2d_file, tmp_path, capsys):
    """The 1-D reader (what a 1-D config reads through) refuses 2-D files with the fix; so does a 1-D command
    (re-solving a file's initial states with the Burgers solver): one line, exit 2, nothing written."""
    with pytest.raises(DataError) as e:
        PDEBenchDataset(ns2d_file)
    message = _one_line(e)
    assert message.startswith(f"{ns2d_file}: dataset 'tensor' must be (samples, time, x)")
    assert "2-D data" in message and "give a 1-D PDEBench file" in message
    mat = _write_mat(tmp_path / "NavierStokes_V1e-3_N2_T3.mat", np.zeros((2, 4, 4), np.float32),
                     np.ones((2, 4, 4, 3), np.float32), [1, 2, 3])
    with pytest.raises(DataError, match=r"is 2-D data in the FNO \.mat layout") as e:
        PDEBenchDataset(mat)
    _one_line(e)
    out = tmp_path / "out"
    code = run_cli(generate.main, ["burgers1d", "--initial-from", str(ns2d_file), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(ns2d_file) in err and "2-D data" in err
    assert not out.exists()
    # 1-D and 2-D files together
    one_d = tmp_path / "1d.hdf5"
    with h5py.File(one_d, "w") as f:
        f["tensor"] = np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float32)
        f["x-coordinate"] = (np.arange(8) + 0.5) / 8
        f["t-coordinate"] = np.arange(5) * 0.01
        f.attrs["Nu"] = 0.01
    with pytest.raises(DataError, match=r"is 2-D data but .*1d\.hdf5 is 1-D; give files of one dimension") as e:
        open_dataset([one_d, ns2d_file])
    _one_line(e)
    assert isinstance(open_dataset(one_d), PDEBenchDataset)
    rows = [r for r in validate_files([one_d, ns2d_file]) if r["check"] == "consistent"]
    assert rows[1]["status"] == "FAIL" and "is 2-D data but" in rows[1]["detail"]



def test_accuracy_benchmark_script(capsys):
    """benchmarks/ns2d_solver_accuracy.py (the docs' resolution table) on a tiny case; a bad --cases is one line,
    exit 2."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ns2d_solver_accuracy.py"
    spec = importlib.util.spec_from_file_location("ns2d_solver_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(1, 2, 16, (32, 4e-2), [(16, 8e-2)], 1e-3)
    assert rows[0]["reference"] and [r["grid"] for r in rows] == [32, 16]
    assert 1e-3 < rows[1]["rel_t1"] < 0.1            # 16^2 truncates the field's |k| > 5 modes: ~3 % off
    assert run_cli(bench.main, ["--cases", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'32' is not GRID:MAX_DT" in err


def test_train_with_a_1d_config_refuses_a_2d_file(ns2d_file, tmp_path, capsys):
    """``python -m ups_jax.train`` with the 1-D Burgers config on a 2-D file: one line naming the file and the fix,
    exit 2, no workdir made."""
    from pathlib import Path

    from ups_jax import train

    config = Path(__file__).resolve().parents[1] / "configs" / "burgers32.py"
    workdir = tmp_path / "run"
    code = run_cli(train.main, ["--config", f"{config}:test", "--workdir", str(workdir),
                                f"--config.data.paths=('{ns2d_file}',)"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(ns2d_file) in err and "is 2-D data (N, T, X, Y) but the config is 1-D" in err
    assert not workdir.exists()
