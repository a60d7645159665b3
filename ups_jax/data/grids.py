"""The spatial dimension of a run: what the config declares (``data.dims``), what the files hold, and the grid
coordinates the models read, in one place for 1-D and 2-D.

Conventions (docs/models.md, "Grids in 1-D and 2-D"):

* a config declares its dimension with ``data.dims`` (1 when absent: every 1-D config written before 2-D existed);
* fields are ``(N, T, *S)`` with ``S = (X,)`` or ``(X, Y)``; the reader of the files' dimension is
  ``ns2d_reader.open_dataset``;
* grid coordinates in [0, 1) over the periodic domain: ``(X,)`` in 1-D (unchanged), ``(X, Y, 2)`` in 2-D (axis 0 = x).
  The models' coordinates put grid value i at the centre of its cell, ``(i + 0.5) / X`` (what PDEBench's 1-D cell
  centres give); the 2-D files' points are ``x_i = i / X`` (ns_2d.py), so a physical point p is the model
  coordinate ``p + 0.5 / X`` in 2-D (the decoder's raw path interpolates between cell centres);
  the decoder's query points are their flat list, ``(X,)`` or ``(X·Y, 2)`` (:func:`grid_points`).
"""

from __future__ import annotations

import math

import numpy as np

from ups_jax.errors import ConfigError, DataError


class GridMismatch(DataError):
    """The data do not fit the config's dimension or patches; ``problem`` and ``fix`` separately (the checks show
    them as a check's message and fix), ``str()`` is the whole line."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def config_dims(cfg) -> int:
    """1 or 2: the spatial dimension ``cfg.data.dims`` declares (1 when the key is absent)."""
    dims = int(cfg.data.get("dims", 1)) if "data" in cfg else 1
    if dims not in (1, 2):
        raise ConfigError(f"data.dims={dims}: choose 1 (e.g. configs/burgers32.py) or 2 (configs/ns2d.py)")
    return dims


def spatial_shape(dataset) -> tuple[int, ...]:
    """``(X,)`` for a 1-D reader, ``(X, Y)`` for a 2-D one (after the reader's reductions)."""
    shape = getattr(dataset, "spatial_shape", None)
    return tuple(int(s) for s in (shape if shape is not None else (dataset.nx,)))


def grid_size(grid) -> int | tuple[int, ...]:
    """What ``build_model`` takes as the grid: the int X in 1-D (as before 2-D existed), the tuple (X, Y) in 2-D."""
    grid = tuple(int(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))
    return grid[0] if len(grid) == 1 else grid


def mesh01(shape) -> np.ndarray:
    """Cell centres ``(i + 0.5) / n`` of a uniform grid in [0, 1): ``(X,)`` or ``(X, Y, 2)``."""
    axes = [(np.arange(n) + 0.5) / n for n in shape]
    if len(axes) == 1:
        return axes[0].astype(np.float32)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def grid_points(x01):
    """The flat list of grid points the decoder reads: ``(X,)`` unchanged in 1-D, ``(X·Y, 2)`` in 2-D."""
    return x01 if x01.ndim == 1 else x01.reshape(-1, x01.shape[-1])


def coords_dims(x01) -> int:
    """The spatial dimension of a coordinate array (``(X,)`` → 1, ``(X, Y, 2)`` → 2)."""
    return 1 if x01.ndim == 1 else int(x01.shape[-1])


def check_data_dims(cfg, dataset, where) -> None:
    """A 2-D file given to a 1-D config (or the reverse) is one ``DataError`` naming the file and the fix."""
    want, have = config_dims(cfg), len(spatial_shape(dataset))
    if want == have:
        return
    shape = "(N, T, X, Y)" if have == 2 else "(N, T, X)"
    fix = ("use a 2-D config (configs/ns2d.py) or give 1-D files" if have == 2 else
           "use a 1-D config (configs/burgers32.py) or give 2-D files (python -m ups_jax.data.generate ns2d)")
    raise GridMismatch(f"{where}: is {have}-D data {shape} but the config is {want}-D (data.dims={want})", fix)


def token_grid(latent_tokens: int, dims: int) -> tuple[int, ...]:
    """The token grid (the encoder's patches, models/spatial.py) of ``latent_tokens`` tokens in ``dims`` dimensions: ``(T,)`` or ``(√T, √T)``."""
    if dims == 1:
        return (int(latent_tokens),)
    side = math.isqrt(int(latent_tokens))
    if side ** dims != latent_tokens:
        raise ValueError(f"model.latent_tokens={latent_tokens} must be a perfect square in 2-D (a √T x √T token "
                         f"grid), e.g. {max(side, 1) ** 2} or {(side + 1) ** 2}")
    return (side,) * dims


def check_patches(cfg, grid, where) -> None:
    """The encoder's patches must tile the grid: a ``DataError`` naming the data, the grid and the keys to change."""
    m = cfg.model
    if str(m.get("kind", "ups")) != "ups":
        return
    grid = tuple(int(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))
    try:
        tg = token_grid(int(m.latent_tokens), len(grid))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    bad = [(n, t) for n, t in zip(grid, tg) if n % t]
    if bad:
        raise GridMismatch(f"{where}: grid {'x'.join(map(str, grid))} (after data.reduced_resolution="
                           f"{cfg.data.reduced_resolution}) is not divisible by the token grid "
                           f"{'x'.join(map(str, tg))} of model.latent_tokens={m.latent_tokens}",
                           f"choose a square model.latent_tokens whose root divides each axis (e.g. "
                           f"{_square_divisor(grid)}), or change data.reduced_resolution")


def _square_divisor(grid) -> int:
    """The largest t² (t ≤ 8) whose root t divides every axis of ``grid``."""
    return max(t * t for t in range(1, 9) if all(n % t == 0 for n in grid))


def open_run_dataset(cfg, paths):
    """The files as the reader of their dimension, refused with one line naming the file when their dimension is
    not the config's (``data.dims``) or the encoder's patches do not tile the grid. A 1-D config reads its files
    with ``PDEBenchDataset`` exactly as before 2-D existed (same errors for bad 1-D files)."""
    from ups_jax.data.ns2d_reader import expand_paths, file_dims, open_dataset
    from ups_jax.data.pdebench import PDEBenchDataset

    r, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    if config_dims(cfg) == 1:
        try:
            d = PDEBenchDataset(paths, reduced_resolution=r, reduced_resolution_t=rt)
        except DataError:
            for p in expand_paths(paths):            # a 2-D file among them: say that instead
                try:
                    two = file_dims(p) == 2
                except (DataError, OSError, KeyError, ValueError, TypeError):   # unreadable: the 1-D error stands
                    continue
                if two:
                    check_data_dims(cfg, _Dims2(), p)
            raise
    else:
        d = open_dataset(paths, reduced_resolution=r, reduced_resolution_t=rt)
    files = list(d.files)
    where = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
    check_data_dims(cfg, d, where)
    if config_dims(cfg) == 2:            # 1-D: the architecture checks and GridEncoder say it, as before 2-D
        check_patches(cfg, spatial_shape(d), where)
    return d


class _Dims2:
    spatial_shape = (0, 0)
