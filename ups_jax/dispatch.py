"""How many optimizer updates one compiled call runs (``runtime.steps_per_dispatch``; training/step.py): the
config-level rules, below training so that the config checks can apply them without importing it.

Logging, validation, checkpoints and the SIGTERM check happen between dispatches, so N must divide every
update cadence of a stage; ``auto`` picks the largest such N up to 32 (enough to hide the host's per-call work
on a GPU; on a CPU a step is compute-bound and N changes little).
"""

from __future__ import annotations

import math


def auto_steps_per_dispatch(stage_cfg, checkpoint_every_steps: int = 0, cap: int = 32) -> int:
    """The largest N ≤ ``cap`` dividing the stage's steps and every update cadence (log_every, eval_every,
    checkpoint.every_steps): logging, validation and checkpoints then land on dispatch boundaries unchanged."""
    cadences = [int(stage_cfg.steps), int(stage_cfg.log_every), int(stage_cfg.eval_every)]
    if checkpoint_every_steps:
        cadences.append(int(checkpoint_every_steps))
    g = 0
    for c in cadences:
        g = math.gcd(g, max(c, 1))
    return max(d for d in range(1, min(cap, g) + 1) if g % d == 0)


def resolve_steps_per_dispatch(value, stage_cfg, checkpoint_every_steps: int = 0) -> int:
    """``runtime.steps_per_dispatch``: 'auto' or a positive int (already checked by the config checks)."""
    if str(value) == "auto":
        return auto_steps_per_dispatch(stage_cfg, checkpoint_every_steps)
    return int(value)


def steps_per_dispatch_problem(value, stage_name: str, stage_cfg, checkpoint_every_steps: int = 0) -> str | None:
    """Why ``runtime.steps_per_dispatch`` cannot be used by this stage (one line), or None."""
    if str(value) == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return f"runtime.steps_per_dispatch={value!r} must be 'auto' or a positive integer"
    if n < 1:
        return f"runtime.steps_per_dispatch={n} must be 'auto' or a positive integer"
    steps = int(stage_cfg.steps)
    if n > steps:
        return f"runtime.steps_per_dispatch={n} is larger than stage {stage_name} ({steps} steps)"
    named = {f"stages.{stage_name}.steps": steps, f"stages.{stage_name}.log_every": int(stage_cfg.log_every),
             f"stages.{stage_name}.eval_every": int(stage_cfg.eval_every)}
    if checkpoint_every_steps:
        named["checkpoint.every_steps"] = int(checkpoint_every_steps)
    for key, every in named.items():
        if every % n:
            return (f"runtime.steps_per_dispatch={n} does not divide {key}={every} (logging, validation and "
                    f"checkpoints happen between dispatches)")
    return None
