"""Sweep overhead: experiments/smoke.py on a local Ray (2 CPUs) vs the same trials run bare, one after another.

    python benchmarks/sweep_overhead.py [--runs-dir /tmp/sweep_bench]

* bare: ``train_and_evaluate`` of each of the 4 trial configs in sequence in one process (what you would run
  without Ray; every trial trains all its steps and then evaluates on the test split).
* sweep: ``python -m ups_jax.fleet.sweep --experiment experiments/smoke.py`` in a fresh process, which starts and
  stops its own local Ray, runs 2 trials at a time under ASHA, and prints the table.

Both start from the same generated data (made before timing) and without a persistent compilation cache (every
trial compiles, as on a fresh node). Printed: both wall times, their ratio, the bare time without the test
evaluations (sweep trials skip them: selection is on validation), ASHA's early stops, the load average.

On a loaded machine the parts can be run as separate commands that each stay within a time limit; they record
their figures in ``RUNS_DIR/bench.json`` and ``--phase report`` prints the totals and the ratio:

    python benchmarks/sweep_overhead.py --runs-dir D --phase bare --trials 0 1
    python benchmarks/sweep_overhead.py --runs-dir D --phase bare --trials 2 3
    python benchmarks/sweep_overhead.py --runs-dir D --phase sweep
    python benchmarks/sweep_overhead.py --runs-dir D --phase report
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
SMOKE = str(ROOT / "experiments" / "smoke.py")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def bare(runs: Path, trials: list[int]) -> dict:
    """Each trial's wall seconds and the seconds spent in its final test evaluation."""
    from ups_jax.fleet.experiment import load_experiment, trial_config
    from ups_jax.training.pipeline import train_and_evaluate

    exp = load_experiment(SMOKE)
    base = exp.base_config()
    grid = exp.search_space["stages.operator.lr"]["grid_search"]
    out = {}
    for i in trials:
        cfg = trial_config(base.to_dict(), {"stages.operator.lr": grid[i]})
        workdir = runs / f"bare_{i}"
        before = load()
        t0 = time.perf_counter()
        train_and_evaluate(cfg, workdir, fresh=True)
        wall = time.perf_counter() - t0
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        last_stage_end = max(r["time"] for r in records if r["kind"] == "stage_end")
        eval_s = next(r["time"] for r in records if r["kind"] == "eval") - last_stage_end
        out[str(i)] = {"wall_s": wall, "eval_s": eval_s, "load_before": before, "load_after": load()}
        print(f"bare trial {i} (lr {grid[i]:g}): {wall:.1f} s, test evaluation {eval_s:.1f} s; load average "
              f"{before} -> {load()}", flush=True)
    return out


def sweep(runs: Path) -> dict:
    storage = runs / "sweeps"
    # token auth off: a local ray.init() would otherwise write ~/.ray/auth_token, which changes later `ray start`s
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ups_jax.fleet.sweep", "--experiment", SMOKE,
                           "--storage", str(storage)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads((storage / "smoke" / "fleet_summary.json").read_text())
    states = summary["totals"]["by_state"]
    print(f"sweep (local Ray start/stop, ASHA, 2 at a time): {wall:.1f} s; trials: "
          + ", ".join(f"{n} {s}" for s, n in states.items()) + f"; load average {before} -> {load()}", flush=True)
    return {"wall_s": wall, "states": states, "load_before": before, "load_after": load()}


def report(record: dict) -> None:
    bare_runs = record.get("bare", {})
    if sorted(bare_runs) != ["0", "1", "2", "3"] or "sweep" not in record:
        sys.exit(f"need the bare trials 0-3 and the sweep (have bare {sorted(bare_runs)}, sweep "
                 f"{'yes' if 'sweep' in record else 'no'})")
    bare_s = sum(r["wall_s"] for r in bare_runs.values())
    eval_s = sum(r["eval_s"] for r in bare_runs.values())
    sweep_s = record["sweep"]["wall_s"]
    print(f"machine: {os.cpu_count()} cpus; runs: {', '.join(record.get('dates', []))}")
    print(f"bare sequential, 4 trials (train + test eval): {bare_s:.1f} s (test evaluation {eval_s:.1f} s)")
    print(f"sweep: {sweep_s:.1f} s ({', '.join(f'{n} {s}' for s, n in record['sweep']['states'].items())})")
    print(f"ratio sweep / bare: {sweep_s / bare_s:.2f}  (vs bare without the test evaluations: "
          f"{sweep_s / (bare_s - eval_s):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="/tmp/ups_jax_sweep_bench")
    p.add_argument("--phase", choices=["all", "bare", "sweep", "report"], default="all")
    p.add_argument("--trials", type=int, nargs="+", default=[0, 1, 2, 3], help="bare phase: which grid points")
    args = p.parse_args()
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    record_file = runs / "bench.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    if args.phase != "report":
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)      # every trial compiles, in both measurements
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        from ups_jax.data.default import ensure_default_data
        from ups_jax.fleet.experiment import load_experiment

        ensure_default_data(load_experiment(SMOKE).base_config())   # not timed
        record.setdefault("dates", []).append(time.strftime("%Y-%m-%d %H:%M"))
    if args.phase in ("all", "bare"):
        if any(str(i) in record.get("bare", {}) for i in args.trials):
            sys.exit(f"{record_file}: bare trials {args.trials} already measured; use a new --runs-dir")
        record.setdefault("bare", {}).update(bare(runs, args.trials))
        record_file.write_text(json.dumps(record, indent=1))
    if args.phase in ("all", "sweep"):
        if "sweep" in record:
            sys.exit(f"{record_file}: the sweep was already measured; use a new --runs-dir")
        record["sweep"] = sweep(runs)
        record_file.write_text(json.dumps(record, indent=1))
    if args.phase in ("all", "report"):
        report(record)


if __name__ == "__main__":
    main()
