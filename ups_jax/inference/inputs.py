"""What ``python -m ups_jax.infer`` reads: the initial states of an input file (1-D PDEBench, 2-D PDEBench or FNO
``.mat``, or ``.npy``) checked against the run's grid, and the output points it is asked for (``--x-query`` /
``--nx-out``). Every defect is one ``DataError`` / ``ConfigError`` line naming the file or flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ups_jax.errors import ConfigError, DataError



def _reduction(have: float, want: float, what: str, path) -> int:
    """Integer stride mapping ``have`` to ``want`` (cells: have/want; time: want/have)."""
    k = have / want
    if k < 1 - 1e-6 or abs(k - round(k)) > 1e-4:
        raise DataError(f"{path}: {what}")
    return int(round(k))


def _read_npy(path: Path, grid: tuple[int, ...], field: str, dt: float, nu_arg, train_nus):
    """A ``.npy`` of initial states on the training grid: (N, *grid), (N, T, *grid) or (N, T, *grid, 1); ν from
    ``--nu`` or the run's single training ν."""
    a = np.load(path)
    d = len(grid)
    shapes = " or ".join(f"({', '.join(f)})" for f in (("N", *"XY"[:d]), ("N", "T", *"XY"[:d]),
                                                       ("N", "T", *"XY"[:d], "1")))
    if a.ndim == d + 3:
        if a.shape[-1] != 1:
            raise DataError(f"{path}: {a.shape[-1]} channels but the model has 1 ({field}); pass {shapes}")
        a = a[..., 0]
    if a.ndim == d + 1:
        a = a[:, None]
    if a.ndim != d + 2:
        raise DataError(f"{path}: array of shape {a.shape}; expected {shapes}")
    if a.shape[2:] != tuple(grid):
        have = f"{a.shape[-1]} cells" if d == 1 else f"a {'x'.join(map(str, a.shape[2:]))} grid"
        raise DataError(f"{path}: {have} but the model was trained on {'x'.join(map(str, grid))}; give the input "
                        f"on the training grid")
    if nu_arg is None and len(set(train_nus)) != 1:
        raise ConfigError(f"{path}: .npy input has no ν; pass --nu")
    nu = float(nu_arg if nu_arg is not None else train_nus[0])
    return a.astype(np.float32), np.full(a.shape[0], nu, np.float32), dt


def _read_all(ds, nu_arg):
    """Every trajectory of an opened (reduced) dataset → (frames, ν, dt); the dataset is closed."""
    try:
        frames = ds.read(np.arange(ds.num_trajectories))
        nu = ds.nu if nu_arg is None else np.full(ds.num_trajectories, nu_arg, np.float32)
        return frames, nu, ds.dt
    finally:
        ds.close()


def _query_values(q: str) -> np.ndarray:
    """``--x-query``: a ``.npy`` file or comma-separated numbers, as float64."""
    try:
        v = np.load(q) if q.endswith(".npy") else np.array([float(x) for x in q.split(",") if x.strip()])
    except (OSError, ValueError) as e:
        raise ConfigError(f"--x-query={q!r}: cannot read points ({e})") from e
    return np.asarray(v, np.float64)


def read_input(path: Path, *, grid_x: np.ndarray, dt: float, nu_arg, train_nus):
    """→ (frames (N, T, nx) physical float32, ν (N,), dt of the frames). Checks grid, time step and channels."""
    nx = len(grid_x)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    if path.suffix == ".npy":
        return _read_npy(path, (nx,), "Burgers u", dt, nu_arg, train_nus)
    from ups_jax.data.ns2d_reader import file_dims
    from ups_jax.data.pdebench import PDEBenchDataset

    if file_dims(path) != 1:
        raise DataError(f"{path}: 2-D data but the model was trained on 1-D data; give a 1-D PDEBench file")
    probe = PDEBenchDataset([path])
    try:
        r = _reduction(probe.nx, nx, f"{probe.nx} cells but the model was trained on {nx} (or a grid it was "
                                     f"reduced from by an integer factor)", path)
        rt = _reduction(dt, probe.dt, f"frames every {probe.dt:g}, the model steps {dt:g}; need an integer "
                                      f"multiple", path)
        if not np.allclose(probe.x[::r], grid_x, rtol=0, atol=1e-4 * (np.abs(grid_x).max() + 1e-12)):
            raise DataError(f"{path}: x-coordinate (every {r}th of {probe.nx} cells) differs from the training "
                            f"grid ({nx} points on [{grid_x[0]:g}, {grid_x[-1]:g}])")
    finally:
        probe.close()
    return _read_all(PDEBenchDataset([path], reduced_resolution=r, reduced_resolution_t=rt), nu_arg)


def output_points(args, *, grid_x: np.ndarray, x_min: float, x_max: float) -> np.ndarray | None:
    """Physical output coordinates, or None for the training grid."""
    if args.x_query and args.nx_out:
        raise ConfigError("give either --x-query or --nx-out, not both")
    if args.nx_out:
        if args.nx_out < 1:
            raise ConfigError(f"--nx-out={args.nx_out} must be >= 1")
        L = x_max - x_min
        return (x_min + (np.arange(args.nx_out) + 0.5) * L / args.nx_out).astype(np.float64)
    if args.x_query:
        xs = _query_values(args.x_query).reshape(-1)
        if xs.size == 0 or np.any(xs < x_min) or np.any(xs > x_max):
            raise ConfigError(f"--x-query: {xs.size} point(s); all must lie in the domain [{x_min:g}, {x_max:g}]")
        return xs
    return None


def read_input_2d(path: Path, *, grid_x: np.ndarray, grid_y: np.ndarray, dt: float, nu_arg, train_nus):
    """2-D :func:`read_input`: → (frames (N, T, X, Y) physical float32, ν (N,), dt of the frames)."""
    shape = (len(grid_x), len(grid_y))
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    if path.suffix == ".npy":
        return _read_npy(path, shape, "vorticity", dt, nu_arg, train_nus)
    from ups_jax.data.ns2d_reader import Field2DDataset, file_dims

    if file_dims(path) != 2:
        raise DataError(f"{path}: 1-D data but the model was trained on 2-D data; give a 2-D file (the 2-D "
                        f"PDEBench layout or the FNO .mat)")
    probe = Field2DDataset([path], nu=nu_arg)
    try:
        r = _reduction(probe.nx, shape[0], f"{probe.nx}x{probe.ny} grid but the model was trained on "
                                           f"{shape[0]}x{shape[1]} (or a grid reduced from it by an integer factor)",
                       path)
        if probe.ny != r * shape[1]:
            raise DataError(f"{path}: {probe.nx}x{probe.ny} grid is not the training grid {shape[0]}x{shape[1]} "
                            f"reduced by one integer factor on both axes")
        rt = _reduction(dt, probe.dt, f"frames every {probe.dt:g}, the model steps {dt:g}; need an integer "
                                      f"multiple", path)
        for name, have, want in (("x", probe.x[::r], grid_x), ("y", probe.y[::r], grid_y)):
            if not np.allclose(have, want, rtol=0, atol=1e-4 * (np.abs(want).max() + 1e-12)):
                raise DataError(f"{path}: {name}-coordinate (every {r}th of its points) differs from the training "
                                f"grid ({len(want)} points on [{want[0]:g}, {want[-1]:g}])")
    finally:
        probe.close()
    return _read_all(Field2DDataset([path], reduced_resolution=r, reduced_resolution_t=rt, nu=nu_arg), nu_arg)


def output_points_2d(args, *, x_min: float, x_max: float, grid: tuple[int, int]):
    """2-D output: None (the training grid) or (points (Q, 2) physical, output shape (M, M) or (Q,), the points
    in the model's [0, 1) coordinates). The 2-D data's grid points are ``x_min + i L / X`` while the model's
    coordinates are cell centres ``(i + 0.5) / X`` (data/grids.py ``mesh01``): a point is shifted by half a
    training cell, so the training grid's own points decode exactly where the grid rollout predicts."""
    if args.x_query and args.nx_out:
        raise ConfigError("give either --x-query or --nx-out, not both")
    L = x_max - x_min
    if args.nx_out:
        if args.nx_out < 1:
            raise ConfigError(f"--nx-out={args.nx_out} must be >= 1")
        axis = x_min + np.arange(args.nx_out) * L / args.nx_out
        pts = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        shape = (args.nx_out, args.nx_out)
    elif args.x_query:
        pts = _query_values(args.x_query)
        if pts.ndim == 1 and pts.size % 2 == 0:
            pts = pts.reshape(-1, 2)
        if pts.ndim != 2 or pts.shape[-1] != 2 or pts.shape[0] == 0:
            raise ConfigError(f"--x-query: 2-D points are (Q, 2) in a .npy or x1,y1,x2,y2,...; got shape "
                              f"{pts.shape}")
        if np.any(pts < x_min) or np.any(pts > x_max):
            raise ConfigError(f"--x-query: {len(pts)} point(s); all must lie in the domain [{x_min:g}, {x_max:g}]²")
        shape = (len(pts),)
    else:
        return None
    q01 = ((pts - x_min) / L + 0.5 / np.asarray(grid, np.float64)) % 1.0
    return pts, shape, q01
