"""Generated files, the lazy PDEBench reader, splits, normalisation, the window loader and the default data."""

from __future__ import annotations

import json
import pickle
import shutil

import h5py
import numpy as np
import pytest

from ups_jax.data import generate
from ups_jax.data.default import ensure_default_data
from ups_jax.data.loader import WindowLoader
from ups_jax.data.pdebench import PDEBenchDataset, compute_normalization, make_splits
from ups_jax.errors import CheckpointError, DataError, run_cli


def _write(path, tensor, *, nu=0.01, x=None, t=None, attrs=True, keys=("tensor", "x-coordinate", "t-coordinate")):
    tensor = np.asarray(tensor)
    with h5py.File(path, "w") as f:
        if "tensor" in keys:
            f["tensor"] = tensor
        nx = tensor.shape[-1]
        if "x-coordinate" in keys:
            f["x-coordinate"] = x if x is not None else ((np.arange(nx) + 0.5) * 2 / nx - 1).astype(np.float32)
        if "t-coordinate" in keys:
            nt = tensor.shape[1] if tensor.ndim > 1 else 1
            f["t-coordinate"] = t if t is not None else (np.arange(nt + 1) * 0.01).astype(np.float32)
        if attrs:
            f.attrs["Nu"] = nu
    return path


# --------------------------------------------------------------------------------------------------------------
# generated file, PDEBench layout
# --------------------------------------------------------------------------------------------------------------
def test_generated_file_has_pdebench_layout(burgers_file):
    with h5py.File(burgers_file, "r") as f:
        assert set(f.keys()) == {"tensor", "x-coordinate", "t-coordinate"}
        assert f["tensor"].shape == (12, 201, 64) and f["tensor"].dtype == np.float32
        x, t = f["x-coordinate"][()], f["t-coordinate"][()]
        assert f.attrs["Nu"] == pytest.approx(0.01)
        u = f["tensor"][()]
    assert x.shape == (64,) and x.dtype == np.float32
    np.testing.assert_allclose(x, -1 + (np.arange(64) + 0.5) * 2 / 64, rtol=0, atol=1e-6)
    assert t.shape == (202,)                                   # PDEBench quirk: 202 times for 201 frames
    np.testing.assert_allclose(t, np.arange(202) * 0.01, atol=1e-6)
    assert np.all(np.isfinite(u)) and np.abs(u).max() < 5
    # trajectories evolve (viscous decay) and are not copies of each other
    assert np.all((u[:, -1] ** 2).sum(1) < (u[:, 0] ** 2).sum(1))
    assert len({row.tobytes() for row in u[:, 0]}) == 12


def test_reader_round_trip(burgers_file):
    ds = PDEBenchDataset(burgers_file)
    assert (ds.num_trajectories, ds.nt, ds.nx) == (12, 201, 64) and len(ds) == 12
    assert ds.dt == pytest.approx(0.01) and ds.x_min == pytest.approx(-1.0) and ds.x_max == pytest.approx(1.0)
    assert ds.x.dtype == np.float32 and ds.x.shape == (64,)
    np.testing.assert_allclose(ds.t[[0, 1, -1]], [0.0, 0.01, 2.0], atol=1e-6)   # from frame index, not t-coord
    np.testing.assert_allclose(ds.nu, 0.01)
    with h5py.File(burgers_file, "r") as f:
        full = f["tensor"][()]
    got = ds.read([7, 2, 2, 11])                                # any order, duplicates
    assert got.shape == (4, 201, 64) and got.dtype == np.float32
    np.testing.assert_array_equal(got, full[[7, 2, 2, 11]])
    np.testing.assert_array_equal(ds.read(np.arange(3, 6)), full[3:6])     # contiguous block
    assert ds.read([]).shape == (0, 201, 64)
    with pytest.raises(IndexError):
        ds.read([12])


def test_reduced_resolution(burgers_file):
    ds = PDEBenchDataset(burgers_file, reduced_resolution=4, reduced_resolution_t=5)
    assert (ds.nt, ds.nx) == (41, 16)
    assert ds.dt == pytest.approx(0.05)
    assert ds.x_min == pytest.approx(-1.0) and ds.x_max == pytest.approx(1.0)   # domain of the full grid
    with h5py.File(burgers_file, "r") as f:
        full, x = f["tensor"][()], f["x-coordinate"][()]
    np.testing.assert_array_equal(ds.x, x[::4])
    np.testing.assert_array_equal(ds.read([9, 1]), full[[9, 1], ::5, ::4])
    np.testing.assert_allclose(ds.t[-1], 2.0, atol=1e-6)
    odd = PDEBenchDataset(burgers_file, reduced_resolution=3, reduced_resolution_t=7)     # non-divisors
    assert (odd.nt, odd.nx) == (len(range(0, 201, 7)), len(range(0, 64, 3)))
    np.testing.assert_array_equal(odd.read([0]), full[[0], ::7, ::3])


def test_multi_file_nu_conditioning(burgers_dir):
    ds = PDEBenchDataset(burgers_dir, reduced_resolution=2)
    assert [p.name for p in ds.files] == ["1D_Burgers_Sols_Nu0.01.hdf5", "1D_Burgers_Sols_Nu0.1.hdf5"]
    assert ds.num_trajectories == 24 and ds.trajectories_per_file == [12, 12]
    np.testing.assert_allclose(ds.nu, [0.01] * 12 + [0.1] * 12)
    with h5py.File(burgers_dir / "1D_Burgers_Sols_Nu0.1.hdf5", "r") as f:
        second = f["tensor"][:, :, ::2]
    with h5py.File(burgers_dir / "1D_Burgers_Sols_Nu0.01.hdf5", "r") as f:
        first = f["tensor"][:, :, ::2]
    np.testing.assert_array_equal(ds.read([13, 0, 23]), np.stack([second[1], first[0], second[11]]))
    fi, local = ds.file_of([0, 11, 12, 23])
    assert fi.tolist() == [0, 0, 1, 1] and local.tolist() == [0, 11, 0, 11]
    # same ICs (same seed), and the higher viscosity dissipates the fluctuations faster
    np.testing.assert_allclose(first[:, 0], second[:, 0], rtol=0, atol=1e-6)
    fluctuation = lambda u: u[:, -1].var(axis=-1)
    assert np.all(fluctuation(second) < fluctuation(first))


def test_pickle_and_fingerprint(burgers_dir):
    ds = PDEBenchDataset([burgers_dir / "1D_Burgers_Sols_Nu0.1.hdf5", burgers_dir / "1D_Burgers_Sols_Nu0.01.hdf5"],
                         reduced_resolution=4, reduced_resolution_t=5)
    before = ds.read([0, 20])                                   # opens handles
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read([0, 20]), before)
    np.testing.assert_allclose(clone.nu[[0, 20]], [0.1, 0.01])   # order as given
    fp = json.loads(json.dumps(ds.fingerprint()))
    assert fp["nu"] == [0.01, 0.1] and fp["num_trajectories"] == 24
    assert fp["shape_full"] == [201, 64] and fp["shape"] == [41, 16]
    assert fp["reduced_resolution"] == 4 and fp["reduced_resolution_t"] == 5
    assert [f["name"] for f in fp["files"]] == ["1D_Burgers_Sols_Nu0.1.hdf5", "1D_Burgers_Sols_Nu0.01.hdf5"]
    assert all(f["size_bytes"] > 0 for f in fp["files"])
    assert all(str(burgers_dir) not in json.dumps(f) for f in fp["files"])      # no absolute paths: data may move
    ds.close()


# --------------------------------------------------------------------------------------------------------------
# reader errors: one DataError naming the file and key
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, match", [
    ("missing", r"no such file or directory"),
    ("empty_dir", r"no \.hdf5/\.h5 files"),
    ("missing_key", r"missing dataset 'tensor'"),
    ("missing_x", r"missing dataset 'x-coordinate'"),
    ("rank", r"'tensor' must be \(samples, time, x\)"),
    ("zero", r"zero samples"),
    ("no_nu", r"missing attribute 'Nu'"),
    ("x_len", r"'x-coordinate' has 5 values"),
    ("not_hdf5", r"cannot open as HDF5"),
])
def test_reader_errors(tmp_path, case, match):
    path = tmp_path / "data.hdf5"
    good = np.zeros((2, 3, 4), np.float32)
    if case == "missing":
        path = tmp_path / "nope.hdf5"
    elif case == "empty_dir":
        path = tmp_path
    elif case == "missing_key":
        _write(path, good, keys=("x-coordinate", "t-coordinate"))
    elif case == "missing_x":
        _write(path, good, keys=("tensor", "t-coordinate"))
    elif case == "rank":
        _write(path, np.zeros((2, 3, 4, 1), np.float32))
    elif case == "zero":
        _write(path, np.zeros((0, 3, 4), np.float32))
    elif case == "no_nu":
        _write(path, good, attrs=False)
    elif case == "x_len":
        _write(path, good, x=np.linspace(0, 1, 5))
    elif case == "not_hdf5":
        path.write_text("not an hdf5 file\n")
    with pytest.raises(DataError, match=match) as info:
        PDEBenchDataset(path)
    message = str(info.value)
    assert "\n" not in message
    if case not in ("missing", "empty_dir"):
        assert str(path) in message


def test_reader_rejects_inconsistent_files(tmp_path):
    a = _write(tmp_path / "a_Nu0.1.hdf5", np.zeros((2, 3, 4), np.float32), nu=0.1)
    b = _write(tmp_path / "b_Nu0.2.hdf5", np.zeros((2, 3, 8), np.float32), nu=0.2)
    with pytest.raises(DataError, match=r"b_Nu0\.2\.hdf5: 'tensor' is \(N, 3, 8\) but .*a_Nu0\.1\.hdf5"):
        PDEBenchDataset([a, b])


def test_nu_from_file_name_when_attribute_lost(tmp_path):
    path = _write(tmp_path / "1D_Burgers_Sols_Nu0.004.hdf5", np.ones((2, 3, 4), np.float32), attrs=False)
    np.testing.assert_allclose(PDEBenchDataset(path).nu, 0.004)


# --------------------------------------------------------------------------------------------------------------
# splits and normalisation
# --------------------------------------------------------------------------------------------------------------
def test_splits_disjoint_cover_deterministic(burgers_dir):
    ds = PDEBenchDataset(burgers_dir)
    s = make_splits(ds, test_fraction=0.1, val_fraction=0.1)
    assert s["test"].tolist() == [0, 12] and s["val"].tolist() == [1, 13]      # first 10 %, next 10 % per file
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert np.array_equal(np.sort(allidx), np.arange(24))                        # cover, disjoint
    again = make_splits([12, 12], test_fraction=0.1, val_fraction=0.1)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    big = make_splits([1000, 10], test_fraction=0.1, val_fraction=0.1)           # PDEBench: first 1000 of 10000
    assert big["test"][:100].tolist() == list(range(100)) and big["test"][100:].tolist() == [1000]
    assert len(big["val"]) == 101 and len(big["train"]) == 808
    with pytest.raises(DataError, match="the test split is empty"):
        make_splits([5], test_fraction=0.1, val_fraction=0.2)
    with pytest.raises(DataError, match="the val split is empty"):
        make_splits([12], test_fraction=0.1, val_fraction=0.0)


def test_normalization_uses_train_only(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(0.5, 2.0, size=(20, 6, 8)).astype(np.float32)
    data[:2] = 1e3 + rng.normal(0, 100, size=(2, 6, 8))             # test split (first 10 %): wildly different
    data[2:4] = -7e2                                                 # val split: different too
    path = _write(tmp_path / "n.hdf5", data)
    ds = PDEBenchDataset(path, reduced_resolution=2)
    splits = make_splits(ds)
    assert splits["test"].tolist() == [0, 1] and splits["val"].tolist() == [2, 3]
    stats = compute_normalization(ds, splits["train"], chunk=3)      # several chunks
    train = data[4:, :, ::2].astype(np.float64)
    assert stats == {"mean": pytest.approx(train.mean(), rel=1e-9), "std": pytest.approx(train.std(), rel=1e-9)}
    assert abs(stats["mean"] - 0.5) < 0.2 and abs(stats["std"] - 2.0) < 0.2


# --------------------------------------------------------------------------------------------------------------
# window loader
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reduced(burgers_dir):
    ds = PDEBenchDataset(burgers_dir, reduced_resolution=4, reduced_resolution_t=5)
    return ds, make_splits(ds)


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def test_loader_batches_are_windows(reduced):
    ds, splits = reduced
    train = splits["train"]
    with WindowLoader(ds, train, window=3, batch_size=8, seed=0) as loader:
        assert loader.num_windows == len(train) * (41 - 3 + 1)
        assert loader.batches_per_epoch == loader.num_windows // 8
        batches = _take(loader, 5)
    full = ds.read(train)
    windows = {full[i, s:s + 3].tobytes(): ds.nu[train[i]] for i in range(len(train)) for s in range(39)}
    for b in batches:
        assert b["u"].shape == (8, 3, 16) and b["u"].dtype == np.float32
        assert b["nu"].shape == (8,) and b["nu"].dtype == np.float32
        np.testing.assert_allclose(b["dt"], 0.05)
        for u, nu in zip(b["u"], b["nu"]):
            assert windows[u.tobytes()] == nu                 # a real window of a train trajectory, right nu
    test_bytes = {ds.read([i])[0, s:s + 3].tobytes() for i in splits["test"] for s in range(39)}
    assert not any(u.tobytes() in test_bytes for b in batches for u in b["u"])


def test_loader_epoch_covers_every_window_once(reduced):
    ds, splits = reduced
    with WindowLoader(ds, splits["train"][:2], window=40, batch_size=2, seed=1, stride=1) as loader:
        assert loader.num_windows == 4 and loader.batches_per_epoch == 2
        epoch0 = np.concatenate([b["u"] for b in _take(loader, 2)])
        assert loader.state()["epoch"] == 1
    full = ds.read(splits["train"][:2])
    expected = {full[i, s:s + 40].tobytes() for i in range(2) for s in range(2)}
    assert {u.tobytes() for u in epoch0} == expected


def test_loader_deterministic_and_resumable(reduced):
    ds, splits = reduced
    kw = dict(window=4, batch_size=16, seed=5)
    with WindowLoader(ds, splits["train"], **kw) as a, WindowLoader(ds, splits["train"], prefetch=0, **kw) as b:
        n = a.batches_per_epoch + 3                                   # crosses an epoch boundary
        seq_a, seq_b = _take(a, n), _take(b, n)
    for x, y in zip(seq_a, seq_b):
        np.testing.assert_array_equal(x["u"], y["u"])
        np.testing.assert_array_equal(x["nu"], y["nu"])
    with WindowLoader(ds, splits["train"], seed=6, window=4, batch_size=16) as c:
        assert not np.array_equal(next(c)["u"], seq_a[0]["u"])
    # resume: take k batches, save the state, continue in a fresh loader
    k = a.batches_per_epoch - 1
    with WindowLoader(ds, splits["train"], **kw) as first:
        _take(first, k)
        state = json.loads(json.dumps(first.state()))
    with WindowLoader(ds, splits["train"], cache_in_memory=False, **kw) as resumed:
        resumed.restore(state)
        for expected in seq_a[k:k + 4]:
            np.testing.assert_array_equal(next(resumed)["u"], expected["u"])
        # restore while the prefetch thread is running: it restarts from the restored position
        resumed.restore({"epoch": 0, "position": 0})
        np.testing.assert_array_equal(next(resumed)["u"], seq_a[0]["u"])
    with WindowLoader(ds, splits["train"], window=4, batch_size=8, seed=5) as other:
        with pytest.raises(CheckpointError, match="batch_size"):
            other.restore(state)


def test_loader_reraises_worker_errors_and_stops(reduced):
    ds, splits = reduced

    class Broken:
        nt, nx, dt, nu = ds.nt, ds.nx, ds.dt, ds.nu
        reduced_resolution_t = 5

        def read(self, indices):
            raise RuntimeError("disk on fire")

    loader = WindowLoader(Broken(), splits["train"], window=2, batch_size=4, seed=0, cache_in_memory=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(loader)
    assert loader._thread is None                                     # worker stopped after the failure
    with WindowLoader(ds, splits["train"], window=2, batch_size=4, seed=0, prefetch=1) as good:
        next(good)
        thread = good._thread
        assert thread.is_alive()
    assert not thread.is_alive()                                      # close() joins the thread


def test_loader_config_errors(reduced):
    ds, splits = reduced
    with pytest.raises(Exception, match="longer than the trajectories"):
        WindowLoader(ds, splits["train"], window=42, batch_size=2, seed=0)
    with pytest.raises(Exception, match="exceeds the 4 windows"):
        WindowLoader(ds, splits["train"][:2], window=40, batch_size=5, seed=0)


# --------------------------------------------------------------------------------------------------------------
# generate CLI and default data
# --------------------------------------------------------------------------------------------------------------
def test_generate_cli_refuses_existing_output(burgers_file, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "1D_Burgers_Sols_Nu0.01.hdf5"
    shutil.copyfile(burgers_file, target)
    before = target.read_bytes()
    code = run_cli(generate.main, ["burgers1d", "--nu", "0.01", "--samples", "2", "--nx", "64", "--out",
                                   str(out_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert str(target) in err and "--overwrite" in err
    assert target.read_bytes() == before
    assert run_cli(generate.main, ["burgers1d", "--nu", "0.01"]) == 2            # usage error: one line
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "--samples" in err


def test_generate_cli_writes_and_overwrites(tmp_path, capsys):
    args = ["burgers1d", "--nu", "1.0", "--samples", "3", "--nx", "32", "--out", str(tmp_path), "--chunk", "2",
            "--x-min", "0", "--x-max", "1", "--no-progress"]
    assert run_cli(generate.main, args) == 0
    path = tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5"
    assert "wrote" in capsys.readouterr().out
    ds = PDEBenchDataset(path)
    assert (ds.num_trajectories, ds.nt, ds.nx) == (3, 201, 32) and ds.x_min == pytest.approx(0.0)
    first = ds.read([0, 1, 2])
    ds.close()
    assert run_cli(generate.main, args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(PDEBenchDataset(path).read([0, 1, 2]), first)     # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1D_Burgers_Sols_Nu1.0.hdf5"]  # no temp files left


def test_burgers_filename_like_pdebench():
    assert [generate.burgers_filename(v) for v in (0.001, 0.01, 0.1, 1.0, 1)] == [
        "1D_Burgers_Sols_Nu0.001.hdf5", "1D_Burgers_Sols_Nu0.01.hdf5", "1D_Burgers_Sols_Nu0.1.hdf5",
        "1D_Burgers_Sols_Nu1.0.hdf5", "1D_Burgers_Sols_Nu1.0.hdf5"]


def test_ensure_default_data(tmp_path, burgers_file, capsys):
    from ups_jax.config import load_config

    cfg = load_config("configs/burgers32.py:test", [f"data.default_dir={tmp_path / 'default'}",
                                                    "data.generate.samples=3", "data.generate.nx=32"])
    paths = ensure_default_data(cfg, progress=False)
    assert paths == [str(tmp_path / "default" / "1D_Burgers_Sols_Nu0.01.hdf5")]
    out = capsys.readouterr().out
    assert "generating the default dataset" in out and "generated" in out
    ds = PDEBenchDataset(paths)
    assert (ds.num_trajectories, ds.nt, ds.nx) == (3, 201, 32)
    stamp = (tmp_path / "default" / "1D_Burgers_Sols_Nu0.01.hdf5").stat().st_mtime_ns
    assert ensure_default_data(cfg) == paths                                     # exists: not regenerated
    assert (tmp_path / "default" / "1D_Burgers_Sols_Nu0.01.hdf5").stat().st_mtime_ns == stamp
    assert "generating" not in capsys.readouterr().out

    given = load_config("configs/burgers32.py:test", [f"data.paths=('{burgers_file}',)"])
    assert ensure_default_data(given) == [str(burgers_file)]
    missing = load_config("configs/burgers32.py:test", [f"data.paths=('{tmp_path / 'nope.hdf5'}',)"])
    with pytest.raises(DataError, match=r"nope\.hdf5: data path not found; fix --config\.data\.paths"):
        ensure_default_data(missing)


def test_ensure_default_data_refuses_a_file_made_with_other_parameters(tmp_path):
    """An existing default file is checked against data.generate (HDF5 attributes), never silently reused, never
    overwritten: a file from before the attributes (no 'advective_scale': flux u^2/2) is refused with the fix."""
    from ups_jax.config import load_config

    over = [f"data.default_dir={tmp_path}", "data.generate.samples=2", "data.generate.nx=32"]
    cfg = load_config("configs/burgers32.py:test", over)
    assert cfg.data.generate.advective_scale == 2.0                           # PDEBench's released files
    path = generate.generate_burgers_file(tmp_path, nu=0.01, samples=2, nx=32, seed=cfg.data.generate.seed,
                                          progress=False)
    with h5py.File(path, "a") as f:                                           # as written before this change
        assert f.attrs["advective_scale"] == 2.0 and f.attrs["pde"] == "u_t + (u^2)_x = (Nu/pi) u_xx"
        del f.attrs["advective_scale"]
    before = path.read_bytes()
    with pytest.raises(DataError) as e:
        ensure_default_data(cfg)
    msg = str(e.value)
    assert "advective_scale=1 (config 2)" in msg and f"mv {path} {path}.old" in msg
    assert "--config.data.generate.advective_scale=1" in msg and "\n" not in msg
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
    # the config that matches the file uses it as it is
    legacy = load_config("configs/burgers32.py:test", over + ["data.generate.advective_scale=1.0"])
    assert ensure_default_data(legacy) == [str(path)]
    # another seed is another dataset
    other = load_config("configs/burgers32.py:test", over + ["data.generate.advective_scale=1.0",
                                                            "data.generate.seed=8"])
    with pytest.raises(DataError, match=r"seed=7 \(config 8\)"):
        ensure_default_data(other)
