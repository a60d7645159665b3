"""The JAX environment of a Ray worker, set from the GPU share Ray assigned to it, before JAX starts a backend.

* ``gpus == 0``: ``JAX_PLATFORMS=cpu``. Ray 2.60 no longer blanks ``CUDA_VISIBLE_DEVICES`` for ``num_gpus=0``
  workers (ray issue #54868), so a CPU trial on a GPU node would otherwise see every GPU and JAX would
  preallocate 75 % of each.
* ``0 < gpus < 1`` (several trials share one GPU): the memory fraction JAX preallocates is that share
  (``MEMORY_SHARE`` of it, leaving room for each process's CUDA context). jaxlib 0.12 reads
  ``XLA_CLIENT_MEM_FRACTION`` and raises if the deprecated ``XLA_PYTHON_CLIENT_MEM_FRACTION`` is set as well;
  older jaxlib reads only the old name. So exactly one of them is set, by the installed jaxlib's version, and
  neither when the user already set one.
* ``gpus >= 1``: Ray sets ``CUDA_VISIBLE_DEVICES`` to the assigned GPUs; JAX's defaults apply.

Variables the user (or the cluster's runtime_env) already set are never overridden.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

from ups_jax.paths import code_version  # noqa: F401 (where the trainable takes it from)

MEMORY_SHARE = 0.8
MEM_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def mem_fraction_var(jaxlib_version: str | None = None) -> str:
    """The memory-fraction variable the installed jaxlib reads (renamed in jaxlib 0.12)."""
    version = jaxlib_version or _jaxlib_version()
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return MEM_FRACTION_VARS[0] if major_minor >= (0, 12) else MEM_FRACTION_VARS[1]


def jax_env(gpus: float, environ: dict | None = None, jaxlib_version: str | None = None) -> dict[str, str]:
    """The variables to add to ``environ`` (default ``os.environ``) for a worker holding ``gpus`` GPUs."""
    environ = os.environ if environ is None else environ
    gpus = float(gpus)
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    out: dict[str, str] = {}
    if gpus == 0:
        if "JAX_PLATFORMS" not in environ:
            out["JAX_PLATFORMS"] = "cpu"
    elif gpus < 1 and not any(v in environ for v in MEM_FRACTION_VARS):
        out[mem_fraction_var(jaxlib_version)] = f"{MEMORY_SHARE * gpus:.3g}"
    return out


def configure_jax(gpus: float) -> dict[str, str]:
    """Applies :func:`jax_env` to this process; call it before the first JAX computation. Returns what it set.

    If JAX is already imported (its config read ``JAX_PLATFORMS`` at import), the platform is also set through
    ``jax.config``; the memory variables are read when the GPU backend starts, i.e. at the first computation."""
    env = jax_env(gpus)
    os.environ.update(env)
    if "JAX_PLATFORMS" in env and "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", env["JAX_PLATFORMS"])
    return env


def worker_info() -> dict:
    """What this worker's JAX sees, for the trial's results (and the GPU-fallback check)."""
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "devices": len(devices),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            **{v: os.environ[v] for v in ("JAX_PLATFORMS", *MEM_FRACTION_VARS) if v in os.environ}}


def _jaxlib_version() -> str:
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return "0"
