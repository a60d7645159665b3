"""One long training run as a Ray actor: ``train_and_evaluate`` on whichever node has the resources.

    python -m ups_jax.fleet.train --config configs/burgers32.py --workdir /shared/runs/burgers32 \\
        [--gpus 1] [--cpus 4] [--address auto] [--config.a.b=value ...]

The run directory must be reachable from every node (a shared file system: NFS, a mounted bucket) because the
actor is restarted (``max_restarts``) on another node when its node is lost, and the retried ``fit`` call
resumes from the run's latest checkpoint, with the same step sequence. For trials with checkpoints in cloud
storage use a sweep (``ups_jax.fleet.sweep``) with ``num_samples=1``.
"""

from __future__ import annotations

import os
from pathlib import Path


class RunTrainer:
    """Ray actor body (wrapped with ``ray.remote`` by :func:`start_trainer`)."""

    def __init__(self, cfg_dict: dict, workdir: str, gpus: float):
        from ups_jax.fleet.env import configure_jax

        configure_jax(gpus)                  # before JAX starts a backend in this worker
        self.cfg_dict, self.workdir, self.gpus = cfg_dict, workdir, gpus

    def fit(self, max_steps: int | None = None) -> dict:
        """Trains (resuming whatever ``workdir`` holds) and returns the per-stage results and test metrics."""
        from ups_jax.config import config_from_dict
        from ups_jax.fleet.env import worker_info
        from ups_jax.training.pipeline import train_and_evaluate

        out = train_and_evaluate(config_from_dict(self.cfg_dict), self.workdir, max_steps=max_steps)
        stages = {k: {f: v[f] for f in ("best_step", "best_val", "steps_done", "skipped")}
                  for k, v in out["stages"].items()}
        ev = out.get("eval")
        return {"stages": stages, "worker": worker_info(), "pid": os.getpid(),
                "test": None if ev is None else {k: ev["model"][k] for k in ("nrmse", "rel_l2")}}

    def pid(self) -> int:
        return os.getpid()


def start_trainer(cfg, workdir, *, cpus: float = 1, gpus: float = 0, max_restarts: int = 2):
    """Creates the actor; ``ray.get(actor.fit.remote())`` runs the training. A lost actor is restarted up to
    ``max_restarts`` times and its in-flight ``fit`` retried (it resumes from the checkpoints in ``workdir``)."""
    import ray

    actor = ray.remote(RunTrainer).options(num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts,
                                           max_task_retries=max_restarts)
    return actor.remote(cfg.to_dict(), str(Path(workdir).expanduser().absolute()), float(gpus))
