"""Loading a finished run back: config and metadata from the workdir, dimension checks, then weights."""

from __future__ import annotations

import json
from pathlib import Path

from flax import nnx

from ups_jax.config import config_from_dict
from ups_jax.errors import CheckpointError, DataError
from ups_jax.models import build_model, param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training.loop import load_param_dict, param_dict


def load_run(workdir, data_paths=None):
    """Returns (cfg, RunData, model with the final stage's best EMA weights, stage name, step)."""
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
    for stage in reversed(list(cfg.stage_order)):
        if (ckpt.stage_dir(workdir, stage)).is_dir():
            mngr = ckpt.open_manager(workdir, stage, read_only=True)
            step = mngr.best_step()
            if step is None:
                mngr.close()
                continue
            ckpt.check_param_shapes(ckpt.checkpoint_param_shapes(workdir, stage, step, "ema"), param_shapes(model),
                                    where=f"{workdir}/checkpoints/{stage}/{step}")
            load_param_dict(model, ckpt.restore(mngr, step, params_like=param_dict(model), items=("ema",))["ema"])
            mngr.close()
            return cfg, data, model, stage, step
    raise CheckpointError(f"{workdir}: no checkpoints found under checkpoints/; train first")


def evaluate_workdir(workdir, data_paths=None, split=None) -> dict:
    from ups_jax.training.pipeline import run_evaluation

    cfg, data, model, stage, step = load_run(workdir, data_paths)
    print(f"restored {stage} step {step} from {workdir}")
    return run_evaluation(model, cfg, data, Path(workdir), split=split)
