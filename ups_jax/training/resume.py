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
    """The stage's newest complete checkpoint against ``cfg`` and ``model`` (real or abstract): parameter shapes,
    and the optimizer state when the stage is unfinished. Raises a one-line CheckpointError on a mismatch or on
    a read error that is not damage; returns ``(step, finished)``, or None without a complete checkpoint. Reads
    metadata only and moves nothing: a damaged step is passed over here (the checkpoint that is checked is the
    one the stage loop falls back to, and the loop reports and moves the damaged one)."""
    mngr = ckpt.open_manager(workdir, stage, read_only=True)      # steps with damaged metadata are hidden
    sc = cfg.stages[stage] if stage in cfg.stages else None
    try:
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                state = ckpt.restore(mngr, step, items=("state",))["state"]
                ckpt.check_compatible(workdir, stage, step, state, model_shapes=param_shapes(model),
                                      opt_like=(lambda: abstract_opt_state(model, sc)) if sc is not None else None,
                                      stage_cfg=sc.to_dict() if sc is not None else None,
                                      modules=tuple(sc.trainable) if sc is not None else None)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 — sorted into damage (older step) and anything else (stop)
                if not ckpt.is_damage(e):
                    raise ckpt.read_failed(f"{ckpt.stage_dir(workdir, stage)}/{step}", e) from e
                log.debug("checkpoint %s/%s is damaged (%s): checking the one before", stage, step, e)
                continue
            return step, bool(state.get("finished"))
        return None
    finally:
        mngr.close()


def check_resumable(workdir, cfg, model) -> None:
    """:func:`check_stage_resumable` for every checkpointed stage of ``workdir``."""
    for stage in ckpt.checkpointed_stages(workdir):
        check_stage_resumable(workdir, cfg, model, stage)
