"""Run logging: a project-owned JSONL file is the source of truth; W&B is an optional second sink.

wandb 0.31 offline mode keeps everything in a binary file with no public local reader
(jax-stack-notes §6), so ``driver analyze``/``compare`` read ``WORKDIR/metrics.jsonl`` only.
Record kinds: run_start, train, val, stage_end, eval, run_end (see docs/run-format.md).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


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
                 wandb_project: str = "ups_jax", run_name: str | None = None):
        self.path = Path(workdir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)
        self._wandb = None
        mode = resolve_wandb_mode(wandb_mode)
        if mode != "disabled":
            import wandb  # optional sink: only imported when used

            self._wandb = wandb.init(project=wandb_project, name=run_name or Path(workdir).name, config=config,
                                     mode=mode, dir=str(Path(workdir)), resume="allow")
        self.wandb_mode = mode

    def log(self, kind: str, **fields: Any) -> dict:
        record = {"kind": kind, "time": time.time(), **{k: _clean(v) for k, v in fields.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self._wandb is not None and kind in ("train", "val", "eval", "stage_end"):
            prefix = fields.get("stage") or fields.get("split") or kind
            scalars = {f"{prefix}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and k != "time"}
            self._wandb.log(scalars)
        return record

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def resolve_wandb_mode(mode: str) -> str:
    """W&B is never required: without a key we log offline only if asked, else not at all."""
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "")
        if env in ("online", "offline", "disabled"):
            return env
        return "online" if os.environ.get("WANDB_API_KEY") else "disabled"
    if mode not in ("online", "offline", "disabled"):
        from ups_jax.errors import ConfigError

        raise ConfigError(f"logging.wandb_mode={mode!r}: choose auto, online, offline or disabled")
    return mode


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
