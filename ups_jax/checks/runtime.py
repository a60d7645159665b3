"""Runtime checks: W&B logging, checkpoint retention and cadence, data-parallel devices, compute dtype, NaN guard."""

from __future__ import annotations

import os

from ups_jax.checks.report import Checks
from ups_jax.config import WANDB_MODES, resolve_wandb_mode


def check_logging(cfg, c: Checks):
    L = "logging"
    mode = cfg.logging.wandb_mode
    if c.add(L, "wandb mode", mode in WANDB_MODES, f"logging.wandb_mode={mode!r}",
             "choose auto, online, offline or disabled"):
        has_key = bool(os.environ.get("WANDB_API_KEY"))
        effective = resolve_wandb_mode(mode)
        if effective == "online" and not has_key:   # W&B is optional: never an error
            c.add(L, "wandb key", False, f"W&B online (wandb_mode={mode}) but WANDB_API_KEY is not set",
                  "export WANDB_API_KEY or use wandb_mode=offline/auto; metrics.jsonl is always written",
                  severity="warning")
        else:
            c.add(L, "wandb", True, f"W&B {effective}" + (" (no WANDB_API_KEY)" if mode == "auto" and not has_key
                                                          else "") + "; metrics.jsonl is always written",
                  severity="info")
        c.add(L, "wandb project", bool(cfg.logging.wandb_project) or effective == "disabled",
              "logging.wandb_project is empty", "set a project name", severity="warning",
              passed=f"logging.wandb_project={cfg.logging.wandb_project!r}")
    c.add(L, "retention", cfg.checkpoint.keep_latest >= 1 and cfg.checkpoint.keep_best >= 1,
          f"checkpoint.keep_latest={cfg.checkpoint.keep_latest}, keep_best={cfg.checkpoint.keep_best}",
          "keep ≥ 1 latest (resume) and ≥ 1 best")
    ck = cfg.checkpoint
    c.add("checkpoints", "cadence", ck.every_steps >= 0 and ck.every_minutes >= 0,
          f"checkpoint.every_steps={ck.every_steps}, every_minutes={ck.every_minutes}",
          "use ≥ 0 (0 = off; a checkpoint is also written at every validation)",
          passed=f"resume points: every validation" + (f", every {ck.every_steps} steps" if ck.every_steps else "")
                 + (f", every {ck.every_minutes:g} min" if ck.every_minutes else "") + " and on SIGTERM")


COMPUTE_DTYPES = ("float32", "bfloat16")


def data_parallel_size(setting, batch_sizes, n_devices: int) -> tuple[int, str | None]:
    """``runtime.data_parallel`` → (number of devices the batch is split over, problem or None).

    'off' = 1; 'auto' = the most local devices that divide every stage's batch size; a number N = exactly N
    (a problem when N exceeds the devices or does not divide a batch size)."""
    setting = str(setting).strip().lower()
    sizes = [int(b) for b in batch_sizes]
    if setting in ("off", "1", "none"):
        return 1, None
    if setting == "auto":
        return max(n for n in range(1, max(n_devices, 1) + 1) if all(b % n == 0 for b in sizes)), None
    try:
        n = int(setting)
    except ValueError:
        return 1, f"runtime.data_parallel={setting!r}: choose auto, off or a device count"
    if n < 1 or n > n_devices:
        return 1, f"runtime.data_parallel={n} but this machine has {n_devices} local device(s)"
    bad = [b for b in sizes if b % n]
    if bad:
        return 1, f"runtime.data_parallel={n} does not divide the batch size {bad[0]} (each device gets an equal share)"
    return n, None


def check_runtime(cfg, c: Checks):
    H, P = "hardware", "hyper-parameters"
    r = cfg.runtime
    order = [n for n in cfg.stage_order if n in cfg.stages]
    sizes = [cfg.stages[n].batch_size for n in order if cfg.stages[n].batch_size >= 1]
    import jax   # the local device count (initialises the backend; every check that builds a model does too)

    devices = jax.local_device_count()
    n, problem = data_parallel_size(r.data_parallel, sizes, devices)
    c.add(H, "data parallel", problem is None, problem or "",
          "use a device count that divides every stages.<name>.batch_size, or auto / off",
          passed=f"runtime.data_parallel={r.data_parallel}: batch split over {n} of {devices} "
                 f"{jax.devices()[0].platform} device(s)" + (" (parameters replicated)" if n > 1 else ""))
    if c.add(H, "compute dtype", r.compute_dtype in COMPUTE_DTYPES, f"runtime.compute_dtype={r.compute_dtype!r}",
             f"choose one of {', '.join(COMPUTE_DTYPES)}"):
        if r.compute_dtype == "bfloat16" and jax.devices()[0].platform == "cpu":
            c.add(H, "bf16 on CPU", False, "runtime.compute_dtype=bfloat16 on a CPU: no faster than float32 "
                  "there and less accurate", "use float32 on CPUs; bfloat16 is for GPUs", severity="warning")
    from ups_jax.dispatch import resolve_steps_per_dispatch, steps_per_dispatch_problem

    spd = r.get("steps_per_dispatch", "auto")
    every = int(cfg.checkpoint.every_steps)
    problems = [p for p in (steps_per_dispatch_problem(spd, n, cfg.stages[n], every) for n in order) if p]
    c.add(H, "steps per dispatch", not problems, problems[0] if problems else "",
          "use 'auto' or a count that divides every stage's steps, log_every, eval_every and checkpoint.every_steps",
          passed="updates per dispatch: " + ", ".join(
              f"{n} {resolve_steps_per_dispatch(spd, cfg.stages[n], every)}" for n in order))
    c.add(P, "nan guard", r.max_nonfinite_steps >= 1, f"runtime.max_nonfinite_steps={r.max_nonfinite_steps}",
          "use ≥ 1 (consecutive skipped non-finite steps before the run stops)",
          passed=f"a non-finite step is skipped; the run stops after {r.max_nonfinite_steps} in a row")
