"""Runs PDEBench's own 1D Burgers generator (the ``pdebench`` 0.1.0 wheel, a test-only dependency installed without
its dependencies) and writes its output in PDEBench's HDF5 layout, as PDEBench's ``Data_Merge.transform`` does.

    python tests/pdebench_reference.py OUT_DIR --nu 0.01 --nx 128 --samples 4 --frames 21

The generator's ``main`` (``data_gen_NLE/BurgersEq/burgers_multi_solution_Hydra.py``, the code before PDEBench
commit fd12554: flux u^2, no outer 1/2) is a Hydra entry point whose solver (``evolve``, ``update``, ``flux``) is
defined inside it, so it is called as it is, with stand-ins for ``hydra`` and ``omegaconf`` (not installed) and
a config object holding what its YAML files would. It generates its own initial states (``init_multi``) and
writes ``.npy`` files; this script turns them into ``OUT_DIR/1D_Burgers_Sols_Nu{nu}.hdf5`` (tensor, x-coordinate,
t-coordinate, attribute Nu). Run in its own process: the generator imports a top-level module named ``utils``.

Note: the generator file carries NEC Laboratories Europe's research-only license header (the wheel's README says
"MIT licensed, except where otherwise stated"); it is called here, never copied into this repository.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

MODULE = "pdebench.data_gen.data_gen_NLE.BurgersEq.burgers_multi_solution_Hydra"


def _stub_hydra(cwd: Path) -> None:
    hydra = types.ModuleType("hydra")
    hydra.main = lambda **_: (lambda f: f)                         # the undecorated function
    hydra.utils = types.SimpleNamespace(get_original_cwd=lambda: str(cwd))
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.DictConfig = omegaconf.OmegaConf = object
    sys.modules.update({"hydra": hydra, "omegaconf": omegaconf})


def run_pdebench(out_dir: Path, *, nu: float, nx: int, samples: int, frames: int, x_min: float = -1.0,
                 x_max: float = 1.0, init_key: int = 2022) -> Path:
    import h5py

    spec = importlib.util.find_spec(MODULE)
    if spec is None:
        raise SystemExit("pdebench is not installed: pip install --no-deps --ignore-requires-python pdebench==0.1.0")
    sys.path.insert(0, str(Path(spec.origin).parents[1]))          # its ``from utils import ...``
    work = out_dir / "pdebench_npy"
    work.mkdir(parents=True, exist_ok=True)
    _stub_hydra(work)
    gen = importlib.import_module(MODULE)
    dt_save = 0.01
    multi = types.SimpleNamespace(xL=x_min, xR=x_max, nx=nx, show_steps=100, ini_time=0.0,
                                  fin_time=round(dt_save * (frames - 1), 10), dt_save=dt_save, CFL=0.25,
                                  if_rand_param=False, epsilon=nu, numbers=samples, init_key=init_key, save="")
    gen.main(types.SimpleNamespace(multi=multi))
    uu = np.load(work / f"1D_Burgers_Sols_Nu{str(nu)[:5]}.npy")
    out = out_dir / f"1D_Burgers_Sols_Nu{nu}.hdf5"
    with h5py.File(out, "w") as f:                                 # as Data_Merge.transform
        f.create_dataset("tensor", data=uu.reshape(samples, frames, nx).astype(np.float32))
        f.create_dataset("x-coordinate", data=np.load(work / "x_coordinate.npy"))
        f.create_dataset("t-coordinate", data=np.load(work / "t_coordinate.npy"))
        f.attrs["Nu"] = nu
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--nu", type=float, default=0.01)
    p.add_argument("--nx", type=int, default=128)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--frames", type=int, default=21)
    a = p.parse_args()
    print(run_pdebench(a.out_dir, nu=a.nu, nx=a.nx, samples=a.samples, frames=a.frames))
