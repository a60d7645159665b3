"""``validate-data``: every defect gets a FAIL row with a clear detail, exit codes 0/1/2, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_jax.data.validation import validate_files
from ups_jax.driver import validate_data
from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(path, n=40, nt=5, nx=8, *, nu=0.1, t_len=None, x=None, keys=("tensor", "x-coordinate",
                                                                               "t-coordinate"), attrs=True):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, nt, nx)).astype(np.float32)
    with h5py.File(path, "w") as f:
        if "tensor" in keys:
            f["tensor"] = data
        if "x-coordinate" in keys:
            f["x-coordinate"] = x if x is not None else (np.arange(nx) + 0.5) / nx
        if "t-coordinate" in keys:
            f["t-coordinate"] = np.arange(t_len or nt) * 0.01
        if attrs:
            f.attrs["Nu"] = nu
    return path


def _by_check(rows, path=None):
    return {r["check"]: r for r in rows if path is None or r["file"] == str(path)}


def _cli(argv, capsys):
    code = run_cli(validate_data.main, argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_generated_data_passes(burgers_dir, capsys):
    rows = validate_files(burgers_dir)
    assert {r["file"] for r in rows} == {str(p) for p in sorted(burgers_dir.glob("*.hdf5"))}
    assert all(r["status"] == "PASS" for r in rows), [r for r in rows if r["status"] != "PASS"]
    coords = _by_check(rows)["coords"]["detail"]
    assert "202 values" in coords and "domain [-1, 1)" in coords            # quirk accepted with a note
    code, out, _ = _cli([str(burgers_dir)], capsys)
    assert code == 0 and "0 FAIL" in out and "PASS" in out
    code, out, _ = _cli([str(burgers_dir), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and len(report["results"]) == len(rows)


def test_nan_in_late_sample_is_found(tmp_path, capsys):
    path = _synthetic(tmp_path / "late_nan.hdf5", n=40)
    with h5py.File(path, "a") as f:
        f["tensor"][37, 3, 2] = np.nan
        f["tensor"][39, 0, 0] = np.inf
    rows = _by_check(validate_files(path, chunk_samples=8))                 # sample 37 is in the 5th chunk
    assert rows["finite"]["status"] == "FAIL"
    assert rows["finite"]["detail"] == "NaN/Inf in 2 of 40 samples (first: sample 37)"
    assert rows["bounded"]["status"] == "PASS"                                # NaN/Inf do not hide the bound check
    code, out, _ = _cli([str(path)], capsys)
    assert code == 1 and "first: sample 37" in out and "FAILED" in out


@pytest.mark.parametrize("case, check, detail", [
    ("missing_key", "keys", "missing t-coordinate"),
    ("no_nu", "nu", "attribute 'Nu' missing"),
    ("rank", "tensor", "rank 4"),
    ("zero", "tensor", "zero samples"),
    ("int", "tensor", "is not a float"),
    ("x_len", "coords", "x-coordinate has 7 values for 8 cells"),
    ("x_order", "coords", "x-coordinate is not strictly increasing"),
    ("t_len", "coords", "t-coordinate has 9 values for 5 frames"),
    ("huge", "bounded", "exceeds 1000"),
    ("constant", "constant", "every value is 0"),
    ("truncated", "open", "truncated"),
    ("not_hdf5", "open", "cannot open as HDF5"),
])
def test_defects_fail_with_detail(tmp_path, capsys, case, check, detail):
    path = tmp_path / f"{case}.hdf5"
    if case == "missing_key":
        _synthetic(path, keys=("tensor", "x-coordinate"))
    elif case == "no_nu":
        _synthetic(path, attrs=False)
    elif case == "rank":
        with h5py.File(path, "w") as f:
            f["tensor"] = np.zeros((2, 5, 8, 1), np.float32)
    elif case == "zero":
        _synthetic(path)
        with h5py.File(path, "a") as f:
            del f["tensor"]
            f["tensor"] = np.zeros((0, 5, 8), np.float32)
    elif case == "int":
        _synthetic(path)
        with h5py.File(path, "a") as f:
            del f["tensor"]
            f["tensor"] = np.zeros((3, 5, 8), np.int32)
    elif case == "x_len":
        _synthetic(path, x=np.arange(7.0))
    elif case == "x_order":
        _synthetic(path, x=np.arange(8.0)[::-1])
    elif case == "t_len":
        _synthetic(path, t_len=9)
    elif case == "huge":
        _synthetic(path)
        with h5py.File(path, "a") as f:
            f["tensor"][30, 1, 1] = 5e3
    elif case == "constant":
        _synthetic(path)
        with h5py.File(path, "a") as f:
            f["tensor"][...] = 0.0
    elif case == "truncated":
        full = _synthetic(tmp_path / "full.hdf5", n=200).read_bytes()
        path.write_bytes(full[:len(full) // 2])
    elif case == "not_hdf5":
        path.write_text("x,y\n1,2\n")
    rows = _by_check(validate_files(path))
    assert rows[check]["status"] == "FAIL", rows
    assert detail in rows[check]["detail"]
    code, out, err = _cli([str(path)], capsys)
    assert code == 1 and err == ""
    assert f"{check}" in out and "FAIL" in out


def test_inconsistent_shapes_across_files(tmp_path):
    a = _synthetic(tmp_path / "a.hdf5", nx=8)
    b = _synthetic(tmp_path / "b.hdf5", nx=16)
    rows = validate_files([a, b])
    assert _by_check(rows, a)["consistent"]["status"] == "PASS"
    bad = _by_check(rows, b)["consistent"]
    assert bad["status"] == "FAIL" and "(N, 5, 16)" in bad["detail"] and str(a) in bad["detail"]


def test_t_coordinate_of_length_t_accepted_and_uneven_x_warns(tmp_path):
    path = _synthetic(tmp_path / "plain.hdf5", x=np.array([0.0, 0.1, 0.2, 0.35, 0.4, 0.5, 0.6, 0.7]))
    coords = _by_check(validate_files(path))["coords"]
    assert coords["status"] == "WARN" and "unevenly spaced" in coords["detail"]
    assert "dt=0.01" in coords["detail"]


def test_usage_errors_one_line_exit_2(tmp_path, capsys):
    for argv, needle in (([str(tmp_path / "missing.hdf5")], "missing.hdf5: no such file or directory"),
                         ([str(tmp_path)], "directory has no .hdf5/.h5 files"),
                         ([], "the following arguments are required: PATH")):
        code, out, err = _cli(argv, capsys)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_driver_subprocess_no_traceback(burgers_file, tmp_path):
    bad = tmp_path / "bad.hdf5"
    shutil.copyfile(burgers_file, bad)
    with h5py.File(bad, "a") as f:
        f["tensor"][11, 200, 63] = np.nan                                    # the very last value
    run = lambda *args: subprocess.run([sys.executable, "-m", "ups_jax.driver", "validate-data", *args],
                                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    res = run(str(burgers_file), str(bad), "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    report = json.loads(res.stdout)
    fails = [r for r in report["results"] if r["status"] == "FAIL"]
    assert report["ok"] is False and [(r["file"], r["check"]) for r in fails] == [(str(bad), "finite")]
    assert "first: sample 11" in fails[0]["detail"]
    res = run(str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stdout == "" and res.stderr.strip().count("\n") == 0
    assert "nope: no such file or directory" in res.stderr
