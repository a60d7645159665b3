"""Orbax checkpoints for one workdir: ``WORKDIR/checkpoints/<stage>/<step>/{params,ema,opt,state}``.

One CheckpointManager per stage directory, because each stage selects its best step by its *own*
validation metric (reconstruction nRMSE for the codec, rollout nRMSE for the operator); mixing them in one
manager would make ``best_step`` compare unlike numbers. Retention: the latest N (what we resume from)
plus the best N by validation metric — never only "best", which could delete the resume point.

Params are stored as plain nested dicts (``nnx.to_pure_dict``) so shapes can be read from orbax metadata
without loading arrays (dimension checks before any restore) and so checkpoints written on a GPU restore
on a CPU (the restore target carries this machine's sharding).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from ups_jax.errors import CheckpointError

logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs every save at INFO/WARNING through absl



def stage_dir(workdir: str | Path, stage: str) -> Path:
    return Path(workdir).absolute() / "checkpoints" / stage


def _best_metric(metrics: dict) -> float:
    return float(metrics["val"])


def open_manager(workdir, stage: str, *, keep_latest: int = 2, keep_best: int = 2, metadata: dict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    path = stage_dir(workdir, stage)
    if read_only:
        opts = ocp.CheckpointManagerOptions(read_only=True, best_fn=_best_metric, best_mode="min")
        handlers = dict(params=ocp.StandardCheckpointHandler(), ema=ocp.StandardCheckpointHandler(),
                        opt=ocp.StandardCheckpointHandler(), state=ocp.JsonCheckpointHandler())
        return ocp.CheckpointManager(path, options=opts, item_handlers=handlers)
    opts = ocp.CheckpointManagerOptions(
        best_fn=_best_metric, best_mode="min",
        preservation_policy=pp.AnyPreservationPolicy([
            pp.LatestN(max(keep_latest, 1)),
            pp.BestN(get_metric_fn=_best_metric, reverse=True, n=max(keep_best, 1)),
        ]),
    )
    return ocp.CheckpointManager(path, options=opts, metadata=metadata)


def save(mngr: ocp.CheckpointManager, step: int, *, params: dict, ema: dict, opt_state: Any, state: dict,
         val: float) -> None:
    """``params``/``ema`` are pure dicts; ``opt_state`` any pytree (saved as its flat leaves)."""
    leaves = {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(opt_state))}
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), ema=ocp.args.StandardSave(ema),
        opt=ocp.args.StandardSave(leaves), state=ocp.args.JsonSave(state)),
        metrics={"val": float(val)}, force=True)


def _target(tree):
    """Restore target on *this* machine's default device (GPU checkpoints restore on CPU)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def restore(mngr: ocp.CheckpointManager, step: int, *, params_like: dict, opt_state_like: Any = None,
            items=("params", "ema", "state")) -> dict:
    args = {}
    if "params" in items:
        args["params"] = ocp.args.StandardRestore(_target(params_like))
    if "ema" in items:
        args["ema"] = ocp.args.StandardRestore(_target(params_like))
    if "opt" in items:
        leaves, treedef = jax.tree.flatten(opt_state_like)
        args["opt"] = ocp.args.StandardRestore(_target({f"{i:05d}": x for i, x in enumerate(leaves)}))
    if "state" in items:
        args["state"] = ocp.args.JsonRestore()
    out = dict(mngr.restore(step, args=ocp.args.Composite(**args)))
    if "opt" in items:
        restored = out["opt"]
        out["opt"] = jax.tree.unflatten(treedef, [restored[f"{i:05d}"] for i in range(len(leaves))])
    return out


def checkpoint_param_shapes(workdir, stage: str, step: int, item: str = "params") -> dict[str, tuple]:
    """Parameter shapes from orbax metadata, without loading arrays: {'encoder/stem/kernel': (5, 9, 64), ...}."""
    md = ocp.StandardCheckpointer().metadata(stage_dir(workdir, stage) / str(step) / item)
    tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_param_shapes(ckpt_shapes: dict[str, tuple], model_shapes: dict[str, tuple], *, where: str) -> None:
    """Raises CheckpointError naming the first differing parameter path, both shapes and the config key."""
    from ups_jax.models import config_key_for, shape_mismatches

    for path in sorted(set(model_shapes) & set(ckpt_shapes)):
        if tuple(ckpt_shapes[path]) != tuple(model_shapes[path]):
            raise CheckpointError(
                f"{where}: parameter '{path}' has shape {tuple(ckpt_shapes[path])} in the checkpoint but "
                f"{tuple(model_shapes[path])} from the config (set by {config_key_for(path)}); use the config the "
                f"checkpoint was written with, another --workdir, or --fresh to start over")
    lines = shape_mismatches(model_shapes, ckpt_shapes)   # only parameters present on one side remain
    if lines:
        raise CheckpointError(f"{where}: architecture differs, {lines[0]} ({len(lines)} parameter(s) differ); "
                              f"use another --workdir or --fresh")


def checkpointed_stages(workdir) -> list[str]:
    """Stage names with a checkpoint directory in ``workdir`` (finished or not)."""
    root = Path(workdir) / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def set_aside(workdir) -> Path | None:
    """``--fresh``: moves old checkpoints (and logs) aside — never deletes them."""
    workdir = Path(workdir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = None
    for name in ("checkpoints", "metrics.jsonl", "eval", "run_meta.json", "config.json"):
        src = workdir / name
        if src.exists():
            dst = workdir / f"old-{stamp}" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            moved = dst.parent
    return moved


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (temp file + rename) so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
