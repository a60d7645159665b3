"""Lazy reader for PDEBench-layout 1D files (``tensor`` (N, T, X), ``x-coordinate``, ``t-coordinate``, attr ``Nu``).

* One or many files or directories (a directory = every ``*.hdf5`` / ``*.h5`` inside, sorted); several files
  (e.g. one per viscosity) become one dataset of trajectories with a per-trajectory ``nu``.
* Reads are per request and sliced inside h5py (``tensor[sorted_idx, ::rt, ::r]``): a file is never loaded
  whole. Files are opened lazily and the object pickles without open handles (Ray workers, subprocesses).
* Frame ``k`` of the reduced grid is at ``t_k = k * dt`` with ``dt = 0.01 * reduced_resolution_t`` (0.01 taken
  from ``t-coordinate[1] - t-coordinate[0]``). The frame count comes from ``tensor``, never from
  ``len(t-coordinate)``, which PDEBench writes one too long (202 for 201 frames).
* Every defect (missing file, key or attribute, wrong rank, zero samples, files that do not match) is a
  ``DataError`` naming the file and key.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from ups_jax.errors import ConfigError, DataError

TENSOR_KEY = "tensor"
X_KEY = "x-coordinate"
T_KEY = "t-coordinate"
NU_ATTR = "Nu"
SUFFIXES = (".hdf5", ".h5")
DEFAULT_DT = 0.01
_CACHE_BYTES = 64 * 2 ** 20
# what h5py raises on corrupt files (KeyError for a damaged object header, OSError for I/O, ...)
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)
_NU_IN_NAME = re.compile(r"_Nu([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def expand_paths(paths: str | Path | Iterable[str | Path], suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """Files as given, directories as their sorted files with one of ``suffixes`` (default ``*.hdf5``/``*.h5``);
    a missing path is a ``DataError``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            inside = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
            if not inside:
                raise DataError(f"{p}: directory has no {'/'.join(suffixes)} files")
            files.extend(inside)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    if not files:
        raise DataError("no data files given")
    return files


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r", rdcc_nbytes=_CACHE_BYTES)
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5 ({_short(e)}); is it truncated or not an HDF5 file?") from e


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _file_meta(path: Path) -> dict:
    """Shape/coordinates/Nu of one file, validated (``DataError`` naming the file and key)."""
    try:
        return _file_meta_unchecked(path)
    except H5_ERRORS as e:
        raise DataError(f"{path}: cannot read ({_short(e)}); the file is corrupt or truncated "
                        f"(check it: python -m ups_jax.driver validate-data {path})") from e


# A 2-D file (ups_jax.data.ns2d_reader's layouts) given where 1-D data is expected: what to do instead.
TWO_D_FIX = ("a 1-D config cannot use 2-D data: give a 1-D PDEBench file (tensor (N, T, X)), or read it with "
             "ups_jax.data.ns2d_reader.open_dataset (2-D configs)")


def _file_meta_unchecked(path: Path) -> dict:
    with _open(path) as f:
        if TENSOR_KEY not in f and "u" in f:
            raise DataError(f"{path}: is 2-D data in the FNO .mat layout (keys {sorted(f.keys())}); {TWO_D_FIX}")
        for key in (TENSOR_KEY, X_KEY):
            if key not in f:
                raise DataError(f"{path}: missing dataset '{key}' (PDEBench layout: tensor, x-coordinate, "
                                f"t-coordinate, attribute Nu); found {sorted(f.keys())}")
        d = f[TENSOR_KEY]
        if hasattr(d, "shape") and d.ndim == 4 and "y-coordinate" in f:
            raise DataError(f"{path}: dataset '{TENSOR_KEY}' must be (samples, time, x); got shape {d.shape}: "
                            f"2-D data (samples, time, x, y); {TWO_D_FIX}")
        if not hasattr(d, "shape") or d.ndim != 3:
            raise DataError(f"{path}: dataset '{TENSOR_KEY}' must be (samples, time, x); got shape "
                            f"{getattr(d, 'shape', 'a group')}")
        if d.dtype.kind != "f":
            raise DataError(f"{path}: dataset '{TENSOR_KEY}' must hold floats, got dtype {d.dtype}")
        n, nt, nx = (int(s) for s in d.shape)
        if n == 0:
            raise DataError(f"{path}: dataset '{TENSOR_KEY}' has zero samples")
        if nt < 1 or nx < 2:
            raise DataError(f"{path}: dataset '{TENSOR_KEY}' has shape {d.shape}; need >= 1 frame and >= 2 cells")
        x = np.asarray(f[X_KEY][()], dtype=np.float64).reshape(-1)
        if x.size != nx:
            raise DataError(f"{path}: '{X_KEY}' has {x.size} values but '{TENSOR_KEY}' has {nx} cells")
        if not np.all(np.diff(x) > 0):
            raise DataError(f"{path}: '{X_KEY}' is not strictly increasing")
        dt = DEFAULT_DT
        if T_KEY in f:
            t = np.asarray(f[T_KEY][:2], dtype=np.float64).reshape(-1)
            if t.size >= 2:
                dt = float(f"{t[1] - t[0]:.6g}")        # float32 0.0099999998 -> 0.01
                if not (np.isfinite(dt) and dt > 0):
                    raise DataError(f"{path}: '{T_KEY}' is not increasing ({t[0]}, {t[1]})")
        nu = _nu_of(f, path)
        chunked = d.chunks is not None
        # recorded by ups_jax.data.generate (absent in PDEBench's own files and in files made before it was)
        scale = float(f.attrs["advective_scale"]) if "advective_scale" in f.attrs else None
    return dict(path=path, n=n, nt=nt, nx=nx, x=x, dt=dt, nu=nu, chunked=chunked, size=path.stat().st_size,
                advective_scale=scale)


def _nu_of(f, path: Path) -> float:
    if NU_ATTR in f.attrs:
        try:
            nu = float(np.asarray(f.attrs[NU_ATTR]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError) as e:
            raise DataError(f"{path}: attribute '{NU_ATTR}' is not a number ({f.attrs[NU_ATTR]!r})") from e
        return nu
    match = _NU_IN_NAME.search(path.name)
    if match:                                 # e.g. a converted file that lost its attributes
        return float(match.group(1))
    raise DataError(f"{path}: missing attribute '{NU_ATTR}' (the viscosity); add it with "
                    f"h5py.File(path, 'a').attrs['{NU_ATTR}'] = value")


class PDEBenchDataset:
    """Trajectories of one or many PDEBench 1D files, read lazily and subsampled in space and time.

    ``reduced_resolution`` keeps every r-th cell, ``reduced_resolution_t`` every rt-th frame (as PDEBench's
    ``tensor[:, ::rt, ::r]``). Global trajectory index = position in the concatenation of the files, in the
    order of ``expand_paths(paths)``.
    """

    def __init__(self, paths, *, reduced_resolution: int = 1, reduced_resolution_t: int = 1):
        r, rt = int(reduced_resolution), int(reduced_resolution_t)
        if r < 1 or rt < 1:
            raise ConfigError(f"reduced_resolution and reduced_resolution_t must be >= 1 (got {r}, {rt})")
        self._r, self._rt = r, rt
        self._files = expand_paths(paths)
        metas = [_file_meta(p) for p in self._files]
        first = metas[0]
        for m in metas[1:]:
            if (m["nt"], m["nx"]) != (first["nt"], first["nx"]):
                raise DataError(f"{m['path']}: '{TENSOR_KEY}' is (N, {m['nt']}, {m['nx']}) but {first['path']} "
                                f"is (N, {first['nt']}, {first['nx']}); all files must share frames and cells")
            if not np.allclose(m["x"], first["x"], rtol=0, atol=1e-5 * (abs(first["x"]).max() + 1e-12)):
                raise DataError(f"{m['path']}: '{X_KEY}' differs from {first['path']}; all files must share the grid")
            if not math.isclose(m["dt"], first["dt"], rel_tol=1e-4):
                raise DataError(f"{m['path']}: '{T_KEY}' step {m['dt']:g} differs from {first['path']} "
                                f"({first['dt']:g})")
        self._metas = [{k: v for k, v in m.items() if k != "x"} for m in metas]
        self._x_full = first["x"]
        self._nt_full, self._nx_full = first["nt"], first["nx"]
        self._dt_frame = first["dt"]
        self._counts = np.array([m["n"] for m in metas], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])
        self._nu = np.concatenate([np.full(m["n"], m["nu"], np.float32) for m in metas])
        self._handles: dict[int, object] = {}
        self._lock = threading.Lock()

    # ---- pickling: no open h5py handles ----
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        for h in getattr(self, "_handles", {}).values():
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing an already-invalid handle is harmless
                pass
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _tensor(self, file_index: int):
        with self._lock:
            h = self._handles.get(file_index)
            if h is None:
                h = self._handles[file_index] = _open(self._files[file_index])
        return h[TENSOR_KEY]

    # ---- properties ----
    def __len__(self) -> int:
        return self.num_trajectories

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    @property
    def num_trajectories(self) -> int:
        return int(self._offsets[-1])

    @property
    def trajectories_per_file(self) -> list[int]:
        return [int(c) for c in self._counts]

    @property
    def reduced_resolution(self) -> int:
        return self._r

    @property
    def reduced_resolution_t(self) -> int:
        return self._rt

    @property
    def nx(self) -> int:
        return len(range(0, self._nx_full, self._r))

    @property
    def nt(self) -> int:
        return len(range(0, self._nt_full, self._rt))

    @property
    def x(self) -> np.ndarray:
        """``(nx,)`` float32 cell centres of the reduced grid."""
        return self._x_full[::self._r].astype(np.float32)

    @property
    def dx_full(self) -> float:
        return float(self._x_full[1] - self._x_full[0])

    @property
    def x_min(self) -> float:
        return float(self._x_full[0] - 0.5 * self.dx_full)

    @property
    def x_max(self) -> float:
        return float(self.x_min + self._nx_full * self.dx_full)

    @property
    def dt(self) -> float:
        """Time between consecutive frames of the reduced data (0.01 * reduced_resolution_t for PDEBench)."""
        return float(self._dt_frame * self._rt)

    @property
    def t(self) -> np.ndarray:
        """``(nt,)`` float32 frame times ``k * dt`` (from the frame index, never from ``t-coordinate``)."""
        return (np.arange(self.nt, dtype=np.float64) * self.dt).astype(np.float32)

    @property
    def nu(self) -> np.ndarray:
        """``(num_trajectories,)`` float32 viscosity (PDEBench Nu) of every trajectory."""
        return self._nu.copy()

    def file_of(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Global indices -> (file index, index inside that file)."""
        idx = self._check_indices(indices)
        file_idx = np.searchsorted(self._offsets, idx, side="right") - 1
        return file_idx, idx - self._offsets[file_idx]

    def fingerprint(self) -> dict:
        """JSON-serialisable identity of the data (for checkpoint metadata and mismatch checks).

        Files are identified by name, size, trajectory count and Nu (and the ``advective_scale`` attribute when the
        file records one), not by their absolute path, so that a run resumes after the data (or the whole
        checkout) moved.
        """
        def file_entry(m):
            entry = {"name": m["path"].name, "size_bytes": int(m["size"]), "num_trajectories": int(m["n"]),
                     "nu": float(m["nu"])}
            if m["advective_scale"] is not None:
                entry["advective_scale"] = m["advective_scale"]
            return entry

        return {
            "files": [file_entry(m) for m in self._metas],
            "nu": sorted({float(m["nu"]) for m in self._metas}),
            "num_trajectories": self.num_trajectories,
            "shape_full": [self._nt_full, self._nx_full],
            "shape": [self.nt, self.nx],
            "reduced_resolution": self._r,
            "reduced_resolution_t": self._rt,
            "dt": self.dt,
            "x_min": self.x_min,
            "x_max": self.x_max,
        }

    # ---- reading ----
    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_trajectories):
            raise IndexError(f"trajectory index out of range [0, {self.num_trajectories}): "
                             f"{idx[(idx < 0) | (idx >= self.num_trajectories)][:5].tolist()}")
        return idx

    def read(self, indices) -> np.ndarray:
        """``(len(indices), nt, nx)`` float32 trajectories, in the order given (duplicates allowed)."""
        idx = self._check_indices(indices)
        out = np.empty((idx.size, self.nt, self.nx), dtype=np.float32)
        if idx.size == 0:
            return out
        file_idx, local = self.file_of(idx)
        for fi in np.unique(file_idx):
            where = np.flatnonzero(file_idx == fi)
            wanted, inverse = np.unique(local[where], return_inverse=True)     # sorted, unique: h5py needs it
            data = self._read_sorted(int(fi), wanted)
            out[where] = data[inverse]
        return out

    def _read_sorted(self, file_index: int, wanted: np.ndarray) -> np.ndarray:
        sl = (slice(None, None, self._rt), slice(None, None, self._r))
        try:
            d = self._tensor(file_index)
            if self._metas[file_index]["chunked"] or wanted.size == 1:
                # chunked datasets: fancy indexing is pathological (~17x slower); read sample by sample
                return np.stack([d[(int(i),) + sl] for i in wanted]).astype(np.float32, copy=False)
            if wanted[-1] - wanted[0] + 1 == wanted.size:                        # contiguous block
                return d[(slice(int(wanted[0]), int(wanted[-1]) + 1),) + sl].astype(np.float32, copy=False)
            return d[(wanted.tolist(),) + sl].astype(np.float32, copy=False)
        except H5_ERRORS as e:
            raise DataError(f"{self._files[file_index]}: cannot read '{TENSOR_KEY}' ({_short(e)}); "
                            f"is the file truncated or corrupt?") from e


def make_splits(n_per_file, test_fraction: float = 0.1, val_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Global trajectory indices of the test/val/train splits.

    Per file (``n_per_file``: a list of trajectory counts or a ``PDEBenchDataset``): test = the first
    ``floor(n * test_fraction)`` trajectories (PDEBench's test set), val = the next ``floor(n * val_fraction)``,
    train = the rest. Deterministic and disjoint by construction; an empty split is a ``DataError``.
    """
    if isinstance(n_per_file, PDEBenchDataset):
        counts, names = n_per_file.trajectories_per_file, [str(p) for p in n_per_file.files]
    else:
        counts = [int(n) for n in n_per_file]
        names = [f"file {i}" for i in range(len(counts))]
    test_fraction, val_fraction = float(test_fraction), float(val_fraction)
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ConfigError(f"need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1 "
                          f"(got {test_fraction}, {val_fraction})")
    splits: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    offset = 0
    for n, name in zip(counts, names):
        n_test = int(math.floor(n * test_fraction + 1e-9))
        n_val = int(math.floor(n * val_fraction + 1e-9))
        idx = np.arange(offset, offset + n, dtype=np.int64)
        splits["test"].append(idx[:n_test])
        splits["val"].append(idx[n_test:n_test + n_val])
        splits["train"].append(idx[n_test + n_val:])
        offset += n
    out = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in splits.items()}
    for k, v in out.items():
        if v.size == 0:
            raise DataError(f"the {k} split is empty ({sum(counts)} trajectories in {len(counts)} file(s), "
                            f"test_fraction={test_fraction}, val_fraction={val_fraction}); use more "
                            f"trajectories or larger fractions")
    return out


def compute_normalization(dataset: PDEBenchDataset, train_indices, *, chunk: int = 64) -> dict[str, float]:
    """Global mean/std of the (reduced) train trajectories only, streamed in chunks with float64 accumulation."""
    idx = np.sort(np.asarray(train_indices, dtype=np.int64).reshape(-1))
    if idx.size == 0:
        raise DataError("cannot compute normalisation statistics: the train split is empty")
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, idx.size, chunk):
        block = dataset.read(idx[start:start + chunk]).astype(np.float64)
        n_b = block.size
        mean_b = float(block.mean())
        m2_b = float(np.square(block - mean_b).sum())
        delta = mean_b - mean                                 # Chan et al. parallel update
        total = count + n_b
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * count * n_b / total
        count = total
    std = math.sqrt(m2 / count)
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise DataError("normalisation statistics are not finite: the train data holds NaN/Inf "
                        "(run: python -m ups_jax.driver validate-data PATH)")
    if std == 0.0:
        raise DataError(f"the train split is constant (every value {mean:g}); cannot normalise")
    return {"mean": float(mean), "std": float(std)}
