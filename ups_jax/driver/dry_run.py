"""``python -m ups_jax.driver dry-run --config FILE[:arg] [--estimate-only] [--skip-data] [--steps N] [--json]``

Measures instead of guessing (the original used a hand-tuned seconds-per-epoch table). It does, in order, what
``python -m ups_jax.train`` does and times each part:

* startup: process start, imports, the same checks as train's preflight (``validate``: with ``data.paths``
  that includes validate-data's NaN/Inf scan of every sample), loading the data, splits, normalisation, the model;
* per stage: the validator and the training-window loader (train split read into RAM, prefetch thread); the
  loop's first two steps through the same jitted train step with the same kinds of arguments (its compile, and
  any recompile the real run would do: ``compile_s`` = those two calls − 2 step times); steps through the loop's
  body (loader → normalise → RNG split → jitted step); one validation (its compile separately); checkpoint
  saves with the run's retention; and the restore of the best EMA weights into the model at the end of the
  stage, so the next stage starts from the same kind of (restored) weights as in the real run;
* the final evaluation on ``eval.split`` (PDEBench protocol and full horizon, plots, JSON), as train runs it.

Predicted wall time on this machine::

    total   = startup_s + Σ stage total_s + final_eval_s
    total_s = setup_s + compile_s + steps·step_s + val_compile_s + evals·(val_s + checkpoint_s) + end_s

with ``steps`` = optimizer updates (each one scans accum_steps micro-batches) and ``evals`` = ⌈steps / eval_every⌉
(a validation and a checkpoint every ``eval_every`` steps and at the end, as the loop does). Early stopping (``patience``) can only
make the real run shorter. Predicted peak memory on this machine = the dry run's own peak resident memory: it
loads the same data and compiles and runs the same programs. Device memory for a GPU = XLA's
argument + output + temp − alias bytes of the largest compiled step.

GPU estimates come from XLA's FLOP count of each compiled step, a FLOP-rate table with a stated efficiency
factor (``cfg.cost.efficiency``) and a per-step floor (``cfg.cost.min_step_s``); they cover the training steps
only. Prices from ``cfg.cost.price_per_hour`` (defaults: the original report's H100 $2.89/h, A100 $1.89/h,
H200 $2.59/h; override with ``--config.cost.price_per_hour.H100=...``). Recommendation: the cheapest GPU whose
memory holds the largest step.

Exit 0 with an estimate; 1 when the config fails validation (one line: the first errors); 2 for a usage error.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from ups_jax.cli import ArgumentParser
from ups_jax.config import load_config
from ups_jax.errors import UserError
from ups_jax.driver.compiled_step import _flops, _memory, peak_rss_bytes, stage_parts
from ups_jax.driver.compiled_step import compiled_stage_memory, device_memory_bytes  # noqa: F401 (public names, moved)
from ups_jax.driver.synthetic_data import load_data


# Dense peak FLOP/s for float32 matmuls (TF32 tensor cores, which XLA uses for f32 on these GPUs) and memory.
GPU_TABLE = {
    "H100": {"tflops": 494.7, "memory_gb": 80},
    "A100": {"tflops": 156.0, "memory_gb": 80},
    "H200": {"tflops": 494.7, "memory_gb": 141},
}
WARMUP_STEPS = 2


def dry_run(cfg, *, skip_data: bool = False, estimate_only: bool = False, timing_steps: int = 10,
            min_timing_s: float = 1.0, t_process_start: float | None = None) -> dict:
    """Returns the estimate (see the module docstring for the formula); raises UserError(exit 1) on a config
    that fails validation."""
    import jax
    from flax import nnx

    import ups_jax.training.pipeline  # noqa: F401 — train imports it before its clock starts too
    from ups_jax.checks import errors, run_checks
    from ups_jax.data.grids import grid_size, spatial_shape
    from ups_jax.models import build_model, count_params

    t_process_start = t_process_start or time.time()
    checks, _ = run_checks(cfg, skip_data=skip_data)
    errs = errors(checks)
    if errs:
        more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
        raise UserError("config fails validation: " + "; ".join(f"[{e.category}] {e.name}: {e.message}"
                                                                 for e in errs[:3]) + more +
                        " (python -m ups_jax.driver validate for the fixes)", exit_code=1)
    notes: list[str] = []
    data = load_data(cfg, skip_data, notes)
    model = build_model(cfg, num_points=grid_size(spatial_shape(data.dataset)), rngs=nnx.Rngs(cfg.seed))
    t_ready = time.time()
    dev = jax.devices()[0]
    report = {"config": cfg.variant, "device": dev.platform, "device_kind": dev.device_kind,
              "params": count_params(model), "notes": notes, "stages": {},
              "synthetic_data": bool(getattr(data, "synthetic", False)), "estimate_only": bool(estimate_only),
              "startup_s": t_ready - t_process_start, "efficiency": float(cfg.cost.efficiency)}
    if any(int(cfg.stages[n].patience) > 0 for n in cfg.stage_order):
        notes.append("patience > 0: early stopping can make the real run shorter than this estimate")
    for i, name in enumerate(cfg.stage_order):
        report["stages"][name] = _stage_estimate(cfg, data, model, i, name, estimate_only=estimate_only,
                                                 timing_steps=timing_steps, min_timing_s=min_timing_s)
    for name, st in report["stages"].items():
        if st.get("recompiled"):
            notes.append(f"stage {name}: the second train step compiled again ({st['first_steps_s'][1]:.1f} s; "
                         f"the first step's inputs were placed differently from its outputs) — the real run does "
                         f"the same; counted in compile_s")
    if not estimate_only:
        report["final_eval_s"] = _time_final_eval(cfg, data, model)
        report["total_s"] = report["startup_s"] + sum(s["total_s"] for s in report["stages"].values()) \
            + report["final_eval_s"]
        report["predicted_peak_rss_bytes"] = peak_rss_bytes()
    peaks = [s["peak_bytes"] for s in report["stages"].values()]
    report["device_peak_bytes"] = None if None in peaks else max(peaks)     # unknown when any stage's is
    notes += [f"stage {name}: XLA peak memory unknown ({s['memory_unknown']})"
              for name, s in report["stages"].items() if s.get("memory_unknown")]
    report["gpu"] = gpu_estimates(cfg, report)
    report["recommendation"] = recommend(report["gpu"])
    return report


def recommend(gpu: dict) -> str | None:
    """The cheapest GPU whose memory holds the largest compiled step (None when none does)."""
    fits = [g for g, e in gpu.items() if e["fits"]]
    return min(fits, key=lambda g: gpu[g]["cost_usd"]) if fits else None


def _stage_estimate(cfg, data, model, i, name, *, estimate_only, timing_steps, min_timing_s) -> dict:
    """One stage as ``train_and_evaluate`` + ``run_stage`` run it, timed part by part. Steps go through the same
    jitted function with the same kinds of arguments as the loop, so a recompile the real run would do (e.g.
    the second step seeing differently placed inputs) is timed too; XLA's analysis reuses that compilation."""
    import jax

    from ups_jax.training.stages import make_validator

    t0 = time.perf_counter()
    validate, _ = make_validator(name, cfg, data, model)
    sc, runner, state, loader = stage_parts(cfg, data, model, i, name)
    updates = int(sc.steps)    # optimizer updates (each scans accum_steps micro-batches)
    n_evals = -(-updates // int(sc.eval_every))
    N = runner.steps_per_dispatch
    key = runner.place(jax.random.key(cfg.seed + i))
    try:
        setup_s = time.perf_counter() - t0
        st = {"steps": updates, "evals": n_evals, "setup_s": setup_s, "steps_per_dispatch": N}
        if estimate_only:
            t0 = time.perf_counter()
            compiled = runner.lower(state, N).compile()
            st["compile_s"] = time.perf_counter() - t0
            st.update(flops_per_step=_flops(compiled) / N, **_memory(compiled))
            return st
        first_calls, k = [], 0
        for _ in range(WARMUP_STEPS):   # the loop's first dispatches: compile (+ any recompile) + run
            t0 = time.perf_counter()
            state, out = runner.run(state, key, k, runner.next_inputs(N))
            jax.block_until_ready((state, out))
            first_calls.append(time.perf_counter() - t0)
            k += N
        compiled = runner.lower(state, N).compile()     # cached: the analysis of what the first call compiled
        st.update(flops_per_step=_flops(compiled) / N, **_memory(compiled))
        del compiled
        t0, done = time.perf_counter(), 0
        chunk = max(-(-int(timing_steps) // N), 1)      # dispatches between syncs
        while True:   # the body of run_stage's loop
            state, out = runner.run(state, key, k, runner.next_inputs(N))
            k, done = k + N, done + 1
            if done % chunk == 0:
                jax.block_until_ready((state, out))
                if time.perf_counter() - t0 >= min_timing_s or done >= 50 * chunk:
                    break
        st["timed_steps"] = done * N
        st["step_s"] = (time.perf_counter() - t0) / (done * N)
        st["first_steps_s"] = first_calls
        st["compile_s"] = max(sum(first_calls) - WARMUP_STEPS * N * st["step_s"], 0.0)
        if first_calls[1] > max(1.0, 20 * N * st["step_s"]):
            st["recompiled"] = True
    finally:
        loader.close()
    opt_state = state.opt
    st.update(_time_validation_and_checkpoint(cfg, name, validate, model, opt_state, n_evals))
    st["train_s"] = updates * st["step_s"]
    st["total_s"] = (st["setup_s"] + st["compile_s"] + st["train_s"] + st["val_compile_s"]
                     + n_evals * (st["val_s"] + st["checkpoint_s"]) + st["end_s"])
    return st


def _time_validation_and_checkpoint(cfg, name, validate, model, opt_state, n_evals) -> dict:
    """One validation (first call = compile + run), checkpoint saves as the loop writes them (params, EMA,
    optimizer state, JSON state; the run's retention), and the end-of-stage restore of the best EMA."""
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import load_param_dict, param_dict

    t0 = time.perf_counter()
    validate(model)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = validate(model)
    val_s = time.perf_counter() - t0
    saves = max(1, min(int(n_evals), 2))
    with tempfile.TemporaryDirectory() as d:
        mngr = ckpt.open_manager(d, name, keep_latest=cfg.checkpoint.keep_latest, keep_best=cfg.checkpoint.keep_best,
                                 metadata={"config": cfg.to_dict()})
        p = param_dict(model)
        t0 = time.perf_counter()
        for k in range(saves):
            ckpt.save(mngr, k + 1, params=p, ema=p, opt_state=opt_state, val=1.0 - k, state={
                "step": k + 1, "rng": [0, 0], "best_val": 1.0, "best_step": k + 1, "evals_since_best": 0,
                "loader": {}, "finished": False, "stopped_early": False, "stage": name,
                "metrics": {key: float(v) for key, v in metrics.items()}})
        mngr.wait_until_finished()
        checkpoint_s = (time.perf_counter() - t0) / saves
        t0 = time.perf_counter()
        best = ckpt.restore(mngr, mngr.best_step(), params_like=p, items=("ema",))["ema"]
        load_param_dict(model, best)    # as run_stage: the next stage starts from restored (device-placed) weights
        mngr.close()
        end_s = time.perf_counter() - t0
    return {"val_s": val_s, "val_compile_s": max(first - val_s, 0.0), "checkpoint_s": checkpoint_s,
            "end_s": end_s}


def _time_final_eval(cfg, data, model) -> float:
    from ups_jax.training.pipeline import run_evaluation

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run_evaluation(model, cfg, data, Path(d))
        return time.perf_counter() - t0


def gpu_estimates(cfg, report) -> dict:
    eff = float(cfg.cost.efficiency)
    floor = float(cfg.cost.min_step_s)
    prices = dict(cfg.cost.price_per_hour)
    out = {}
    for gpu, spec in GPU_TABLE.items():
        if gpu not in prices:
            continue
        seconds = 0.0
        for st in report["stages"].values():
            per_step = max(st["flops_per_step"] / (spec["tflops"] * 1e12 * eff), floor) \
                if math.isfinite(st["flops_per_step"]) else floor
            seconds += st["steps"] * per_step
        hours = seconds / 3600
        out[gpu] = {"train_s": seconds, "hours": hours, "price_per_hour": float(prices[gpu]),
                    "cost_usd": hours * float(prices[gpu]),
                    "fits": None if report["device_peak_bytes"] is None          # None: memory unknown
                    else report["device_peak_bytes"] < 0.9 * spec["memory_gb"] * 2**30}
    return out


def format_report(r: dict) -> str:
    mib = lambda b: "unknown" if b is None else f"{b / 2**20:.1f} MiB"
    nan = float("nan")
    lines = [f"dry run: config {r['config']} on {r['device']} ({r['device_kind']}); params " +
             ", ".join(f"{k}={v:,}" for k, v in r["params"].items())]
    lines += [f"note: {n}" for n in r["notes"]]
    head = f"{'stage':10s} {'steps':>7s} {'step ms':>8s} {'setup s':>7s} {'compile s':>9s} {'evals':>5s} " \
           f"{'val s':>6s} {'ckpt s':>6s} {'est. s':>8s} {'GFLOP/step':>10s} {'XLA peak':>10s}"
    lines += ["", head, "-" * len(head)]
    for name, s in r["stages"].items():
        lines.append(f"{name:10s} {s['steps']:7d} {1e3 * s.get('step_s', nan):8.2f} {s['setup_s']:7.2f} "
                     f"{s['compile_s']:9.2f} {s['evals']:5d} {s.get('val_s', nan):6.2f} "
                     f"{s.get('checkpoint_s', nan):6.2f} "
                     f"{s.get('total_s', nan):8.1f} {s['flops_per_step'] / 1e9:10.3f} {mib(s['peak_bytes']):>10s}")
    if "total_s" in r:
        lines += ["", f"startup {r['startup_s']:.1f} s + stages {sum(s['total_s'] for s in r['stages'].values()):.1f} s"
                      f" + final evaluation {r['final_eval_s']:.1f} s = predicted wall time {r['total_s']:.0f} s "
                      f"({r['total_s'] / 60:.1f} min) on this machine",
                  f"predicted peak memory (resident): {mib(r['predicted_peak_rss_bytes'])}"]
    else:
        lines += ["", "--estimate-only: compiled and analysed, no step executed (no wall-time prediction)"]
    lines += ["", f"{'GPU':6s} {'train':>10s} {'hours':>8s} {'$/h':>6s} {'cost $':>8s}  fits"]
    for gpu, e in r["gpu"].items():
        lines.append(f"{gpu:6s} {e['train_s']:9.0f}s {e['hours']:8.4f} {e['price_per_hour']:6.2f} "
                     f"{e['cost_usd']:8.3f}  {'unknown' if e['fits'] is None else 'yes' if e['fits'] else 'no'}")
    lines.append(f"recommendation: {r['recommendation'] or 'no listed GPU fits'} (cheapest that fits; GPU times "
                 f"count training steps at {r['efficiency']:g} of peak TF32 FLOP/s (cfg.cost.efficiency), "
                 f"not measured here)")
    return "\n".join(lines)


def _process_start() -> float:
    """Wall-clock time this process started (so start-up and imports count, as in the real run)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        pass
    try:   # Linux without psutil: start time in clock ticks since boot
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def main(argv) -> int:
    t_start = _process_start()
    parser = ArgumentParser(prog="python -m ups_jax.driver dry-run", description=__doc__, config=True)
    parser.add_argument("--estimate-only", action="store_true", help="compile and analyse; do not execute steps")
    parser.add_argument("--skip-data", action="store_true",
                        help="read no data file: synthetic fields with the grid of data.generate")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage after warm-up (at least; "
                        "more until --min-time seconds)")
    parser.add_argument("--min-time", type=float, default=1.0, help="time each stage's steps for ≥ this many s")
    parser.add_argument("--json", action="store_true")
    spec, overrides, args = parser.parse_with_config(argv)
    if args.steps < 1 or args.min_time < 0:
        raise UserError("dry-run: --steps must be ≥ 1 and --min-time ≥ 0")
    cfg = load_config(spec, overrides)
    from ups_jax.compilation import enable_cache_from_config

    enable_cache_from_config(cfg)       # the second dry run of a config reuses the first one's compilations
    r = dry_run(cfg, skip_data=args.skip_data, estimate_only=args.estimate_only, timing_steps=args.steps,
                min_timing_s=args.min_time, t_process_start=t_start)
    print(json.dumps(r, indent=1, default=float) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))