"""Paths that do not depend on the current directory.

Ray Tune runs every trial in its own working directory and ``ray job submit`` runs the driver wherever the job
agent starts it, so a path such as ``data/burgers_nu0.01`` must not mean "relative to wherever the process happens
to be". The rule used by every entry point:

* Paths the user types on a command line (``--workdir``, ``--data``, ``--storage``) are relative to the current
  directory, as in any shell command; entry points make them absolute before handing them on.
* Paths written *inside the project* (``cfg.data.default_dir``, the ``config`` of an ``experiments/*.py`` file)
  are relative to the project root, so that every process on a node, in any working directory, finds the one
  shared copy of the data.

The project root is ``$UPS_JAX_ROOT`` if set, else the source checkout this package was imported from (the
directory holding ``pyproject.toml`` and ``configs/``: an editable install or a clone), else
``$XDG_CACHE_HOME/ups_jax`` (``~/.cache/ups_jax``) for a plain ``pip install``.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    env = os.environ.get("UPS_JAX_ROOT")
    if env:
        return Path(env).expanduser().absolute()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().absolute() / "ups_jax"


def project_path(path: str | os.PathLike) -> Path:
    """A project-relative path made absolute (absolute paths and ``~`` are kept as they are)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def find_file(path: str | os.PathLike) -> Path:
    """An input file the user named: absolute as given; relative to the current directory if it exists there,
    else relative to the project root (``configs/burgers32.py`` works from any directory). A file found nowhere
    comes back relative to the current directory, so that the caller's "not found" message names it as typed."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    if here.exists():
        return here
    in_project = project_root() / p
    return in_project if in_project.exists() else here


def code_version() -> dict:
    """What this process runs: the git commit of the checkout (``$UPS_JAX_GIT_COMMIT`` in the Docker image, which
    has no .git) and the container image (``$UPS_JAX_IMAGE``, set by the cluster YAML's docker run_options)."""
    import subprocess

    commit = os.environ.get("UPS_JAX_GIT_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"git_commit": commit, "image": os.environ.get("UPS_JAX_IMAGE")}
