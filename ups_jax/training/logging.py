"""Run logging: a project-owned JSONL file is the source of truth; W&B is an optional second sink.

wandb 0.31 offline mode keeps everything in a binary file with no public local reader
(jax-stack-notes §6), so ``driver analyze``/``compare`` read ``WORKDIR/metrics.jsonl`` only.
Record kinds: run_start, train, val, stage_end, eval, run_end, and resume, stage_skip, preempted,
checkpoint_unreadable (see docs/run-format.md).

W&B: the run id is stored in ``WORKDIR/wandb.json`` the first time and reused by every later process on the
same workdir (``wandb.init(id=..., resume="allow")``), so a resumed training continues the same W&B run. Every
``wandb.log`` carries ``step=``: the run-wide optimizer-update count (the stage's step plus the steps of the
stages before it, ``stage_offsets``), so the stages follow each other on one x axis. W&B ignores a step lower
than one it has already seen: after a resume, the steps between the checkpoint and the kill are in
metrics.jsonl twice but in W&B once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ups_jax.config import resolve_wandb_mode
from ups_jax.files import write_json_atomic

WANDB_ID_FILE = "wandb.json"


def _clean(v: Any) -> Any:
    """JSON-safe scalars: numpy/jax scalars → float/int; NaN/Inf kept as strings JSON can carry."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class RunLogger:
    """Appends one JSON object per call to ``metrics.jsonl`` (flushed, so a killed run keeps its lines)
    and mirrors scalar records to W&B when ``wandb_mode`` allows it.

    wandb_mode: 'auto' (online if WANDB_API_KEY is set, else offline only when WANDB_MODE says so,
    else disabled), 'online', 'offline', 'disabled'.
    """

    def __init__(self, workdir: str | Path, *, config: dict | None = None, wandb_mode: str = "auto",
                 wandb_project: str = "ups_jax", run_name: str | None = None,
                 stage_offsets: dict[str, int] | None = None):
        workdir = Path(workdir)
        self.path = workdir / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)
        self._wandb = None
        self._offsets = dict(stage_offsets or {})
        self._wandb_step = 0
        mode = resolve_wandb_mode(wandb_mode)
        self.wandb_mode, self.wandb_id = mode, None
        if mode != "disabled":
            import wandb  # optional sink: only imported when used

            self.wandb_id = wandb_run_id(workdir, wandb_project, wandb.util.generate_id)
            self._wandb = wandb.init(project=wandb_project, name=run_name or workdir.name, config=config,
                                     mode=mode, dir=str(workdir), id=self.wandb_id, resume="allow")

    def wandb_step(self, fields: dict) -> int:
        """Run-wide step of a record: stage offset + stage step; records without a step keep the last one."""
        if "step" in fields and isinstance(fields["step"], (int, float)):
            step = self._offsets.get(fields.get("stage"), 0) + int(fields["step"])
            self._wandb_step = max(self._wandb_step, step)
        return self._wandb_step

    def log(self, kind: str, **fields: Any) -> dict:
        record = {"kind": kind, "time": time.time(), **{k: _clean(v) for k, v in fields.items()}}
        try:
            self._file.write(json.dumps(record) + "\n")
        except OSError as e:          # a full disk: name the file (a bare write error does not)
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        step = self.wandb_step(fields)      # every record moves the run-wide step (stage_skip, resume too)
        if self._wandb is not None and kind in ("train", "val", "eval", "stage_end"):
            prefix = fields.get("stage") or fields.get("split") or kind
            scalars = {f"{prefix}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "time"}
            self._wandb.log(scalars, step=step)
        return record

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def wandb_run_id(workdir: Path, project: str, new_id) -> str:
    """The W&B run id of this workdir: read from ``wandb.json``, or made with ``new_id()`` and stored (atomically)
    before the first ``wandb.init``, so that every later process resumes the same W&B run."""
    path = Path(workdir) / WANDB_ID_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("id"):
                return str(stored["id"])
        except ValueError:
            pass   # a damaged file: start a new W&B run rather than fail the training
    run_id = str(new_id())
    write_json_atomic(path, {"id": run_id, "project": project})
    return run_id


def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """Reads records; returns (records, number of unparseable lines) — a killed run may truncate the last."""
    records, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return records, bad
