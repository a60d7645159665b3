"""Loading a finished run back: config and metadata from the workdir, dimension checks, then weights."""

from __future__ import annotations

import json
from pathlib import Path

from flax import nnx

from ups_jax.config import config_from_dict
from ups_jax.errors import CheckpointError, DataError
from ups_jax.models import build_model, param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training.stages import restore_modules


def load_run(workdir, data_paths=None):
    """Returns (cfg, RunData, model, last stage loaded, its step): every submodule from the best EMA checkpoint of
    the last stage (in stage_order) that trains it."""
    from ups_jax.training.pipeline import RunData

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"{workdir}: workdir not found (train first: python -m ups_jax.train "
                              f"--config configs/burgers32.py:cpu --workdir {workdir})")
    for name in ("config.json", "run_meta.json"):
        if not (workdir / name).is_file():
            raise CheckpointError(f"{workdir}: no {name}; not a ups_jax run directory")
    cfg = config_from_dict(json.loads((workdir / "config.json").read_text()))
    meta = json.loads((workdir / "run_meta.json").read_text())
    data = RunData(cfg, data_paths or meta["data_paths"])
    data.norm = meta["norm"]                           # always the training run's statistics
    if data.dataset.nx != meta["nx"]:
        raise DataError(f"{data.paths[0]}: grid has {data.dataset.nx} cells after reduction but the model in "
                        f"{workdir} was trained on {meta['nx']} (data.reduced_resolution="
                        f"{cfg.data.reduced_resolution}); use data with the training grid")
    model = build_model(cfg, num_points=meta["nx"], rngs=nnx.Rngs(cfg.seed))
    loaded = None
    for stage in cfg.stage_order:   # every module from the best EMA of the (last) stage that trains it
        if (ckpt.stage_dir(workdir, stage)).is_dir():
            mngr = ckpt.open_manager(workdir, stage, read_only=True)
            step = mngr.best_step()
            mngr.close()
            if step is None:
                continue
            ckpt.check_param_shapes(ckpt.checkpoint_param_shapes(workdir, stage, step, "ema"), param_shapes(model),
                                    where=f"{workdir}/checkpoints/{stage}/{step}")
            restore_modules(model, workdir, stage, tuple(cfg.stages[stage].trainable), step=step)
            loaded = (stage, step)
    if loaded is None:
        raise CheckpointError(f"{workdir}: no checkpoints found under checkpoints/; train first")
    return (cfg, data, model) + loaded


def evaluate_workdir(workdir, data_paths=None, split=None) -> dict:
    from ups_jax.training.pipeline import run_evaluation

    cfg, data, model, stage, step = load_run(workdir, data_paths)
    print(f"restored {stage} step {step} from {workdir}")
    return run_evaluation(model, cfg, data, Path(workdir), split=split)
