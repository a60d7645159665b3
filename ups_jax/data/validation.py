"""Checks for PDEBench-layout HDF5 files (1-D and 2-D) and FNO .mat files; used by ``python -m ups_jax.driver
validate-data`` and ``validate``.

``validate_files(paths)`` returns one row per file per check::

    {'file': str, 'check': str, 'status': 'PASS' | 'WARN' | 'FAIL', 'detail': str}

Checks, in order (a file that cannot be opened gets only the ``open`` row):

========== =====================================================================================================
open       the file opens as HDF5 (a truncated or non-HDF5 file fails here)
keys       datasets ``tensor``, ``x-coordinate``, ``t-coordinate`` are present
nu         attribute ``Nu`` is present and a finite number >= 0
tensor     ``tensor`` is rank 3 ``(samples, time, x)`` of a float dtype, with at least one sample
coords     ``x-coordinate`` has X strictly increasing values (WARN if unevenly spaced); ``t-coordinate`` has T
           values, or T+1 (PDEBench's generator writes one extra time: accepted, noted), increasing
consistent frames, cells and x-coordinate match the first file
finite     no NaN/Inf, scanned in chunks over *every* sample (the first bad sample is named)
bounded    max |u| <= ``max_abs`` (default 1e3)
constant   the data is not constant (FAIL if the whole tensor is, WARN naming constant samples)
========== =====================================================================================================

2-D files (``ups_jax.data.ns2d_reader``: a rank-4 ``tensor`` with ``y-coordinate``, or the FNO ``.mat`` keys
``a``, ``u``, ``t``) get the same rows: ``keys`` lists the 2-D keys (for a ``.mat``: ``a``, ``u``, ``t``; a
missing ``a``/``t`` is a WARN), ``nu`` (for a ``.mat``: from the file name, WARN if absent), ``tensor``/``coords``
from the 2-D reader's own validation, ``consistent`` (FAIL across files of different dimensions) and the scan
over every sample.

A read error in the middle of a scan (truncated file) turns that check into a FAIL with the reason; nothing
raises except a missing path or an empty directory (``DataError``: a usage error, exit code 2 in the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ups_jax.data.pdebench import H5_ERRORS, NU_ATTR, T_KEY, TENSOR_KEY, X_KEY, _short, expand_paths

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
CHECKS = ("open", "keys", "nu", "tensor", "coords", "consistent", "finite", "bounded", "constant")
DEFAULT_MAX_ABS = 1e3
_SCAN_BYTES = 64 * 2 ** 20


def validate_files(paths: str | Path | Iterable[str | Path], *, max_abs: float = DEFAULT_MAX_ABS,
                   chunk_samples: int | None = None) -> list[dict]:
    """Runs every check on every file (directories expand to their ``*.hdf5``/``*.h5``); returns the rows.

    ``chunk_samples``: samples per scan chunk (default: ~64 MB worth).
    """
    files = expand_paths(paths)
    rows: list[dict] = []
    reference: dict | None = None
    for path in files:
        file_rows, shape_info = _validate_one(path, max_abs, chunk_samples)
        if shape_info is not None:
            if reference is None:
                reference = dict(shape_info, path=path)
                file_rows.insert(_index_after(file_rows, "coords"), _row(path, "consistent", PASS,
                                                                         "reference file"))
            else:
                file_rows.insert(_index_after(file_rows, "coords"), _consistency(path, shape_info, reference))
        rows.extend(file_rows)
    return rows


def has_failures(rows: list[dict]) -> bool:
    return any(r["status"] == FAIL for r in rows)


def _row(path, check, status, detail) -> dict:
    return {"file": str(path), "check": check, "status": status, "detail": detail}


def _index_after(rows, check) -> int:
    names = [r["check"] for r in rows]
    return names.index(check) + 1 if check in names else len(rows)


def _consistency(path, info, ref) -> dict:
    dims, ref_dims = info.get("dims", 1), ref.get("dims", 1)
    if dims != ref_dims:
        return _row(path, "consistent", FAIL, f"is {dims}-D data but {ref['path']} is {ref_dims}-D; give files of "
                                              f"one dimension")
    if dims == 2:
        if info["shape"] != ref["shape"]:
            return _row(path, "consistent", FAIL, f"trajectories are (N, {', '.join(map(str, info['shape']))}) but "
                                                  f"{ref['path']} has (N, {', '.join(map(str, ref['shape']))})")
        return _row(path, "consistent", PASS, f"matches {Path(ref['path']).name}")
    if (info["nt"], info["nx"]) != (ref["nt"], ref["nx"]):
        return _row(path, "consistent", FAIL, f"tensor is (N, {info['nt']}, {info['nx']}) but {ref['path']} is "
                                              f"(N, {ref['nt']}, {ref['nx']})")
    if info["x"] is not None and ref["x"] is not None and info["x"].shape == ref["x"].shape:
        scale = float(np.abs(ref["x"]).max()) + 1e-12
        if not np.allclose(info["x"], ref["x"], rtol=0, atol=1e-5 * scale):
            return _row(path, "consistent", FAIL, f"x-coordinate differs from {ref['path']}")
    return _row(path, "consistent", PASS, f"matches {Path(ref['path']).name}")


def _validate_one(path: Path, max_abs: float, chunk_samples: int | None):
    """Rows for one file, plus {'nt','nx','x'} for the cross-file check (None if the tensor is unusable)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as e:
        return [_row(path, "open", FAIL, f"cannot open as HDF5 ({_short(e)}); truncated or not an HDF5 file?")], None
    rows = [_row(path, "open", PASS, f"{path.stat().st_size / 2 ** 20:.1f} MiB")]
    stage = "keys"
    try:
        with f:
            keys = set(f.keys())
            if _is_2d(f, keys):
                return _validate_2d(f, path, keys, rows, max_abs, chunk_samples)
            missing = [k for k in (TENSOR_KEY, X_KEY, T_KEY) if k not in keys]
            rows.append(_row(path, "keys", FAIL if missing else PASS,
                             f"missing {', '.join(missing)} (found {', '.join(sorted(keys)) or 'nothing'})"
                             if missing else f"{TENSOR_KEY}, {X_KEY}, {T_KEY}"))
            stage = "nu"
            rows.append(_check_nu(f, path))
            if TENSOR_KEY not in keys:
                return rows, None
            stage = "tensor"
            d = f[TENSOR_KEY]
            if not isinstance(d, h5py.Dataset):
                rows.append(_row(path, "tensor", FAIL, f"'{TENSOR_KEY}' is a group, not a dataset"))
                return rows, None
            problems = []
            if d.ndim != 3:
                problems.append(f"rank {d.ndim} (shape {d.shape}); expected (samples, time, x)")
            if d.dtype.kind != "f":
                problems.append(f"dtype {d.dtype} is not a float")
            if d.ndim == 3 and d.shape[0] == 0:
                problems.append("zero samples")
            if problems:
                rows.append(_row(path, "tensor", FAIL, "; ".join(problems)))
                return rows, None
            n, nt, nx = (int(s) for s in d.shape)
            rows.append(_row(path, "tensor", PASS, f"{n} x {nt} x {nx} {d.dtype}"))
            stage = "coords"
            coord_row, x = _check_coords(f, path, keys, nt, nx)
            rows.append(coord_row)
            stage = "finite"
            rows.extend(_scan(d, path, max_abs, chunk_samples))
            return rows, {"nt": nt, "nx": nx, "x": x}
    except H5_ERRORS as e:
        rows.append(_row(path, stage, FAIL, f"read error ({_short(e)}); the file is corrupt or truncated"))
        return rows, None


def _check_nu(f, path) -> dict:
    if NU_ATTR not in f.attrs:
        return _row(path, "nu", FAIL, f"attribute '{NU_ATTR}' missing")
    try:
        nu = float(np.asarray(f.attrs[NU_ATTR]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return _row(path, "nu", FAIL, f"attribute '{NU_ATTR}' is not a number: {f.attrs[NU_ATTR]!r}")
    if not np.isfinite(nu) or nu < 0:
        return _row(path, "nu", FAIL, f"{NU_ATTR}={nu} (must be finite and >= 0)")
    return _row(path, "nu", PASS, f"{NU_ATTR}={nu:g}")


def _check_coords(f, path, keys, nt, nx):
    notes, fails, x = [], [], None
    try:
        if X_KEY in keys:
            x = np.asarray(f[X_KEY][()], np.float64).reshape(-1)
            if x.size != nx:
                fails.append(f"{X_KEY} has {x.size} values for {nx} cells")
                x = None
            elif nx > 1 and not np.all(np.diff(x) > 0):
                fails.append(f"{X_KEY} is not strictly increasing")
            elif nx > 2:
                dx = np.diff(x)
                if np.ptp(dx) > 1e-3 * abs(dx.mean()):
                    notes.append(f"WARN {X_KEY} unevenly spaced (dx {dx.min():.4g}..{dx.max():.4g})")
                else:
                    notes.append(f"x: {nx} cells, dx={dx.mean():.6g}, domain [{x[0] - dx.mean() / 2:.4g}, "
                                 f"{x[-1] + dx.mean() / 2:.4g})")
        if T_KEY in keys:
            t = np.asarray(f[T_KEY][()], np.float64).reshape(-1)
            if t.size not in (nt, nt + 1):
                fails.append(f"{T_KEY} has {t.size} values for {nt} frames (expected {nt} or {nt + 1})")
            elif t.size > 1 and not np.all(np.diff(t) > 0):
                fails.append(f"{T_KEY} is not strictly increasing")
            else:
                dt = float(t[1] - t[0]) if t.size > 1 else float("nan")
                note = f"t: {nt} frames, dt={dt:g}"
                if t.size == nt + 1:
                    note += f" ({T_KEY} has {nt + 1} values: PDEBench's extra time, frame times use k*dt)"
                notes.append(note)
    except H5_ERRORS as e:
        fails.append(f"cannot read coordinates ({_short(e)})")
    if fails:
        return _row(path, "coords", FAIL, "; ".join(fails)), x
    warn = any(n.startswith("WARN ") for n in notes)
    return _row(path, "coords", WARN if warn else PASS, "; ".join(n.removeprefix("WARN ") for n in notes)), x


def _scan(d, path, max_abs, chunk_samples):
    """finite / bounded / constant rows from one chunked pass over every sample."""
    return _scan_samples(lambda start, stop: np.asarray(d[start:stop]), d.shape[0],
                         int(np.prod(d.shape[1:])) * d.dtype.itemsize, path, max_abs, chunk_samples)


def _scan_samples(read, n, sample_bytes, path, max_abs, chunk_samples):
    """:func:`_scan` over ``read(start, stop)`` -> ``(stop - start, ...)`` blocks of any rank."""
    chunk = chunk_samples or max(1, _SCAN_BYTES // max(1, sample_bytes))
    bad_count, first_bad = 0, None
    max_val, max_at = 0.0, None
    constant_samples = []
    global_min, global_max = np.inf, -np.inf
    try:
        for start in range(0, n, chunk):
            block = read(start, min(start + chunk, n))
            axes = tuple(range(1, block.ndim))
            finite = np.isfinite(block)
            bad = ~finite.all(axis=axes)
            if bad.any():
                bad_count += int(bad.sum())
                if first_bad is None:
                    first_bad = start + int(np.flatnonzero(bad)[0])
            magnitude = np.where(finite, np.abs(block), 0.0)
            per_sample = magnitude.max(axis=axes)
            i = int(per_sample.argmax())
            if per_sample[i] > max_val:
                max_val, max_at = float(per_sample[i]), start + i
            lo = np.where(finite, block, np.inf).min(axis=axes)
            hi = np.where(finite, block, -np.inf).max(axis=axes)
            constant_samples.extend((start + np.flatnonzero((lo == hi) & ~bad)).tolist())
            global_min, global_max = min(global_min, float(lo.min())), max(global_max, float(hi.max()))
    except H5_ERRORS as e:
        where = f"samples {start}..{min(start + chunk, n) - 1}"
        reason = f"read error at {where} ({_short(e)}); the file is probably truncated"
        return [_row(path, c, FAIL, reason) for c in ("finite", "bounded", "constant")]
    rows = []
    if bad_count:
        rows.append(_row(path, "finite", FAIL, f"NaN/Inf in {bad_count} of {n} samples (first: sample {first_bad})"))
    else:
        rows.append(_row(path, "finite", PASS, f"all {n} samples scanned"))
    if max_val > max_abs:
        rows.append(_row(path, "bounded", FAIL, f"max |u| = {max_val:.4g} at sample {max_at} exceeds {max_abs:g}"))
    else:
        rows.append(_row(path, "bounded", PASS, f"max |u| = {max_val:.4g} <= {max_abs:g}"))
    if global_min == global_max:
        rows.append(_row(path, "constant", FAIL, f"every value is {global_min:g}"))
    elif constant_samples:
        shown = ", ".join(map(str, constant_samples[:5])) + (" ..." if len(constant_samples) > 5 else "")
        rows.append(_row(path, "constant", WARN, f"{len(constant_samples)} constant samples ({shown})"))
    else:
        rows.append(_row(path, "constant", PASS, f"range [{global_min:.4g}, {global_max:.4g}]"))
    return rows


def format_table(rows: list[dict]) -> str:
    """Human-readable table plus a summary line."""
    if not rows:
        return "no files checked"
    names = {r["file"]: r["file"] for r in rows}
    width_file = min(60, max(len(n) for n in names.values()))
    width_check = max(len(r["check"]) for r in rows)
    lines = [f"{'FILE':<{width_file}}  {'CHECK':<{width_check}}  STATUS  DETAIL"]
    for r in rows:
        name = r["file"] if len(r["file"]) <= width_file else "..." + r["file"][-(width_file - 3):]
        lines.append(f"{name:<{width_file}}  {r['check']:<{width_check}}  {r['status']:<6}  {r['detail']}")
    files = len(names)
    fails = sum(r["status"] == FAIL for r in rows)
    warns = sum(r["status"] == WARN for r in rows)
    lines.append(f"{files} file(s): {fails} FAIL, {warns} WARN -> {'FAILED' if fails else 'OK'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# 2-D files (ups_jax.data.ns2d_reader's layouts: the 2-D PDEBench layout and the FNO .mat layout)
# --------------------------------------------------------------------------------------------------------------
def _is_2d(f, keys) -> bool:
    """A rank-4 ``tensor`` with a ``y-coordinate``, or the FNO ``.mat`` keys (``u`` without ``tensor``)."""
    from ups_jax.data.ns2d_reader import Y_KEY, detect_layout

    layout = detect_layout(f)
    return (layout == "pdebench-2d" and Y_KEY in keys) or layout == "fno-mat"


def _validate_2d(f, path, keys, rows, max_abs, chunk_samples):
    """The same checks for a 2-D file: keys, nu, tensor + coords (the reader's own validation), the scan."""
    from ups_jax.data.ns2d_reader import MAT_KEYS, Y_KEY, describe, read_block

    from ups_jax.errors import DataError

    mat = TENSOR_KEY not in keys
    expected = MAT_KEYS if mat else (TENSOR_KEY, X_KEY, Y_KEY, T_KEY)
    missing = [k for k in expected if k not in keys]
    status = (WARN if mat else FAIL) if missing else PASS
    layout = "FNO .mat layout" if mat else "2-D PDEBench layout"
    rows.append(_row(path, "keys", status, f"{layout}: {', '.join(expected)}" + (
        f"; missing {', '.join(missing)} (found {', '.join(sorted(keys))})" if missing else "")))
    if mat:
        try:
            nu = describe(path)["nu"]
            rows.append(_row(path, "nu", PASS, f"Nu={nu:g} (from the file name)"))
        except DataError as e:
            if "viscosity" not in str(e):
                rows.append(_row(path, "tensor", FAIL, str(e).removeprefix(f"{path}: ")))
                return rows, None
            rows.append(_row(path, "nu", WARN, "viscosity not recorded (no _V<nu>_ in the name): readers need nu="))
    else:
        rows.append(_check_nu(f, path))
    try:
        meta = describe(path, nu=0.0 if mat else None)
    except DataError as e:
        rows.append(_row(path, "tensor", FAIL, str(e).removeprefix(f"{path}: ")))
        return rows, None
    shape = (meta["nt"], meta["nx"], meta["ny"])
    rows.append(_row(path, "tensor", PASS, f"{meta['n']} x {' x '.join(map(str, shape))} (N, T, X, Y)"
                     + (f", frame 0 = 'a'" if meta["initial_frame"] else "")))
    x0, dx = meta["x"][0], meta["x"][1] - meta["x"][0]
    rows.append(_row(path, "coords", PASS, f"x: {meta['nx']} points, y: {meta['ny']} points, domain "
                                           f"[{x0:.4g}, {x0 + meta['nx'] * dx:.4g})^2; t: {meta['nt']} frames, "
                                           f"t0={meta['t0']:g}, dt={meta['dt']:g}"))

    def read(start, stop):
        return read_block(f, meta, np.arange(start, stop), 1, 1)

    sample_bytes = 4 * int(np.prod(shape))
    rows.extend(_scan_samples(read, meta["n"], sample_bytes, path, max_abs, chunk_samples))
    return rows, {"nt": meta["nt"], "nx": meta["nx"], "x": None, "dims": 2, "shape": shape}
