"""The built-in 2-D dataset of a 2-D config (``data.dims = 2``): ``cfg.data.default_dir/2D_NS_Vorticity_Nu{nu}.hdf5``
made by the ns2d generator (``ups_jax.data.ns2d_generate``) from ``cfg.data.generate`` (nu, samples, frames,
solve_grid, grid, max_dt, forcing_amplitude, seed) on first use; as for Burgers (data/default.py) it is never
overwritten, and an existing file made with other parameters (its HDF5 attributes) is refused with the fix."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ups_jax.errors import DataError

KEYS = ("nu", "samples", "frames", "solve_grid", "grid", "max_dt", "forcing_amplitude", "seed")


def default_path(cfg) -> Path:
    from ups_jax.data.ns2d_generate import filename
    from ups_jax.paths import project_path

    return project_path(cfg.data.default_dir) / filename(cfg.data.generate.nu)


def wanted(cfg) -> dict:
    from ups_jax.data.ns2d_generate import auto_max_dt

    g = cfg.data.generate
    max_dt = float(g.get("max_dt", 0.0) or auto_max_dt(int(g.solve_grid)))
    return {"nu": float(g.nu), "samples": int(g.samples), "frames": int(g.frames), "solve_grid": int(g.solve_grid),
            "grid": int(g.grid), "max_dt": max_dt, "forcing_amplitude": float(g.forcing_amplitude),
            "seed": int(g.seed)}


def file_parameters(path: Path) -> dict | None:
    """The generation parameters recorded in ``path`` (None when ns2d_generate did not write it)."""
    import h5py

    from ups_jax.data.ns2d_generate import GENERATOR
    from ups_jax.data.pdebench import H5_ERRORS

    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("generator") != GENERATOR:
                return None
            n, t = f["tensor"].shape[:2]
            # the solver's step is frame_dt / ceil(frame_dt / max_dt): the config's max_dt is compared through it
            return {"nu": float(a["Nu"]), "samples": int(n), "frames": int(t), "solve_grid": int(a["solve_grid"]),
                    "grid": int(a["grid"]), "dt": float(a["dt"]), "forcing_amplitude": float(a["forcing_amplitude"]),
                    "seed": int(a["seed"])}
    except H5_ERRORS as e:
        raise DataError(f"{path}: cannot read the default dataset ({str(e).splitlines()[0] if str(e) else e}); "
                        f"move it aside (mv {path} {path}.bad) to regenerate it") from e


def mismatch(cfg, path: Path | None = None) -> str | None:
    """None if the existing default file was made as ``cfg.data.generate`` asks; else the one-line problem + fix."""
    from ups_jax.data import ns2d

    path = path or default_path(cfg)
    want, have = wanted(cfg), file_parameters(path)
    aside = f"move it aside (mv {path} {path}.old; nothing is deleted) and the next run regenerates it"
    if have is None:
        return (f"{path}: not made by ups_jax's ns2d generator (no 'generator' attribute); {aside}, or pass it "
                f"explicitly with --config.data.paths={path}")
    want = dict(want, dt=1.0 / ns2d.steps_per_frame(1.0, want.pop("max_dt")))
    diffs = [k for k in want if not math.isclose(have[k], want[k], rel_tol=1e-9, abs_tol=1e-12)]
    if not diffs:
        return None
    detail = ", ".join(f"{k}={have[k]:g} (config {want[k]:g})" for k in diffs)
    return f"{path}: the existing default dataset differs from data.generate in {detail}; {aside}"


def ensure(cfg, *, progress: bool = True) -> list[str]:
    """Generates the default 2-D dataset if missing; returns its path (refuses a file made otherwise)."""
    from ups_jax.data.ns2d_generate import generate_ns2d_file

    path = default_path(cfg)
    if path.exists():
        problem = mismatch(cfg, path)
        if problem:
            raise DataError(problem)
        return [str(path)]
    g = wanted(cfg)
    print(f"generating the default dataset {path}: {g['samples']} 2-D Navier-Stokes trajectories, nu={g['nu']}, "
          f"{g['frames']} frames, solved at {g['solve_grid']}^2, stored at {g['grid']}^2, seed={g['seed']} "
          f"(done once)", flush=True)
    t0 = time.perf_counter()
    try:
        generate_ns2d_file(path.parent, samples=g["samples"], frames=g["frames"], nu=g["nu"],
                           solve_grid=g["solve_grid"], grid=g["grid"], max_dt=g["max_dt"],
                           forcing_amplitude=g["forcing_amplitude"], seed=g["seed"], overwrite=False,
                           progress=progress)
    except DataError:
        if not path.exists():     # "already exists": another process finished it first
            raise
    print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return [str(path)]
