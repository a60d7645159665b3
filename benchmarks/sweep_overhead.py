"""Sweep overhead: experiments/smoke.py on a local Ray (2 CPUs) vs the same trials run bare, one after another.

    python benchmarks/sweep_overhead.py [--runs-dir /tmp/sweep_bench]

* bare: ``train_and_evaluate`` of each of the 4 trial configs in sequence in one process (what you would run
  without Ray; every trial trains all its steps and then evaluates on the test split).
* sweep: ``python -m ups_jax.fleet.sweep --experiment experiments/smoke.py`` in a fresh process, which starts and
  stops its own local Ray, runs 2 trials at a time under ASHA, and prints the table.

Both start from the same generated data (made before timing) and without a persistent compilation cache (every
trial compiles, as on a fresh node). Printed: both wall times, their ratio, the bare time without the test
evaluations (sweep trials skip them: selection is on validation), ASHA's early stops, the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bare(runs: Path) -> tuple[float, float]:
    """Returns (wall seconds, seconds spent in the final test evaluations)."""
    from ups_jax.fleet.experiment import load_experiment, trial_config
    from ups_jax.training.pipeline import train_and_evaluate

    exp = load_experiment(str(ROOT / "experiments" / "smoke.py"))
    base = exp.base_config()
    eval_s = 0.0
    t0 = time.perf_counter()
    for i, lr in enumerate(exp.search_space["stages.operator.lr"]["grid_search"]):
        cfg = trial_config(base.to_dict(), {"stages.operator.lr": lr})
        workdir = runs / f"bare_{i}"
        train_and_evaluate(cfg, workdir, fresh=True)
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        last_stage_end = max(r["time"] for r in records if r["kind"] == "stage_end")
        eval_s += next(r["time"] for r in records if r["kind"] == "eval") - last_stage_end
    return time.perf_counter() - t0, eval_s


def sweep(runs: Path) -> tuple[float, dict]:
    storage = runs / "sweeps"
    # token auth off: a local ray.init() would otherwise write ~/.ray/auth_token, which changes later `ray start`s
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ups_jax.fleet.sweep", "--experiment",
                           str(ROOT / "experiments" / "smoke.py"), "--storage", str(storage)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, json.loads((storage / "smoke" / "fleet_summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="/tmp/ups_jax_sweep_bench")
    args = p.parse_args()
    runs = Path(args.runs_dir)
    if runs.exists() and any(runs.iterdir()):
        sys.exit(f"{runs} exists and is not empty; pass a new --runs-dir")
    for k in ("JAX_COMPILATION_CACHE_DIR",):
        os.environ.pop(k, None)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from ups_jax.data.default import ensure_default_data
    from ups_jax.fleet.experiment import load_experiment

    ensure_default_data(load_experiment(str(ROOT / "experiments" / "smoke.py")).base_config())   # not timed
    load0 = os.getloadavg()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, cpus: {os.cpu_count()}, load average (1/5/15 min) before "
          f"bare {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}", flush=True)
    bare_s, eval_s = bare(runs)
    print(f"bare sequential (4 trials, train + test eval): {bare_s:.1f} s (of which test evaluation {eval_s:.1f} s)",
          flush=True)
    load1 = os.getloadavg()
    sweep_s, summary = sweep(runs)
    load2 = os.getloadavg()
    states = summary["totals"]["by_state"]
    print(f"load average before sweep {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}, after "
          f"{load2[0]:.1f}/{load2[1]:.1f}/{load2[2]:.1f}")
    print(f"sweep (local Ray start/stop, ASHA, 2 at a time): {sweep_s:.1f} s; trials: "
          + ", ".join(f"{n} {s}" for s, n in states.items()))
    print(f"ratio sweep / bare: {sweep_s / bare_s:.2f}  (vs bare without the test evaluations: "
          f"{sweep_s / (bare_s - eval_s):.2f})")


if __name__ == "__main__":
    main()
