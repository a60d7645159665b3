"""Lazy reader for 2-D trajectory files: the 2-D PDEBench layout and the FNO paper's MATLAB v7.3 ``.mat`` layout.

Layouts (detected per file by :func:`detect_layout`; docs/run-format.md, "2-D data"):

* ``pdebench-2d`` (what ``python -m ups_jax.data.generate ns2d`` writes): ``tensor`` ``(N, T, X, Y)``,
  ``x-coordinate`` (X), ``y-coordinate`` (Y), ``t-coordinate`` (T, or T + 1 as PDEBench's 1-D files), attribute
  ``Nu``.
* ``fno-mat`` (``NavierStokes_V1e-3_N5000_T50.mat``; MATLAB v7.3 = HDF5 with a 512-byte user block): ``u`` is the
  MATLAB array ``(N, X, Y, T)`` stored column-major, i.e. ``(T, Y, X, N)`` on disk; ``a`` the initial vorticity
  ``(N, X, Y)`` -> ``(Y, X, N)`` on disk; ``t`` the ``T`` frame times (``1, ..., T``). The reader returns
  ``(N, T + 1, X, Y)`` with ``a`` as frame 0 at ``t = 0`` when ``a`` is present and ``t[0]`` is one frame step
  (as in the FNO files), else ``u`` alone. The grid is ns_2d.py's ``i / X``; the viscosity comes from the name
  (``_V1e-3_``) or the ``nu`` argument.
* ``pdebench-1d``: the 1-D layout (``ups_jax.data.pdebench.PDEBenchDataset``).

:func:`open_dataset` returns the reader for the files' dimension (1-D: ``PDEBenchDataset``, 2-D:
:class:`Field2DDataset`); files of both dimensions together are a ``DataError``. ``Field2DDataset`` has the
1-D reader's interface (``read``, ``nt``, ``nx``, ``dt``, ``t``, ``nu``, ``fingerprint``, ``trajectories_per_file``,
pickling without open handles) plus ``ny``, ``y``, ``dims`` = 2; ``read`` returns ``(n, nt, nx, ny)`` float32.
Every defect is one ``DataError`` line naming the file, the key and the fix.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from ups_jax.data.pdebench import (H5_ERRORS, T_KEY, TENSOR_KEY, X_KEY, _nu_of, _open, _short,
                                   PDEBenchDataset)
from ups_jax.data.pdebench import expand_paths as _expand_paths
from ups_jax.errors import ConfigError, DataError

Y_KEY = "y-coordinate"
MAT_KEYS = ("a", "u", "t")
SUFFIXES_2D = (".hdf5", ".h5", ".mat")
_NU_IN_MAT_NAME = re.compile(r"_V([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?:_|\.mat$)")


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their sorted ``*.hdf5``/``*.h5``/``*.mat``."""
    return _expand_paths(paths, SUFFIXES_2D)


def detect_layout(f) -> str | None:
    """``'pdebench-1d'``, ``'pdebench-2d'``, ``'fno-mat'`` or None (neither) for an open h5py file."""
    if TENSOR_KEY in f and hasattr(f[TENSOR_KEY], "ndim"):
        return {3: "pdebench-1d", 4: "pdebench-2d"}.get(f[TENSOR_KEY].ndim)
    if "u" in f and hasattr(f["u"], "ndim"):
        return "fno-mat"
    return None


def file_dims(path) -> int:
    """1 or 2: the spatial dimension of a data file (``DataError`` if it is neither layout)."""
    path = Path(path)
    with _open(path) as f:
        layout = detect_layout(f)
        if layout is None:
            raise DataError(_unknown_layout(path, f))
    return 1 if layout == "pdebench-1d" else 2


def _unknown_layout(path: Path, f) -> str:
    return (f"{path}: not a known layout: need 'tensor' (PDEBench: (N, T, X) 1-D or (N, T, X, Y) 2-D, with "
            f"x-coordinate[, y-coordinate], t-coordinate, attribute Nu) or the FNO .mat keys a, u, t; found "
            f"{sorted(f.keys())}")


def describe(path: Path, nu: float | None = None) -> dict:
    """Validated shape, grid, frame times and viscosity of one 2-D file (``DataError`` naming the file and key)."""
    try:
        with _open(path) as f:
            layout = detect_layout(f)
            if layout is None:
                raise DataError(_unknown_layout(path, f))
            if layout == "pdebench-1d":
                raise DataError(f"{path}: is 1-D data ('{TENSOR_KEY}' (N, T, X)); a 2-D reader needs "
                                f"(N, T, X, Y) with '{Y_KEY}': give a 2-D file or use a 1-D config")
            meta = _describe_pdebench_2d(path, f) if layout == "pdebench-2d" else _describe_mat(path, f, nu)
    except H5_ERRORS as e:
        raise DataError(f"{path}: cannot read ({_short(e)}); the file is corrupt or truncated "
                        f"(check it: python -m ups_jax.driver validate-data {path})") from e
    if nu is not None:
        meta["nu"] = float(nu)
    return dict(meta, path=path, size=path.stat().st_size)


def _float_dataset(path, f, key, rank, what):
    d = f[key]
    if not hasattr(d, "shape") or d.ndim != rank:
        raise DataError(f"{path}: dataset '{key}' must be {what}; got shape {getattr(d, 'shape', 'a group')}")
    if d.dtype.kind != "f":
        raise DataError(f"{path}: dataset '{key}' must hold floats, got dtype {d.dtype}")
    if min(d.shape) == 0:
        raise DataError(f"{path}: dataset '{key}' is empty (shape {d.shape})")
    return d


def _axis(path, f, key, size) -> np.ndarray:
    if key not in f:
        raise DataError(f"{path}: missing dataset '{key}' (2-D PDEBench layout: tensor (N, T, X, Y), x-coordinate, "
                        f"y-coordinate, t-coordinate, attribute Nu); found {sorted(f.keys())}")
    v = np.asarray(f[key][()], np.float64).reshape(-1)
    if v.size != size:
        raise DataError(f"{path}: '{key}' has {v.size} values but '{TENSOR_KEY}' has {size} points on that axis")
    if size > 1 and not np.all(np.diff(v) > 0):
        raise DataError(f"{path}: '{key}' is not strictly increasing")
    return v


def _frame_step(path, key, t: np.ndarray, default: float) -> tuple[float, float]:
    """(dt, t0) from a time axis (float32 round-off trimmed as the 1-D reader does)."""
    if t.size < 2:
        return default, float(t[0]) if t.size else 0.0
    dt = float(f"{t[1] - t[0]:.6g}")
    if not (np.isfinite(dt) and dt > 0):
        raise DataError(f"{path}: '{key}' is not increasing ({t[0]}, {t[1]})")
    return dt, float(f"{t[0]:.6g}")


def _describe_pdebench_2d(path, f) -> dict:
    d = _float_dataset(path, f, TENSOR_KEY, 4, "(samples, time, x, y)")
    n, nt, nx, ny = (int(s) for s in d.shape)
    x, y = _axis(path, f, X_KEY, nx), _axis(path, f, Y_KEY, ny)
    dt, t0 = 1.0, 0.0
    if T_KEY in f:
        t = np.asarray(f[T_KEY][()], np.float64).reshape(-1)
        if t.size not in (nt, nt + 1):
            raise DataError(f"{path}: '{T_KEY}' has {t.size} values for {nt} frames (expected {nt} or {nt + 1})")
        dt, t0 = _frame_step(path, T_KEY, t, 1.0)
    return dict(layout="pdebench-2d", n=n, nt=nt, nx=nx, ny=ny, x=x, y=y, dt=dt, t0=t0, nu=_nu_of(f, path),
                chunked=d.chunks is not None, initial_frame=False)


def _describe_mat(path, f, nu) -> dict:
    u = _float_dataset(path, f, "u", 4, "the MATLAB array (N, X, Y, T), i.e. (T, Y, X, N) on disk")
    t_frames, ny, nx, n = (int(s) for s in u.shape)
    dt, t0 = 1.0, 1.0
    if "t" in f:
        t = np.asarray(f["t"][()], np.float64).reshape(-1)
        if t.size != t_frames:
            raise DataError(f"{path}: 't' has {t.size} values but 'u' has {t_frames} frames (u is (T, Y, X, N) "
                            f"on disk for MATLAB's (N, X, Y, T))")
        dt, t0 = _frame_step(path, "t", t, 1.0)
    initial = False
    if "a" in f:
        a = _float_dataset(path, f, "a", 3, "the MATLAB array (N, X, Y), i.e. (Y, X, N) on disk")
        if tuple(a.shape) != (ny, nx, n):
            raise DataError(f"{path}: 'a' has disk shape {tuple(a.shape)} but 'u' needs ({ny}, {nx}, {n}) "
                            f"(MATLAB (N, X, Y) stored transposed)")
        initial = math.isclose(t0, dt, rel_tol=1e-4)          # a is the frame one step before u's first
    if nu is None:
        match = _NU_IN_MAT_NAME.search(path.name)
        if not match:
            raise DataError(f"{path}: the viscosity is not in the file: name it like NavierStokes_V1e-3_N5000_T50"
                            f".mat (the FNO files' names) or pass nu=")
        nu = float(match.group(1))
    x = np.arange(nx, dtype=np.float64) / nx
    y = np.arange(ny, dtype=np.float64) / ny
    return dict(layout="fno-mat", n=n, nt=t_frames + int(initial), nx=nx, ny=ny, x=x, y=y, dt=dt,
                t0=0.0 if initial else t0, nu=float(nu), chunked=u.chunks is not None, initial_frame=initial)


def read_block(f, meta: dict, wanted: np.ndarray, rt: int, r: int) -> np.ndarray:
    """``(len(wanted), nt_reduced, nx_reduced, ny_reduced)`` float32 for sorted unique in-file indices."""
    if meta["layout"] == "pdebench-2d":
        d = f[TENSOR_KEY]
        sl = (slice(None, None, rt), slice(None, None, r), slice(None, None, r))
        if meta["chunked"] or wanted.size == 1:
            return np.stack([d[(int(i),) + sl] for i in wanted]).astype(np.float32, copy=False)
        return d[(wanted.tolist(),) + sl].astype(np.float32, copy=False)
    u = f["u"]                                                  # (T, Y, X, N) on disk
    idx = wanted.tolist()
    first_u = rt - 1 if meta["initial_frame"] else 0           # combined frame k*rt; frame 0 is 'a'
    frames = np.transpose(u[first_u::rt, ::r, ::r, idx], (3, 0, 2, 1))
    if meta["initial_frame"]:
        a = np.transpose(f["a"][::r, ::r, idx], (2, 1, 0))[:, None]
        frames = np.concatenate([a, frames], axis=1)
    return frames.astype(np.float32, copy=False)


class Field2DDataset(PDEBenchDataset):
    """Trajectories ``(N, T, X, Y)`` of one or many 2-D files, read lazily; ``reduced_resolution`` keeps every
    r-th point on both axes, ``reduced_resolution_t`` every rt-th frame. ``nu`` overrides the files' viscosity
    (needed for a ``.mat`` file whose name does not carry it)."""

    dims = 2

    def __init__(self, paths, *, reduced_resolution: int = 1, reduced_resolution_t: int = 1,
                 nu: float | None = None):
        r, rt = int(reduced_resolution), int(reduced_resolution_t)
        if r < 1 or rt < 1:
            raise ConfigError(f"reduced_resolution and reduced_resolution_t must be >= 1 (got {r}, {rt})")
        self._r, self._rt = r, rt
        self._files = expand_paths(paths)
        metas = [describe(p, nu) for p in self._files]
        first = metas[0]
        for m in metas[1:]:
            if (m["nt"], m["nx"], m["ny"]) != (first["nt"], first["nx"], first["ny"]):
                raise DataError(f"{m['path']}: trajectories are (N, {m['nt']}, {m['nx']}, {m['ny']}) but "
                                f"{first['path']} has (N, {first['nt']}, {first['nx']}, {first['ny']}); all files "
                                f"must share frames and grid")
            if not math.isclose(m["dt"], first["dt"], rel_tol=1e-4):
                raise DataError(f"{m['path']}: frame step {m['dt']:g} differs from {first['path']} ({first['dt']:g})")
        self._metas = [{k: v for k, v in m.items() if k not in ("x", "y")} for m in metas]
        for m in self._metas:
            m.setdefault("advective_scale", None)
        self._x_full, self._y_full = first["x"], first["y"]
        self._nt_full, self._nx_full, self._ny_full = first["nt"], first["nx"], first["ny"]
        self._dt_frame, self._t0 = first["dt"], first["t0"]
        self._counts = np.array([m["n"] for m in metas], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])
        self._nu = np.concatenate([np.full(m["n"], m["nu"], np.float32) for m in metas])
        self._handles: dict[int, object] = {}
        self._lock = threading.Lock()

    def _file(self, file_index: int):
        with self._lock:
            h = self._handles.get(file_index)
            if h is None:
                h = self._handles[file_index] = _open(self._files[file_index])
        return h

    @property
    def ny(self) -> int:
        return len(range(0, self._ny_full, self._r))

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return self.nx, self.ny

    @property
    def layouts(self) -> list[str]:
        return [m["layout"] for m in self._metas]

    @property
    def y(self) -> np.ndarray:
        """``(ny,)`` float32 grid points of the reduced grid on the y axis."""
        return self._y_full[::self._r].astype(np.float32)

    @property
    def x_min(self) -> float:                     # grid points i / X: the torus starts at the first point
        return float(self._x_full[0])

    @property
    def x_max(self) -> float:
        return float(self._x_full[0] + self._nx_full * self.dx_full)

    @property
    def t(self) -> np.ndarray:
        """``(nt,)`` float32 frame times ``t0 + k * dt`` (``t0`` = the file's first time, 0 for generated files)."""
        return (self._t0 + np.arange(self.nt, dtype=np.float64) * self.dt).astype(np.float32)

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        fp.update(dims=2, layouts=self.layouts, shape_full=[self._nt_full, self._nx_full, self._ny_full],
                  shape=[self.nt, self.nx, self.ny], t0=self._t0)
        return fp

    def read(self, indices) -> np.ndarray:
        """``(len(indices), nt, nx, ny)`` float32 trajectories, in the order given (duplicates allowed)."""
        idx = self._check_indices(indices)
        out = np.empty((idx.size, self.nt, self.nx, self.ny), dtype=np.float32)
        if idx.size == 0:
            return out
        file_idx, local = self.file_of(idx)
        for fi in np.unique(file_idx):
            where = np.flatnonzero(file_idx == fi)
            wanted, inverse = np.unique(local[where], return_inverse=True)
            out[where] = self._read_sorted(int(fi), wanted)[inverse]
        return out

    def _read_sorted(self, file_index: int, wanted: np.ndarray) -> np.ndarray:
        try:
            return read_block(self._file(file_index), self._metas[file_index], wanted, self._rt, self._r)
        except H5_ERRORS as e:
            raise DataError(f"{self._files[file_index]}: cannot read ({_short(e)}); is the file truncated or "
                            f"corrupt?") from e

    def _tensor(self, file_index: int):
        raise NotImplementedError("2-D files are read by layout (read_block), not through one 'tensor' dataset")


def open_dataset(paths, *, reduced_resolution: int = 1, reduced_resolution_t: int = 1, nu: float | None = None):
    """The reader for the files' dimension: ``PDEBenchDataset`` (1-D) or :class:`Field2DDataset` (2-D)."""
    files = expand_paths(paths)
    dims = {p: file_dims(p) for p in files}
    if len(set(dims.values())) > 1:
        one = next(p for p, d in dims.items() if d == 1)
        two = next(p for p, d in dims.items() if d == 2)
        raise DataError(f"{two}: is 2-D data but {one} is 1-D; give files of one dimension")
    if dims[files[0]] == 1:
        if nu is not None:
            raise ConfigError("nu= overrides the viscosity of 2-D .mat files only; 1-D files carry attribute Nu")
        return PDEBenchDataset(files, reduced_resolution=reduced_resolution,
                               reduced_resolution_t=reduced_resolution_t)
    return Field2DDataset(files, reduced_resolution=reduced_resolution, reduced_resolution_t=reduced_resolution_t,
                          nu=nu)

