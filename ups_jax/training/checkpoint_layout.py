"""What a checkpoint of this project is, read from its metadata alone (no array loaded): where a stage's steps live,
the train-state format, parameter and optimizer-state shapes against a config, with one-line errors naming the
config key that differs. (Split from training/checkpoints.py, which reads, writes and repairs them.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from ups_jax.errors import CheckpointError

class DamagedCheckpoint(ValueError):
    """A step directory whose files are missing or invalid (raised by :func:`check_step`)."""


# What a checkpoint's train state is (state JSON 'format'): 2 = flat parameter / optimizer vectors with the guard
# counts in the JSON state (training/step.py) and the fused q/k/v + AdaLN parameters (models/pdet.py); 3 = also the
# decoder's q/k/v projections as one parameter (models/decoder.py CrossAttention.qkv). Older formats (format 1
# wrote no 'format' key) are refused with the reason, by training, ``infer`` and ``evaluate`` alike.
TRAIN_STATE_FORMAT = 3


def stage_dir(workdir: str | Path, stage: str) -> Path:
    return Path(workdir).absolute() / "checkpoints" / stage


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_shapes(tree) -> dict[str, tuple]:
    """``{'inner_state.1.0.mu.operator.blocks.0.kernel.value': (16, 16), ...}``: the dotted leaf paths (orbax's
    own naming) and shapes of a pytree, an abstract tree or an orbax metadata tree."""
    return {".".join(_key_name(k) for k in path): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _item_metadata_tree(workdir, stage: str, step: int, item: str):
    """The item's tree metadata. The handler, not ``StandardCheckpointer().metadata`` (which turns every read error
    into None), so that the caller sees why it failed: damage (:func:`is_damage`) or something else."""
    path = stage_dir(workdir, stage) / str(step) / item
    handler = ocp.StandardCheckpointHandler()
    try:
        md = handler.metadata(path)
    finally:
        handler.close()
    tree = getattr(md, "tree", md)
    if tree is None:
        raise DamagedCheckpoint(f"{path}: orbax finds no tree metadata")
    return tree


def checkpoint_param_shapes(workdir, stage: str, step: int, item: str = "params") -> dict[str, tuple]:
    """Parameter shapes from orbax metadata, without loading arrays: {'encoder/stem/kernel': (5, 9, 64), ...}."""
    tree = _item_metadata_tree(workdir, stage, step, item)
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def only_modules(shapes: dict[str, tuple], modules) -> dict[str, tuple]:
    """The entries of ``shapes`` under the top-level submodules ``modules`` (what a finished stage hands on)."""
    heads = set(modules)
    return {k: v for k, v in shapes.items() if k.split("/", 1)[0] in heads}


def _corrector_layout(shapes: dict[str, tuple]) -> str | None:
    """'latent' / 'field' by the corrector's parameter names (net/… or cnn/…); None without a corrector."""
    heads = {k.split("/")[1] for k in shapes if k.startswith("corrector/") and k.count("/") >= 1}
    return "field" if "cnn" in heads else "latent" if "net" in heads else None


def check_corrector_kind(ckpt_shapes: dict[str, tuple], model_shapes: dict[str, tuple], *, where: str) -> None:
    """A corrector trained as one kind loaded as the other (``model.corrector.kind``) → one line with the fix."""
    found, want = _corrector_layout(ckpt_shapes), _corrector_layout(model_shapes)
    if found and want and found != want:
        raise CheckpointError(
            f"{where}: holds a {found} corrector but the config asks for model.corrector.kind='{want}' (a checkpoint "
            f"from before the field corrector existed is 'latent'); pass --config.model.corrector.kind={found}, or "
            f"train the {want} corrector in another --workdir (nothing was overwritten)")


def check_param_shapes(ckpt_shapes: dict[str, tuple], model_shapes: dict[str, tuple], *, where: str,
                       modules=None) -> None:
    """Raises CheckpointError naming the first differing parameter path, both shapes and the config key.
    ``modules``: compare only these top-level submodules (a finished stage hands on only what it trained)."""
    from ups_jax.models import config_key_for, shape_mismatches

    if modules is not None:
        ckpt_shapes, model_shapes = only_modules(ckpt_shapes, modules), only_modules(model_shapes, modules)
    check_corrector_kind(ckpt_shapes, model_shapes, where=where)

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


def check_opt_state(saved: dict[str, tuple], wanted: dict[str, tuple], *, where: str, stage: str,
                    saved_cfg: dict | None, stage_cfg: dict | None) -> None:
    """Raises CheckpointError (one line) when the saved optimizer state has other entries or shapes than the one
    this config builds, naming the stage keys that changed since the checkpoint (from its stored stage config)."""
    differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if not differ:
        return
    changed = []
    if saved_cfg and stage_cfg:
        changed = [f"stages.{stage}.{k}: {_short(saved_cfg.get(k))} → {_short(stage_cfg.get(k))}"
                   for k in sorted(set(saved_cfg) | set(stage_cfg))
                   if json.dumps(saved_cfg.get(k), sort_keys=True, default=str)
                   != json.dumps(stage_cfg.get(k), sort_keys=True, default=str)]
    k = differ[0]
    example = (f"'{k}' is {saved[k] if k in saved else 'absent'} in the checkpoint, "
               f"{wanted[k] if k in wanted else 'absent'} for this config")
    cause = f"changed since: {'; '.join(changed)}" if changed else "the trainable modules or optimizer changed"
    raise CheckpointError(f"{where}: the saved optimizer state does not fit this config ({cause}; {len(differ)} "
                          f"entr{'y' if len(differ) == 1 else 'ies'} differ, e.g. {example}); resume with the "
                          f"settings the stage was started with, or use another --workdir or --fresh")


def _short(v) -> str:
    return json.dumps(v, default=str) if not isinstance(v, str) else repr(v)


def check_compatible(workdir, stage: str, step: int, state: dict, *, model_shapes: dict,
                     opt_like: Callable[[], Any] | None = None, stage_cfg: dict | None = None,
                     modules=None) -> None:
    """A resume point written by another config → one-line CheckpointError. Reads metadata only (no arrays); an
    unreadable checkpoint raises whatever orbax raises (the caller treats that as corruption, not a mismatch).
    ``opt_like()`` builds the optimizer-state target (only needed, and only called, for an unfinished stage)."""
    where = f"{stage_dir(workdir, stage)}/{step}"
    check_format(state, where, model_shapes)
    # a finished stage hands on only the modules it trained (``modules``); an unfinished one resumes them all
    check_param_shapes(checkpoint_param_shapes(workdir, stage, step), model_shapes, where=where,
                       modules=modules if state.get("finished") else None)
    if not state.get("finished") and opt_like is not None:
        check_opt_state(leaf_shapes(_item_metadata_tree(workdir, stage, step, "opt")), leaf_shapes(opt_like()),
                        where=where, stage=stage, saved_cfg=state.get("stage_config"), stage_cfg=stage_cfg)


def _same_layout_as_format_2(model_shapes: dict | None) -> bool:
    """Format 3 changed the decoder's cross-attention parameters only: a model without them (the FNO baseline,
    a decoder with ``num_layers=0`` such as :cpu's and ns2d's) has format 2's layout exactly."""
    return model_shapes is not None and not any(k.startswith("decoder/layers/") for k in model_shapes)


def check_format(state: dict, where: str, model_shapes: dict | None = None) -> None:
    """A checkpoint of an older train-state format (``TRAIN_STATE_FORMAT``) → one line saying why. With
    ``model_shapes`` (the model the checkpoint is loaded into), a format-2 checkpoint of a model that format 3 did
    not change is read."""
    found = int(state.get("format", 1))
    if found == 2 and _same_layout_as_format_2(model_shapes):
        return
    if found != TRAIN_STATE_FORMAT:
        raise CheckpointError(
            f"{where}: written with train-state format {found}, this ups_jax reads format {TRAIN_STATE_FORMAT} "
            f"(format 2 made the optimizer state one flat vector and fused the operator's q/k/v and AdaLN "
            f"projections, format 3 fused the decoder's q/k/v projections; older layouts are not converted); "
            f"retrain with --fresh (the old run is set aside) or use another --workdir")
