"""Loading a finished run back: config and metadata from the workdir, dimension checks, then weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flax import nnx

from ups_jax.config import config_from_dict
from ups_jax.errors import CheckpointError, DataError
from ups_jax.models import build_model, param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training.loop import load_param_dict, param_dict

log = logging.getLogger(__name__)


def load_run(workdir, data_paths=None):
    """Returns (cfg, RunData, model with the final stage's best EMA weights, stage name, step)."""
    from ups_jax.training.pipeline import RunData

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"{workdir}: workdir not found (train first: python -m ups_jax.train "
                              f"--config configs/burgers32.py:cpu --workdir {workdir})")
    docs = {}
    for name in ("config.json", "run_meta.json"):
        path = workdir / name
        if not path.is_file():
            raise CheckpointError(f"{workdir}: no {name}; not a ups_jax run directory (pass the --workdir of a "
                                  f"training run)")
        try:
            docs[name] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e}); not a complete ups_jax run "
                                  f"directory") from e
    meta = docs["run_meta.json"]
    missing = [k for k in ("data_paths", "norm", "nx") if k not in meta]
    if missing or not isinstance(docs["config.json"], dict) or "stage_order" not in docs["config.json"]:
        raise CheckpointError(f"{workdir}: run_meta.json/config.json lack {', '.join(missing) or 'stage_order'}; "
                              f"not a ups_jax run directory")
    cfg = config_from_dict(docs["config.json"])
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
            where = f"{workdir}/checkpoints/{stage}/{step}"
            try:
                saved = ckpt.checkpoint_param_shapes(workdir, stage, step, "ema")
            except Exception as e:  # noqa: BLE001 — a damaged checkpoint is the run's state, not a bug
                mngr.close()
                raise CheckpointError(f"{where}: unreadable checkpoint ({type(e).__name__}); re-train the stage "
                                      f"(python -m ups_jax.train ... --workdir {workdir})") from e
            try:
                ckpt.check_param_shapes(saved, param_shapes(model), where=where)
                step, ema = ckpt.restore_best_ema(mngr, stage, param_dict(model))
            finally:
                mngr.close()
            load_param_dict(model, ema)
            return cfg, data, model, stage, step
    raise CheckpointError(f"{workdir}: no checkpoints found under checkpoints/; train first")


def evaluate_workdir(workdir, data_paths=None, split=None) -> dict:
    from ups_jax.training.pipeline import run_evaluation

    cfg, data, model, stage, step = load_run(workdir, data_paths)
    log.info(f"restored {stage} step {step} from {workdir}")
    return run_evaluation(model, cfg, data, Path(workdir), split=split)
