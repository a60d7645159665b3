"""The data a run trains on: ``cfg.data.paths`` if given, else the built-in default dataset (generated once).

The default dataset is ``cfg.data.default_dir/1D_Burgers_Sols_Nu{nu}.hdf5`` made by the JAX PDEBench solver from
``cfg.data.generate`` (nu, samples, nx, seed, x_min, x_max, advective_scale). It is generated only when missing
and never overwritten or deleted. An existing file made with other generation parameters (recorded as HDF5
attributes by ``ups_jax.data.generate``) is refused with the exact fix, never silently reused: files made before
the attributes existed (no ``advective_scale``) used the flux u^2/2 (``advective_scale=1``).
A relative ``default_dir`` is relative to the project root (``ups_jax.paths``), not to the current directory:
every process on a node (Ray trials run in their own working directories) shares the one copy.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ups_jax.errors import DataError

# what files written before the generation attributes existed were made with
_LEGACY_ADVECTIVE_SCALE = 1.0


def _two_d(cfg) -> bool:
    from ups_jax.data.grids import config_dims

    return config_dims(cfg) == 2


def default_data_path(cfg) -> Path:
    if _two_d(cfg):                       # data.dims = 2: the ns2d generator's file (data/default_ns2d.py)
        from ups_jax.data.default_ns2d import default_path

        return default_path(cfg)
    from ups_jax.data.generate import burgers_filename
    from ups_jax.paths import project_path

    return project_path(cfg.data.default_dir) / burgers_filename(cfg.data.generate.nu)


def wanted_generation(cfg) -> dict:
    """The generation parameters the config asks for (the keys compared with the file's attributes)."""
    from ups_jax.data.generate import DEFAULT_ADVECTIVE_SCALE

    g = cfg.data.generate
    return {"nu": float(g.nu), "samples": int(g.samples), "nx": int(g.nx), "seed": int(g.seed),
            "x_min": float(g.x_min), "x_max": float(g.x_max),
            "advective_scale": float(g.get("advective_scale", DEFAULT_ADVECTIVE_SCALE))}


def file_generation(path: Path) -> dict | None:
    """The generation parameters recorded in ``path`` (None when it was not made by ups_jax's generator)."""
    import h5py

    from ups_jax.data.generate import GENERATOR
    from ups_jax.data.pdebench import H5_ERRORS

    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("generator") != GENERATOR:
                return None
            n, _, nx = f["tensor"].shape
            return {"nu": float(a["Nu"]), "samples": int(n), "nx": int(nx),
                    "seed": int(a["seed"]) if "seed" in a else None,
                    "x_min": float(a["x_min"]), "x_max": float(a["x_max"]),
                    "advective_scale": float(a.get("advective_scale", _LEGACY_ADVECTIVE_SCALE))}
    except H5_ERRORS as e:
        raise DataError(f"{path}: cannot read the default dataset ({str(e).splitlines()[0] if str(e) else e}); "
                        f"move it aside (mv {path} {path}.bad) to regenerate it") from e


def default_data_mismatch(cfg, path: Path | None = None) -> str | None:
    """None if the existing default file was made as ``cfg.data.generate`` asks; else the one-line problem + fix."""
    if _two_d(cfg):
        from ups_jax.data.default_ns2d import mismatch

        return mismatch(cfg, path)
    path = path or default_data_path(cfg)
    want = wanted_generation(cfg)
    have = file_generation(path)
    aside = f"move it aside (mv {path} {path}.old; nothing is deleted) and the next run regenerates it"
    if have is None:
        return (f"{path}: not made by ups_jax's generator (no 'generator' attribute), so its generation parameters "
                f"cannot be checked against data.generate; {aside}, or pass it explicitly with --data {path}")
    diffs = [k for k in want if have[k] is None or not math.isclose(have[k], want[k], rel_tol=1e-9, abs_tol=1e-12)]
    if not diffs:
        return None
    detail = ", ".join(f"{k}={have[k]:g} (config {want[k]:g})" if have[k] is not None else f"{k} unknown"
                       for k in diffs)
    keep = " ".join(f"--config.data.generate.{k}={have[k]:g}" for k in diffs if have[k] is not None)
    legacy = (" (made before PDEBench's released-file flux u^2 became the default)"
              if "advective_scale" in diffs and have["advective_scale"] == _LEGACY_ADVECTIVE_SCALE else "")
    return (f"{path}: the existing default dataset differs from data.generate in {detail}{legacy}; {aside}, "
            f"or use it as it is with {keep}")


def ensure_default_data(cfg, *, progress: bool | None = None) -> list[str]:
    """Returns the data paths of ``cfg``; generates the default dataset first if it is used and missing.

    ``progress``: show a progress bar while generating (default: ``cfg.logging.progress`` if set, else True).
    Raises ``DataError`` if an existing default file was made with other generation parameters.
    """
    paths = [str(p) for p in (cfg.data.paths or ())]
    if paths:
        for p in paths:
            if not Path(p).exists():
                raise DataError(f"{p}: data path not found; fix --config.data.paths (HDF5 files or directories), "
                                f"or set it to () to use the generated default dataset")
        return paths
    if progress is None:
        progress = bool(cfg.get("logging", {}).get("progress", True))
    if _two_d(cfg):
        from ups_jax.data.default_ns2d import ensure

        return ensure(cfg, progress=progress)
    path = default_data_path(cfg)
    if path.exists():
        problem = default_data_mismatch(cfg, path)
        if problem:
            raise DataError(problem)
        return [str(path)]
    from ups_jax.data.generate import generate_burgers_file, pde_string

    g = wanted_generation(cfg)
    print(f"generating the default dataset {path}: {g['samples']} Burgers trajectories, nu={g['nu']}, "
          f"nx={g['nx']}, seed={g['seed']}, x in [{g['x_min']}, {g['x_max']}), {pde_string(g['advective_scale'])} "
          f"(PDEBench scheme; done once)", flush=True)
    t0 = time.perf_counter()
    try:
        generate_burgers_file(path.parent, **g, overwrite=False, progress=progress)
    except DataError:
        if not path.exists():     # "already exists" means another process finished it first: use that one
            raise
    print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return [str(path)]
