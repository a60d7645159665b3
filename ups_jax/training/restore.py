"""Loading a finished run back: config and metadata from the workdir, dimension checks, then weights."""

from __future__ import annotations

import logging
from pathlib import Path

from ups_jax.training.pipeline import check_eval_data, check_value_range, load_run  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


def evaluate_workdir(workdir, data_paths=None, split=None) -> dict:
    from ups_jax.training.pipeline import run_evaluation

    cfg, data, model, stage, step = load_run(workdir, data_paths)
    split = split or cfg.eval.split
    if data_paths:
        traj, _ = data.trajectories(split, cfg.eval.max_trajectories)
        check_value_range(traj, data.norm, f"{data.paths[0]} ({split} split)")
    log.info(f"restored {stage} step {step} from {workdir}")
    return run_evaluation(model, cfg, data, Path(workdir), split=split)
