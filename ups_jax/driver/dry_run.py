"""``python -m ups_jax.driver dry-run --config FILE[:arg] [--estimate-only] [--skip-data] [--steps N] [--json]``

Measures instead of guessing (the original used a hand-tuned seconds-per-epoch table): validates the config,
loads one real batch, builds the model, compiles every stage's train step, reads XLA's own memory and FLOP
analysis of the compiled step, times steps after warm-up, times one validation, one checkpoint save and the
final evaluation, and adds them up for the configured steps. GPU estimates come from a FLOP-rate table with a
stated efficiency factor (``cfg.cost.efficiency``) and a per-step floor (``cfg.cost.min_step_s``); prices from
``cfg.cost.price_per_hour`` (defaults: the original report's H100 $2.89/h, A100 $1.89/h, H200 $2.59/h).

Predicted peak memory on this machine = the dry run's own peak resident memory: it loads the same data and
compiles and runs the same programs as the training run. Device memory for a GPU = XLA's
argument + output + temp − alias bytes of the largest compiled step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ups_jax.config import load_config, split_config_args
from ups_jax.errors import ConfigError, UserError

# Dense peak FLOP/s for float32 matmuls (TF32 tensor cores, which XLA uses for f32 on these GPUs) and memory.
GPU_TABLE = {
    "H100": {"tflops": 494.7, "memory_gb": 80},
    "A100": {"tflops": 156.0, "memory_gb": 80},
    "H200": {"tflops": 494.7, "memory_gb": 141},
}


def device_memory_bytes() -> int:
    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")   # CPU: host memory


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def _flops(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):      # jax < 0.4.30 returned a list of dicts
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {"argument_bytes": 0, "output_bytes": 0, "temp_bytes": 0, "alias_bytes": 0, "peak_bytes": 0}
    out = {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
           "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes)}
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


class _SyntheticData:
    """Stand-in with the config's grid when --skip-data (or the default data is not generated yet)."""

    def __init__(self, cfg):
        from ups_jax.driver.validate import _grid

        nx, nt, n = _grid(cfg)
        rng = np.random.default_rng(0)
        x = (np.arange(nx) + 0.5) / nx
        k = rng.integers(1, 4, size=(n, 1, 1))
        t = np.arange(nt)[None, :, None] * 0.05
        self.traj = (np.sin(2 * np.pi * k * (x[None, None] - 0.1 * t)) * np.exp(-t)).astype(np.float32)
        self.nu = np.full((n,), cfg.data.generate.nu, np.float32)
        self.norm = {"mean": 0.0, "std": float(self.traj.std())}
        self.x = x.astype(np.float32) * 2 - 1
        self.x01 = x.astype(np.float32)
        self.Lx = 2.0
        n_test, n_val = max(1, int(n * cfg.data.test_fraction)), max(1, int(n * cfg.data.val_fraction))
        self.splits = {"test": np.arange(n_test), "val": np.arange(n_test, n_test + n_val),
                       "train": np.arange(n_test + n_val, n)}
        self.dataset = type("D", (), {"dt": 0.05, "nx": nx, "nt": nt, "num_trajectories": n})()
        self.synthetic = True

    def trajectories(self, split, limit=0):
        idx = self.splits[split][:limit] if limit else self.splits[split]
        return self.traj[idx], self.nu[idx]

    def prepare_batch(self, batch):
        from ups_jax.training.pipeline import RunData

        return RunData.prepare_batch(self, batch)

    def batch(self, window, batch_size):
        idx = np.resize(self.splits["train"], batch_size)
        return {"u": self.traj[idx, :window], "nu": self.nu[idx], "dt": np.full((batch_size,), 0.05, np.float32)}


def _load_data(cfg, skip_data: bool, notes: list):
    if skip_data:
        notes.append("--skip-data: synthetic fields with the config's grid (timings of the real run match; "
                     "no data-loading cost measured)")
        return _SyntheticData(cfg)
    if not cfg.data.paths and not (Path(cfg.data.default_dir)).exists():
        notes.append(f"default data not generated yet in {cfg.data.default_dir} (train will generate it); "
                     "timing on synthetic fields with the same grid")
        return _SyntheticData(cfg)
    from ups_jax.training.pipeline import RunData

    data = RunData(cfg)
    data.synthetic = False
    return data


def _first_batch(cfg, data, stage_cfg, seed):
    if getattr(data, "synthetic", False):
        return data.batch(stage_cfg.rollout_steps + 1, stage_cfg.batch_size)
    from ups_jax.data.loader import WindowLoader

    loader = WindowLoader(data.dataset, data.splits["train"], window=stage_cfg.rollout_steps + 1,
                          batch_size=stage_cfg.batch_size, seed=seed, prefetch=0)
    try:
        return next(iter(loader))
    finally:
        if hasattr(loader, "close"):
            loader.close()


def _stage_programs(cfg, data, model):
    """Yields (name, stage cfg, train_step, args) with args ready for .lower(*args)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.training.loop import make_train_step, trainable_filter
    from ups_jax.training.losses import make_ups_loss
    from ups_jax.training.optim import make_optimizer

    for i, name in enumerate(cfg.stage_order):
        sc = cfg.stages[name]
        loss_fn = make_ups_loss(sc.losses, x01=jnp.asarray(data.x01), rollout_steps=sc.rollout_steps,
                                query_points=sc.query_points)
        graphdef, params, rest = nnx.split(model, trainable_filter(tuple(sc.trainable)), ...)
        tx = make_optimizer(sc)
        step = make_train_step(graphdef, loss_fn, tx, float(sc.ema_decay))
        batch = data.prepare_batch(_first_batch(cfg, data, sc, cfg.seed + 1000 * i))
        args = (params, tx.init(params), params, rest, batch, jax.random.key(0))
        yield name, sc, step, args


def compiled_stage_memory(cfg) -> dict:
    """XLA memory of each stage's compiled train step (no execution); used by ``validate --compile``."""
    from flax import nnx

    from ups_jax.models import build_model

    data = _SyntheticData(cfg)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
    out = {}
    for name, sc, step, args in _stage_programs(cfg, data, model):
        compiled = step.lower(*args).compile()
        out[name] = {**_memory(compiled), "flops": _flops(compiled)}
    return out


def dry_run(cfg, *, skip_data: bool = False, estimate_only: bool = False, timing_steps: int = 5,
            t_process_start: float | None = None) -> dict:
    import jax
    from flax import nnx

    from ups_jax.driver.validate import errors, run_checks
    from ups_jax.models import build_model, count_params

    t_process_start = t_process_start or time.time()
    checks = run_checks(cfg)
    errs = errors(checks)
    if errs:
        raise UserError("config fails validation: " + "; ".join(f"{e.name}: {e.message}" for e in errs[:3]) +
                        " (run driver validate for the full list)", exit_code=1)
    notes: list[str] = []
    data = _load_data(cfg, skip_data, notes)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
    t_ready = time.time()
    report = {"config": cfg.variant, "device": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
              "params": count_params(model), "notes": notes, "stages": {}, "synthetic_data": data.__dict__.get(
                  "synthetic", False), "startup_s": t_ready - t_process_start}
    for name, sc, step, args in _stage_programs(cfg, data, model):
        t0 = time.perf_counter()
        compiled = step.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        micro_steps = int(sc.steps) * int(sc.accum_steps)
        n_evals = micro_steps // int(sc.eval_every) + (micro_steps % int(sc.eval_every) != 0)
        st = {"steps": micro_steps, "evals": n_evals, "compile_s": compile_s, "flops_per_step": _flops(compiled),
              **_memory(compiled)}
        if not estimate_only:
            state = args
            out = compiled(*state)               # warm-up (first execution allocates)
            jax.block_until_ready(out)
            t0 = time.perf_counter()
            for _ in range(timing_steps):
                params, opt_state, ema, _ = compiled(*state)
                state = (params, opt_state, ema) + state[3:]
            jax.block_until_ready(state[:3])
            st["step_s"] = (time.perf_counter() - t0) / timing_steps
            st.update(_time_validation_and_checkpoint(cfg, name, data, model, args))
            st["train_s"] = micro_steps * st["step_s"]
            st["total_s"] = (st["compile_s"] + st["train_s"] + st["val_compile_s"]
                             + n_evals * (st["val_s"] + st["checkpoint_s"]))
        report["stages"][name] = st
    if not estimate_only:
        report["final_eval_s"] = _time_final_eval(cfg, data, model)
        report["total_s"] = report["startup_s"] + sum(s["total_s"] for s in report["stages"].values()) \
            + report["final_eval_s"]
        report["predicted_peak_rss_bytes"] = peak_rss_bytes()
    report["device_peak_bytes"] = max(s["peak_bytes"] for s in report["stages"].values())
    report["gpu"] = gpu_estimates(cfg, report)
    fits = [g for g, e in report["gpu"].items() if e["fits"]]
    report["recommendation"] = min(fits, key=lambda g: report["gpu"][g]["cost_usd"]) if fits else None
    return report


def _time_validation_and_checkpoint(cfg, name, data, model, args) -> dict:
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import param_dict
    from ups_jax.training.pipeline import make_validator

    validate, _ = make_validator(name, cfg, data, model)
    t0 = time.perf_counter()
    validate(model)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    validate(model)
    val_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        mngr = ckpt.open_manager(d, name)
        p = param_dict(model)
        t0 = time.perf_counter()
        ckpt.save(mngr, 1, params=p, ema=p, opt_state=args[1], state={"step": 1}, val=0.0)
        mngr.wait_until_finished()
        checkpoint_s = time.perf_counter() - t0
        mngr.close()
    return {"val_s": val_s, "val_compile_s": max(first - val_s, 0.0), "checkpoint_s": checkpoint_s}


def _time_final_eval(cfg, data, model) -> float:
    from ups_jax.training.pipeline import run_evaluation

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        import contextlib
        import io

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
        out[gpu] = {"train_s": seconds, "hours": hours, "price_per_hour": prices[gpu],
                    "cost_usd": hours * prices[gpu],
                    "fits": report["device_peak_bytes"] < 0.9 * spec["memory_gb"] * 2**30}
    return out


def format_report(r: dict) -> str:
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    lines = [f"dry run: config {r['config']} on {r['device']} ({r['device_kind']}); params " +
             ", ".join(f"{k}={v:,}" for k, v in r["params"].items())]
    lines += [f"note: {n}" for n in r["notes"]]
    head = f"{'stage':10s} {'steps':>7s} {'step ms':>8s} {'compile s':>9s} {'evals':>5s} {'val s':>6s} " \
           f"{'est. s':>8s} {'GFLOP/step':>10s} {'XLA peak':>10s}"
    lines += ["", head, "-" * len(head)]
    for name, s in r["stages"].items():
        lines.append(f"{name:10s} {s['steps']:7d} {1e3 * s.get('step_s', float('nan')):8.2f} {s['compile_s']:9.2f} "
                     f"{s['evals']:5d} {s.get('val_s', float('nan')):6.2f} {s.get('total_s', float('nan')):8.1f} "
                     f"{s['flops_per_step'] / 1e9:10.3f} {mib(s['peak_bytes']):>10s}")
    if "total_s" in r:
        lines += ["", f"startup {r['startup_s']:.1f} s + stages + final evaluation {r['final_eval_s']:.1f} s "
                      f"= predicted wall time {r['total_s']:.0f} s ({r['total_s'] / 60:.1f} min) on this machine",
                  f"predicted peak memory (resident): {mib(r['predicted_peak_rss_bytes'])}"]
    lines += ["", f"{'GPU':6s} {'train':>10s} {'$/h':>6s} {'cost':>8s}  fits"]
    for gpu, e in r["gpu"].items():
        lines.append(f"{gpu:6s} {e['train_s']:9.0f}s {e['price_per_hour']:6.2f} {e['cost_usd']:8.3f}  "
                     f"{'yes' if e['fits'] else 'no'}")
    lines.append(f"recommendation: {r['recommendation'] or 'no listed GPU fits'} (cheapest that fits; GPU times "
                 f"assume {r.get('efficiency', 'cfg.cost.efficiency')} of peak TF32 FLOP/s, not measured here)")
    return "\n".join(lines)


def _process_start() -> float:
    try:  # psutil ships with ray[default]; counts interpreter start-up and imports like the real run
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        return time.time()


def main(argv) -> int:
    t_start = _process_start()
    spec, overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(prog="python -m ups_jax.driver dry-run")
    parser.add_argument("--estimate-only", action="store_true", help="compile and analyse; do not execute steps")
    parser.add_argument("--skip-data", action="store_true", help="synthetic fields with the config's grid")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage after warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(rest)
    if spec is None:
        raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
    cfg = load_config(spec, overrides)
    r = dry_run(cfg, skip_data=args.skip_data, estimate_only=args.estimate_only, timing_steps=args.steps,
                t_process_start=t_start)
    r["efficiency"] = float(cfg.cost.efficiency)
    print(json.dumps(r, indent=1, default=float) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
