"""Loading a finished run back: config and metadata from the workdir, dimension checks, then weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from flax import nnx

from ups_jax.config import config_from_dict
from ups_jax.data.grids import grid_size
from ups_jax.errors import CheckpointError, DataError
from ups_jax.models import build_model, param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training.run_data import RunData
from ups_jax.training.stages import restore_modules


def load_run(workdir, data_paths=None):
    """Returns (cfg, RunData, model, last stage loaded, its step): every submodule from the best EMA checkpoint of
    the last stage (in stage_order) that trains it."""
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
    check_eval_data(data, meta, cfg, workdir)
    model = build_model(cfg, num_points=grid_size(meta.get("grid", [meta["nx"]])), rngs=nnx.Rngs(cfg.seed))
    loaded = None
    for stage in cfg.stage_order:   # every module from the best EMA of the (last) stage that trains it
        if (ckpt.stage_dir(workdir, stage)).is_dir():
            mngr = ckpt.open_manager(workdir, stage, read_only=True)
            try:
                step = mngr.best_step()
                if step is None:
                    continue
                where = f"{workdir}/checkpoints/{stage}/{step}"
                try:
                    saved = ckpt.checkpoint_param_shapes(workdir, stage, step, "ema")
                    state = ckpt.restore(mngr, step, items=("state",))["state"]
                except Exception as e:  # noqa: BLE001 — a damaged checkpoint is the run's state, not a bug
                    raise CheckpointError(f"{where}: unreadable checkpoint ({type(e).__name__}); re-train the stage "
                                          f"(python -m ups_jax.train ... --workdir {workdir})") from e
            finally:
                mngr.close()
            ckpt.check_format(state, where, param_shapes(model))   # an older layout: the reason, not a shape list
            ckpt.check_param_shapes(saved, param_shapes(model), where=where,
                                    modules=tuple(cfg.stages[stage].trainable))
            restore_modules(model, workdir, stage, tuple(cfg.stages[stage].trainable), step=step)
            loaded = (stage, step)
    if loaded is None:
        raise CheckpointError(f"{workdir}: no checkpoints found under checkpoints/; train first")
    return (cfg, data, model) + loaded


# ---- data checks before evaluating (evaluate refuses data that does not fit the run; nothing is written) ----
# The evaluation split's values, in the run's normalised units, must look like what the model was trained on:
# mean within MAX_MEAN_SHIFT training stds of 0 and std within a factor MAX_STD_RATIO of 1. PDEBench Burgers files
# of any Nu pass (same initial-condition distribution); data in other units or of another PDE do not.
MAX_MEAN_SHIFT = 2.0
MAX_STD_RATIO = 4.0


def check_eval_data(data, meta: dict, cfg, workdir) -> None:
    """Refuses data whose grid (cells, domain, frame step, frame count) or normalisation does not fit the run;
    warns (one line) when the data fingerprint differs from the training data's."""
    d, where = data.dataset, data.paths[0]
    trained = tuple(meta.get("grid", [meta["nx"]]))
    if d.nx != meta["nx"] or tuple(data.grid) != trained:
        have, want = "x".join(map(str, data.grid)), "x".join(map(str, trained))
        raise DataError(f"{where}: grid has {have} cells after reduction but the model in {workdir} was trained on "
                        f"{want} (data.reduced_resolution={cfg.data.reduced_resolution}); use data with the "
                        f"training grid")
    length = meta["x_max"] - meta["x_min"]
    if not (math.isclose(d.x_min, meta["x_min"], abs_tol=1e-6 * length)
            and math.isclose(d.x_max, meta["x_max"], abs_tol=1e-6 * length)):
        raise DataError(f"{where}: grid covers x in [{d.x_min:g}, {d.x_max:g}) but the model in {workdir} was trained "
                        f"on [{meta['x_min']:g}, {meta['x_max']:g}); use data on the training domain")
    if not math.isclose(d.dt, meta["dt"], rel_tol=1e-4):
        raise DataError(f"{where}: frames are {d.dt:g} apart after reduction but the model in {workdir} was trained "
                        f"with dt={meta['dt']:g} (data.reduced_resolution_t={cfg.data.reduced_resolution_t}); use "
                        f"data with the training frame step")
    if d.nt <= cfg.eval.initial_step:
        raise DataError(f"{where}: {d.nt} frames after reduction, but the evaluation gives the model "
                        f"eval.initial_step={cfg.eval.initial_step} frames and needs at least one more to predict")
    norm = meta.get("norm") or {}
    if not (all(math.isfinite(norm.get(k, math.nan)) for k in ("mean", "std")) and norm["std"] > 0):
        raise CheckpointError(f"{workdir}/run_meta.json: normalisation {norm} is missing or invalid; the run "
                              f"directory is damaged (retrain it)")
    trained_on = meta.get("fingerprint")
    if trained_on is not None and trained_on != data.fingerprint():
        now = data.fingerprint()
        diff = sorted(k for k in set(trained_on) | set(now) if trained_on.get(k) != now.get(k))
        print(f"warning: evaluating on data that differ from the training data of {workdir} (differs in: "
              f"{', '.join(diff)}); the numbers describe these files", flush=True)


def check_value_range(traj: np.ndarray, norm: dict, where: str) -> None:
    """Refuses evaluation trajectories whose values do not fit the run's normalisation (see MAX_MEAN_SHIFT)."""
    mean, std = float(np.mean(traj, dtype=np.float64)), float(np.std(traj, dtype=np.float64))
    shift, ratio = abs(mean - norm["mean"]) / norm["std"], std / norm["std"]
    if not (shift <= MAX_MEAN_SHIFT and 1.0 / MAX_STD_RATIO <= ratio <= MAX_STD_RATIO):
        raise DataError(f"{where}: values have mean {mean:.4g} and std {std:.4g}, but the run normalises with mean "
                        f"{norm['mean']:.4g} and std {norm['std']:.4g} (its training data): {shift:.1f} training stds "
                        f"off and {ratio:.2g}x the spread, beyond the model's range (limits {MAX_MEAN_SHIFT:g} stds, "
                        f"{MAX_STD_RATIO:g}x); use data in the training data's units and scale")
