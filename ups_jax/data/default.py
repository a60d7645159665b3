"""The data a run trains on: ``cfg.data.paths`` if given, else the built-in default dataset (generated once).

The default dataset is ``cfg.data.default_dir/1D_Burgers_Sols_Nu{nu}.hdf5`` made by the JAX PDEBench solver from
``cfg.data.generate`` (nu, samples, nx, seed, x_min, x_max). It is generated only when missing and never
overwritten: delete the file to regenerate it. A relative ``default_dir`` is relative to the project root
(``ups_jax.paths``), not to the current directory: every process on a node (Ray trials run in their own working
directories) shares the one copy.
"""

from __future__ import annotations

import time
from pathlib import Path

from ups_jax.errors import DataError


def default_data_path(cfg) -> Path:
    from ups_jax.data.generate import burgers_filename
    from ups_jax.paths import project_path

    return project_path(cfg.data.default_dir) / burgers_filename(cfg.data.generate.nu)


def ensure_default_data(cfg, *, progress: bool | None = None) -> list[str]:
    """Returns the data paths of ``cfg``; generates the default dataset first if it is used and missing.

    ``progress``: show a progress bar while generating (default: ``cfg.logging.progress`` if set, else True).
    """
    paths = [str(p) for p in (cfg.data.paths or ())]
    if paths:
        for p in paths:
            if not Path(p).exists():
                raise DataError(f"{p}: data path not found; fix --config.data.paths (HDF5 files or directories), "
                                f"or set it to () to use the generated default dataset")
        return paths
    path = default_data_path(cfg)
    if path.exists():
        return [str(path)]
    from ups_jax.data.generate import generate_burgers_file

    if progress is None:
        progress = bool(cfg.get("logging", {}).get("progress", True))
    g = cfg.data.generate
    print(f"generating the default dataset {path}: {g.samples} Burgers trajectories, nu={g.nu}, nx={g.nx}, "
          f"seed={g.seed}, x in [{g.x_min}, {g.x_max}) (PDEBench scheme; done once)", flush=True)
    t0 = time.perf_counter()
    try:
        generate_burgers_file(path.parent, nu=g.nu, samples=g.samples, nx=g.nx, seed=g.seed, x_min=g.x_min,
                              x_max=g.x_max, overwrite=False, progress=progress)
    except DataError:
        if not path.exists():     # "already exists" means another process finished it first: use that one
            raise
    print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return [str(path)]
