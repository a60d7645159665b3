"""Orbax checkpoints for one workdir: ``WORKDIR/checkpoints/<stage>/<step>/{params,ema,opt,state}``.

One CheckpointManager per stage directory, because each stage selects its best step by its *own*
validation metric (reconstruction nRMSE for the codec, rollout nRMSE for the operator); mixing them in one
manager would make ``best_step`` compare unlike numbers. Retention: the latest N (what we resume from)
plus the best N by validation metric — never only "best", which could delete the resume point.

Metadata-only checks (shapes, format, the stage directory) are in training/checkpoint_layout.py.

Items: ``params``/``ema`` are plain nested dicts (``nnx.to_pure_dict``) so shapes can be read from orbax
metadata without loading arrays (dimension checks before any restore) and so checkpoints written on a GPU
restore on a CPU (the restore target carries this machine's sharding). ``opt`` is the optax state as its real
pytree (namedtuples and all): a config that reshapes it is named in one line before anything is loaded
(:func:`check_compatible`). ``state`` is JSON: step, RNG, data-loader position, early-stopping state, the
stage's config.

Crash safety is orbax's: a step directory appears only by an atomic rename once all its files are written, so
a killed save leaves a ``<step>.orbax-checkpoint-tmp-*`` directory that ``all_steps()`` ignores and the next
writable manager removes (``cleanup_tmp_directories``).

A finalised checkpoint can still be damaged (a bad disk, a truncated copy). Two layers deal with it:

* :func:`step_damage` reads a step's small files (``_CHECKPOINT_METADATA``, the metrics and state JSON, every
  array item's ``_METADATA``) without loading an array; a step that fails it is hidden from every manager this
  module opens (:class:`_HideDamagedSteps`) — orbax itself would fail in ``CheckpointManager.__init__``, which
  reads every step's metrics.
* a damaged array file shows only when it is read: :func:`is_damage` tells "this checkpoint is damaged"
  (a missing file, invalid JSON, tensorstore's ``DATA_LOSS``/``OUT_OF_RANGE``/``NOT_FOUND``) from everything
  else (a permission or I/O error of the machine, a bug).

:func:`restore_for_resume` warns once per damaged step, moves it aside (never deletes it) and resumes from the
newest complete one; any other failure stops the run with one line and moves nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from ups_jax.errors import CheckpointError, environment_error
from ups_jax.files import write_json_atomic
# the metadata-only checks live in checkpoint_layout; their names stay importable from here
from ups_jax.training.checkpoint_layout import (TRAIN_STATE_FORMAT, DamagedCheckpoint,  # noqa: F401
                                               _item_metadata_tree, check_compatible, check_format,
                                               check_opt_state, check_param_shapes, checkpoint_param_shapes,
                                               leaf_shapes, stage_dir)

UNREADABLE_DIR = "checkpoints_unreadable"     # WORKDIR/<this>/<stage>/<step>: unreadable checkpoints set aside


def _best_metric(metrics: dict) -> float:
    return float(metrics["val"])


# ---------------------------------------------------------------------------------------------- damaged steps
# tensorstore's status codes (the start of the ValueError it raises) that mean the stored bytes are wrong or gone;
# others (PERMISSION_DENIED, UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, ...) are the machine's state or a bug
_DAMAGE_STATUS = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND")


def is_damage(e: BaseException) -> bool:
    """True when ``e`` (or an exception it wraps) says the checkpoint's files are missing or invalid; False for
    the machine's state (permissions, a full or read-only disk) and for everything else (a bug)."""
    if environment_error(e) is not None:
        return False
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (DamagedCheckpoint, FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError)):
            return True
        if isinstance(e, ValueError) and str(e).startswith(_DAMAGE_STATUS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(f"{path.relative_to(path.parents[1])} is not valid JSON ({e})") from None


def check_step(step_dir: Path) -> None:
    """Raises DamagedCheckpoint when a finalised step directory lacks an item or holds invalid JSON metadata
    (what orbax reads before any array: the step's item list, the metrics, the JSON items, each array item's
    tree metadata). Array files are checked when they are read (:func:`is_damage`)."""
    step_dir = Path(step_dir)
    meta = _read_json(step_dir / "_CHECKPOINT_METADATA")
    handlers = meta.get("item_handlers") if isinstance(meta, dict) else None
    if not isinstance(handlers, dict):
        raise DamagedCheckpoint("_CHECKPOINT_METADATA lists no items")
    for item, handler in sorted(handlers.items()):
        d = step_dir / item
        if not d.is_dir():
            raise DamagedCheckpoint(f"item '{item}' is missing")
        if "Json" in str(handler):                           # state, metrics: the JSON files themselves
            files = [f for f in d.iterdir() if f.is_file() and f.name != "commit_success.txt"]
            if not files:
                raise DamagedCheckpoint(f"item '{item}' has no file")
            for f in files:
                _read_json(f)
        else:                                                # arrays: the tree metadata orbax starts from
            _read_json(d / "_METADATA")


def step_damage(step_dir: Path) -> str | None:
    """Why :func:`check_step` finds the step damaged, or None. Other read errors (permissions, I/O) are not
    damage: such a step stays visible, and reading it fails with that error where it is restored."""
    try:
        check_step(step_dir)
    except DamagedCheckpoint as e:
        return str(e)
    except OSError:
        return None
    return None


class _HideDamagedSteps:
    """orbax's standard step naming, listing only steps that pass :func:`step_damage` (checked each time the
    manager lists its directory, so a step re-written after the damaged one was moved aside is seen)."""

    def __init__(self):
        self._base = ocp.step.standard_name_format()

    def __getattr__(self, name):
        return getattr(self._base, name)

    def build_name(self, step: int) -> str:
        return self._base.build_name(step)

    def find_all(self, base_path):
        return [m for m in self._base.find_all(base_path) if step_damage(Path(m.path)) is None]

    def find_step(self, base_path, step: int):
        return self._base.find_step(base_path, step)


def damaged_steps(workdir, stage: str) -> dict[int, str]:
    """{step: why} for the finalised steps of ``stage`` that :func:`step_damage` rejects (hidden from managers)."""
    path = stage_dir(workdir, stage)
    if not path.is_dir():
        return {}
    found = {}
    for m in ocp.step.standard_name_format().find_all(path):
        why = step_damage(Path(m.path))
        if why is not None:
            found[int(m.step)] = why
    return found


def read_failed(where: str, e: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint that cannot be read for a reason other than damage."""
    return CheckpointError(f"{where}: reading the checkpoint failed ({_reason(e)}); that is not a sign of a damaged "
                           f"checkpoint, so every checkpoint was left in place: fix the cause and run the same "
                           f"command again (--debug shows the traceback)")


def open_manager(workdir, stage: str, *, keep_latest: int = 2, keep_best: int = 2, metadata: dict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """The stage's manager; steps whose metadata is damaged are invisible to it (see :func:`check_step`)."""
    path = stage_dir(workdir, stage)
    if read_only:
        opts = ocp.CheckpointManagerOptions(read_only=True, best_fn=_best_metric, best_mode="min",
                                            step_name_format=_HideDamagedSteps())
        handlers = dict(params=ocp.StandardCheckpointHandler(), ema=ocp.StandardCheckpointHandler(),
                        opt=ocp.StandardCheckpointHandler(), state=ocp.JsonCheckpointHandler())
        return ocp.CheckpointManager(path, options=opts, item_handlers=handlers)
    opts = ocp.CheckpointManagerOptions(
        best_fn=_best_metric, best_mode="min",
        preservation_policy=pp.AnyPreservationPolicy([
            pp.LatestN(max(keep_latest, 1)),
            pp.BestN(get_metric_fn=_best_metric, reverse=True, n=max(keep_best, 1)),
        ]),
        cleanup_tmp_directories=True,     # a save killed half-way is never a step: remove its temporary dir
        step_name_format=_HideDamagedSteps(),
    )
    return ocp.CheckpointManager(path, options=opts, metadata=metadata)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def save(mngr: ocp.CheckpointManager, step: int, *, params: dict, ema: dict, opt_state: Any, state: dict,
         val: float, finite: bool | None = None) -> None:
    """``params``/``ema`` are pure dicts, ``opt_state`` the optax state pytree. Refuses non-finite weights: a
    checkpoint is a point to resume from, and a NaN one would poison every resume. ``finite``: the caller's own
    check of the same weights (the loop checks its two flat vectors: one small program instead of one over every
    leaf, compiled per stage); None checks the leaves here."""
    if not (bool(_all_finite((params, ema))) if finite is None else finite):
        raise FloatingPointError(f"refusing to checkpoint non-finite parameters at step {step} "
                                 f"({mngr.directory}); the NaN guard should have skipped that update")
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), ema=ocp.args.StandardSave(ema),
        opt=ocp.args.StandardSave(opt_state), state=ocp.args.JsonSave(state)),
        metrics={"val": float(val)}, force=True)


def _target(tree):
    """Restore target on *this* machine's default device (GPU checkpoints restore on CPU)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def restore(mngr: ocp.CheckpointManager, step: int, *, params_like: dict | None = None, opt_state_like: Any = None,
            items=("params", "ema", "state")) -> dict:
    args = {}
    for item in ("params", "ema"):
        if item in items:
            args[item] = ocp.args.StandardRestore(_target(params_like))
    if "opt" in items:
        args["opt"] = ocp.args.StandardRestore(_target(opt_state_like))
    if "state" in items:
        args["state"] = ocp.args.JsonRestore()
    return dict(mngr.restore(step, args=ocp.args.Composite(**args)))


def _weights_read(mngr: ocp.CheckpointManager, step: int, params_like: dict | None = None) -> dict:
    """Restores ``params`` and ``ema`` of ``step`` (targets from ``params_like``, else from the step's own
    metadata): a finished stage's newest step counts as complete only when the weights it holds read."""
    if params_like is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        tree = _item_metadata_tree(Path(mngr.directory).parent.parent, Path(mngr.directory).name, step, "params")
        params_like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), tree)
        args = {item: ocp.args.StandardRestore(params_like) for item in ("params", "ema")}
        return dict(mngr.restore(step, args=ocp.args.Composite(**args)))
    return restore(mngr, step, params_like=params_like, items=("params", "ema"))


def checkpoint_like(workdir, stage: str, step: int, item: str = "ema") -> dict:
    """The tree ``item`` of ``stage``'s checkpoint ``step`` holds, as ShapeDtypeStructs (from its metadata)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = _item_metadata_tree(Path(workdir), stage, step, item)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), tree)


def newest_readable_state(mngr: ocp.CheckpointManager) -> tuple[int, dict] | None:
    """(step, JSON state) of the newest complete checkpoint (its state reads, and for a finished stage its
    weights too); None if there is none. A damaged step is skipped (restore_for_resume reports it when the run
    resumes); any other read error is a one-line CheckpointError."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state = restore(mngr, step, items=("state",))["state"]
            if state.get("finished"):
                _weights_read(mngr, step)
            return step, state
        except Exception as e:  # noqa: BLE001 — sorted into damage (skip) and anything else (stop) here
            if not is_damage(e):
                raise read_failed(f"{mngr.directory}/{step}", e) from e
    return None


# ---------------------------------------------------------------------------------------------- resume
def _reason(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:160]}"


def set_aside_unreadable(workdir, stage: str, step: int) -> Path:
    """Moves ``checkpoints/<stage>/<step>`` to ``checkpoints_unreadable/<stage>/<step>[-stamp]`` (kept for a
    post-mortem, out of orbax's sight, so the step can be written again)."""
    src = stage_dir(workdir, stage) / str(step)
    dst = Path(workdir).absolute() / UNREADABLE_DIR / stage / str(step)
    if dst.exists():
        dst = dst.with_name(f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return dst


def restore_for_resume(mngr: ocp.CheckpointManager, workdir, stage: str, *, params_like: dict,
                       opt_like: Callable[[], Any], check: Callable[[int, dict], None] | None = None,
                       warn: Callable[[str], None] = print) -> tuple[int, dict, dict] | None:
    """Restores the newest readable checkpoint: ``(step, state, items)`` or None when the stage has none.

    ``items`` = params, ema, opt of that step; for a finished stage only the best step's EMA. ``check(step,
    state)`` raises CheckpointError when the checkpoint belongs to another config: that is final (no fall back
    to an older step of the same run). A damaged step (:func:`step_damage`, hidden from ``mngr``, or a read
    error that :func:`is_damage` recognises) is passed over; once an older step restores, ``warn`` gets one line
    per damaged step and each is moved aside. Any other read error raises a one-line CheckpointError before
    anything is moved — so a good checkpoint is never set aside because of a transient error or a bug."""
    bad: list[tuple[int, str]] = sorted(damaged_steps(workdir, stage).items(), reverse=True)
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state = restore(mngr, step, items=("state",))["state"]
            if check is not None:
                check(step, state)
            if state.get("finished"):     # complete only when its weights read; damage falls back like any step
                items = _weights_read(mngr, step, params_like)
                if mngr.best_step() != step:
                    items = _restore_best_ema(mngr, stage, params_like)
            else:
                items = restore(mngr, step, params_like=params_like, opt_state_like=opt_like(),
                                items=("params", "ema", "opt"))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 — sorted into damage (fall back) and anything else (stop) here
            if not is_damage(e):
                raise read_failed(f"{stage_dir(workdir, stage)}/{step}", e) from e
            bad.append((step, _reason(e)))
            continue
        for s, why in bad:
            moved = set_aside_unreadable(workdir, stage, s)
            warn(f"checkpoint {stage_dir(workdir, stage)}/{s} is damaged ({why}); moved to {moved}; "
                 f"resuming from step {step}")
        if bad:
            mngr.reload()
        return step, state, items
    if bad:
        s, why = bad[0]
        raise CheckpointError(f"{stage_dir(workdir, stage)}: no readable checkpoint ({len(bad)} damaged; step {s}: "
                              f"{why}); use --fresh to set the run aside and start over")
    return None


def _restore_best_ema(mngr, stage: str, params_like: dict) -> dict:
    best = mngr.best_step()
    try:
        return restore(mngr, best, params_like=params_like, items=("ema",))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{mngr.directory}/{best}: the best checkpoint of the finished stage '{stage}' is "
                              f"unreadable ({_reason(e)}); use --fresh to retrain") from e


def restore_best_ema(mngr: ocp.CheckpointManager, stage: str, params_like: dict) -> tuple[int, dict]:
    """(best step, its EMA params): the weights a finished stage hands on."""
    return mngr.best_step(), _restore_best_ema(mngr, stage, params_like)["ema"]


# ---------------------------------------------------------------------------------------------- workdir files
def checkpointed_stages(workdir) -> list[str]:
    """Stage names with a checkpoint directory in ``workdir`` (finished or not)."""
    root = Path(workdir) / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


RUN_FILES = ("checkpoints", "metrics.jsonl", "eval", "run_meta.json", "config.json", "wandb.json", UNREADABLE_DIR)


def set_aside(workdir) -> Path | None:
    """``--fresh``: moves old checkpoints (and logs) aside — never deletes them."""
    workdir = Path(workdir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = None
    for name in RUN_FILES:
        src = workdir / name
        if src.exists():
            dst = workdir / f"old-{stamp}" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            moved = dst.parent
    return moved


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (temp file + rename) so a crash never leaves a half-written file."""
    write_json_atomic(path, obj, indent=1, sort_keys=True, default=str)
