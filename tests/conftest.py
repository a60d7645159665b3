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


@pytest.fixture(scope="session")
def test_run(tmp_path_factory, burgers_file):
    """One finished ``configs/burgers32.py:test`` run on ``burgers_file`` (codec + operator + test evaluation),
    trained in-process once per session: ``(workdir, cfg, results)``. Treat as read-only (copy it to modify)."""
    from pathlib import Path

    from ups_jax.config import load_config
    from ups_jax.training.pipeline import train_and_evaluate

    workdir = tmp_path_factory.mktemp("run") / "w"
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "burgers32.py") + ":test")
    results = train_and_evaluate(cfg, workdir, data_paths=[burgers_file])
    return workdir, cfg, results


# ---- JAX persistent compilation cache for the whole test session (added for tests/test_training.py) ----
# The training/CLI tests compile the same tiny programs many times (in-process and in subprocesses); with a
# session cache each distinct program is compiled once. Subprocesses inherit it through the JAX_* variables.
@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    import os

    import jax

    path = str(tmp_path_factory.mktemp("jax_cache"))
    env = {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # if anything compiled before this fixture, the cache was initialised as "off": re-initialise
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
