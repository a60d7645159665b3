"""Shared pytest fixtures. Keep them session-scoped and tiny: the whole suite must stay fast on 2 CPU cores.

Data fixtures (generated once per session by the real JAX solver, PDEBench layout):

* ``burgers_file``: ``1D_Burgers_Sols_Nu0.01.hdf5``, 12 samples x 201 frames x 64 cells on (-1, 1), seed 2022,
  with PDEBench's 202-value ``t-coordinate``. Treat as read-only.
* ``burgers_dir``: a directory with that file and ``1D_Burgers_Sols_Nu0.1.hdf5`` (the same 12 ICs: PDEBench
  uses one seed for every Nu): two viscosities for multi-file / nu-conditioning tests. Treat as read-only.
"""

from __future__ import annotations

import shutil

import pytest

TINY = dict(samples=12, nx=64, x_min=-1.0, x_max=1.0, chunk=12, progress=False)


@pytest.fixture(scope="session")
def burgers_dir(tmp_path_factory):
    from ups_jax.data.generate import generate_burgers_file

    root = tmp_path_factory.mktemp("burgers_tiny")
    generate_burgers_file(root, nu=0.01, seed=2022, **TINY)
    generate_burgers_file(root, nu=0.1, seed=2022, **TINY)   # same ICs (as PDEBench)
    return root


@pytest.fixture(scope="session")
def burgers_file(burgers_dir, tmp_path_factory):
    # its own directory, so that passing its parent never picks up the second viscosity
    single = tmp_path_factory.mktemp("burgers_single") / "1D_Burgers_Sols_Nu0.01.hdf5"
    shutil.copyfile(burgers_dir / "1D_Burgers_Sols_Nu0.01.hdf5", single)
    return single
