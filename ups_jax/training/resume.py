"""Whether a workdir's checkpoints can be resumed by a config: what ``train`` (before anything is written) and
``driver validate --workdir`` refuse, from orbax metadata only (no array is loaded)."""

from __future__ import annotations

import logging


from ups_jax.errors import CheckpointError
from ups_jax.models import param_shapes
from ups_jax.training import checkpoints as ckpt
from ups_jax.training.loop import abstract_opt_state as loop_abstract_opt_state
from ups_jax.training.optim import make_optimizer

log = logging.getLogger(__name__)


def abstract_opt_state(model, stage_cfg):
    """The optimizer-state structure (shapes only, nothing allocated) stage ``stage_cfg`` trains with."""
    return loop_abstract_opt_state(model, tuple(stage_cfg.trainable), make_optimizer(stage_cfg))


def check_stage_resumable(workdir, cfg, model, stage: str) -> tuple[int, bool] | None:
    """The stage's newest readable checkpoint against ``cfg`` and ``model`` (real or abstract): parameter shapes,
    and the optimizer state when the stage is unfinished. Raises a one-line CheckpointError on a mismatch;
    returns ``(step, finished)``, or None without a readable checkpoint. Reads metadata only. A checkpoint that
    cannot be read is skipped here: the stage loop reports it and falls back to the previous one."""
    mngr = ckpt.open_manager(workdir, stage, read_only=True)
    try:
        found = ckpt.newest_readable_state(mngr)
    finally:
        mngr.close()
    if found is None:
        return None
    step, state = found
    sc = cfg.stages[stage] if stage in cfg.stages else None
    try:
        ckpt.check_compatible(workdir, stage, step, state, model_shapes=param_shapes(model),
                              opt_like=(lambda: abstract_opt_state(model, sc)) if sc is not None else None,
                              stage_cfg=sc.to_dict() if sc is not None else None)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 — unreadable metadata: the loop's fallback deals with it
        log.debug("checkpoint %s/%s: metadata unreadable (%s)", stage, step, e)
        return None
    return step, bool(state.get("finished"))


def check_resumable(workdir, cfg, model) -> None:
    """:func:`check_stage_resumable` for every checkpointed stage of ``workdir``."""
    for stage in ckpt.checkpointed_stages(workdir):
        check_stage_resumable(workdir, cfg, model, stage)
