"""Training throughput, peak memory and rollout speed against the built-in solver.

    .venv/bin/python benchmarks/train_rollout.py [--configs configs/burgers32.py configs/burgers32.py:cpu]
                                                [--workdir runs/burgers32_cpu] [--steps 10] [--batch 64]

1. Per config and stage: the compiled train step (the exact function ``run_stage`` jits) on a batch of the
   config's shape; steps/s and samples/s after a warm-up call (compile timed separately); XLA's memory of the
   compiled step; the process's peak resident memory at the end.
2. Rollout: 64 trajectories, 200 model steps at Δt = 0.01 on the 256-cell grid (``Rollout``, latent mode),
   against the built-in solver producing the same trajectories (the same ICs, t = 0 → 2, 201 frames) at the
   data's 1024 cells and at 256 cells, in one process. Weights come from ``--workdir`` when given (speed does
   not depend on them; accuracy of a 200-step Δt = 0.01 rollout is not claimed here).

Prints the machine and markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def train_throughput(spec: str, steps: int) -> list[str]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.config import load_config
    from ups_jax.driver.compiled_step import compiled_cost, stage_parts
    from ups_jax.driver.synthetic_data import SyntheticData
    from ups_jax.models import build_model, count_params

    cfg = load_config(spec)
    data = SyntheticData(cfg)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(0))
    rows = []
    for i, name in enumerate(cfg.stage_order):
        sc, runner, state, loader = stage_parts(cfg, data, model, i, name)
        N = runner.steps_per_dispatch
        key = runner.place(jax.random.key(0))
        t0 = time.perf_counter()
        compiled = runner.lower(state, N).compile()
        compile_s = time.perf_counter() - t0
        state, out = runner.run(state, key, 0, runner.next_inputs(N))
        jax.block_until_ready(out)
        dispatches = max(-(-steps // N), 1)
        t0 = time.perf_counter()
        for k in range(dispatches):   # as the loop: window indices for N updates, one dispatch
            state, out = runner.run(state, key, (k + 1) * N, runner.next_inputs(N))
        jax.block_until_ready((state, out))
        sps = dispatches * N / (time.perf_counter() - t0)
        loader.close()
        mem = compiled_cost(compiled)
        rows.append(f"| `{spec.split('/')[-1]}` | {name} | {count_params(model)['total']:,} | {sc.batch_size} "
                    f"| {sc.rollout_steps} | {sps:.2f} | {sps * sc.batch_size:.1f} | {compile_s:.1f} "
                    f"| {mem['flops'] / N / 1e9:.2f} | "
                    f"{'unknown' if mem['peak_bytes'] is None else format(mem['peak_bytes'] / 2**20, '.1f')} |")
    return rows


def rollout_vs_solver(workdir: str | None, batch: int, steps: int) -> list[str]:
    import jax
    import numpy as np
    from flax import nnx

    from ups_jax.config import load_config
    from ups_jax.data import burgers
    from ups_jax.data.initial_conditions import burgers_initial_conditions
    from ups_jax.eval.rollout import Rollout
    from ups_jax.models import build_model

    if workdir:
        from ups_jax.training.restore import load_run

        cfg, data, model, _, _ = load_run(workdir)
        norm = data.norm
    else:
        cfg = load_config("configs/burgers32.py:cpu")
        model = build_model(cfg, num_points=256, rngs=nnx.Rngs(0))
        norm = {"mean": 0.0, "std": 1.0}
    x_full = burgers.cell_centres(1024, -1.0, 1.0)
    u0_full = np.asarray(burgers_initial_conditions(jax.random.PRNGKey(7), x_full, batch, x_min=-1.0, x_max=1.0))
    t_save = burgers.save_times(2.0)
    rows = []
    for nx in (1024, 256):
        u0 = u0_full[:, :: 1024 // nx] if nx < 1024 else u0_full
        jax.block_until_ready(burgers.solve(u0[:2], dx=2.0 / nx, nu=0.01, t_save=t_save[:3]))  # compile smaller
        t0 = time.perf_counter()
        out = burgers.solve(u0, dx=2.0 / nx, nu=0.01, t_save=t_save)
        jax.block_until_ready(out)
        solve_s = time.perf_counter() - t0
        rows.append(("solver", nx, solve_s))
    x01 = (np.arange(256) + 0.5) / 256
    ro = Rollout(model, norm=norm, x01=x01, batch_size=batch)
    u0 = u0_full[:, ::4]
    nu = np.full((batch,), 0.01, np.float32)
    ro(u0, nu, 0.01, steps)                       # compile
    t0 = time.perf_counter()
    pred = ro(u0, nu, 0.01, steps)
    model_s = time.perf_counter() - t0
    assert pred.shape == (batch, steps, 256)
    out = [f"| model rollout ({steps} steps, 256 cells, latent) | {batch} | {model_s:.3f} | {batch / model_s:.1f} | 1.0 |"]
    for _, nx, s in rows:
        out.append(f"| built-in solver to t=2 ({nx} cells, 201 frames) | {batch} | {s:.3f} | {batch / s:.2f} "
                   f"| {s / model_s:.1f} |")
    return out


def main():
    from solver_throughput import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["configs/burgers32.py", "configs/burgers32.py:cpu"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rollout-steps", type=int, default=200)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}; date {datetime.date.today()}")
    if not args.skip_train:
        print("\n| config | stage | params | batch | K | steps/s | samples/s | compile s | GFLOP/step | XLA MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for spec in args.configs:
            for row in train_throughput(spec, args.steps):
                print(row, flush=True)
    print("\n| what | trajectories | seconds | trajectories/s | solver time / model time |")
    print("|---|---|---|---|---|")
    for row in rollout_vs_solver(args.workdir, args.batch, args.rollout_steps):
        print(row, flush=True)
    print(f"\npeak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
