"""Burgers solver throughput and the time to make the default dataset.

    .venv/bin/python benchmarks/solver_throughput.py [--batch 64] [--nx 1024] [--nu 0.01] [--horizon 0.5]
                                                     [--skip-dataset] [--config configs/burgers32.py:cpu]

1. Throughput: a batch of PDEBench-distributed ICs integrated to ``--horizon`` (frames every 0.01), after a
   warm-up call with the same shapes (compile excluded, reported separately). Reported as cell-updates per
   second = sum over samples of (solver steps x cells) / wall time; one step = one predictor-corrector update
   (two flux evaluations).
2. Default dataset: ``generate_burgers_file`` with the config's ``data.generate`` (burgers32:cpu: 512 samples,
   nx 1024, nu 0.01) into a temporary directory, end to end (ICs, compile, solve, HDF5 write), not extrapolated.

Prints the machine, the figures and a markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    import jax

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return (f"{os.cpu_count()} cores (nproc), {cpu}; {platform.system()} {platform.machine()}; "
            f"Python {platform.python_version()}, jax {jax.__version__}, backend {dev.platform} ({dev.device_kind})")


def throughput(batch: int, nx: int, nu: float, horizon: float, seed: int = 2022) -> dict:
    import jax
    import numpy as np

    from ups_jax.data import burgers
    from ups_jax.data.initial_conditions import burgers_initial_conditions

    x = burgers.cell_centres(nx, -1.0, 1.0)
    u0 = burgers_initial_conditions(jax.random.PRNGKey(seed), x, batch, x_min=-1.0, x_max=1.0)
    t_save = burgers.save_times(horizon)
    dx = 2.0 / nx
    t0 = time.perf_counter()
    frames, steps = burgers.solve(u0, dx=dx, nu=nu, t_save=t_save, return_steps=True)
    jax.block_until_ready((frames, steps))
    first_call = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames, steps = burgers.solve(u0, dx=dx, nu=nu, t_save=t_save, return_steps=True)
    jax.block_until_ready((frames, steps))
    wall = time.perf_counter() - t0
    steps = np.asarray(steps, np.int64)
    return {"batch": batch, "nx": nx, "nu": nu, "horizon": horizon, "frames": int(t_save.size),
            "steps_mean": float(steps.mean()), "steps_max": int(steps.max()), "wall_s": wall,
            "compile_s": max(first_call - wall, 0.0), "cell_updates_per_s": float(steps.sum() * nx / wall),
            "sample_seconds_per_model_second": wall / batch / horizon}


def dataset_time(config: str) -> dict:
    from ups_jax.config import load_config
    from ups_jax.data.generate import generate_burgers_file

    g = load_config(config).data.generate
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = generate_burgers_file(tmp, nu=g.nu, samples=g.samples, nx=g.nx, seed=g.seed, x_min=g.x_min,
                                     x_max=g.x_max, progress=True)
        wall = time.perf_counter() - t0
        size = path.stat().st_size
    return {"config": config, "samples": g.samples, "nx": g.nx, "nu": g.nu, "wall_s": wall, "size_mb": size / 1e6}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--nx", type=int, default=1024)
    p.add_argument("--nu", type=float, default=0.01)
    p.add_argument("--horizon", type=float, default=0.5, help="model time integrated in the throughput run")
    p.add_argument("--config", default=str(ROOT / "configs" / "burgers32.py") + ":cpu")
    p.add_argument("--skip-dataset", action="store_true", help="only the throughput measurement")
    args = p.parse_args(argv)

    print(f"date: {datetime.date.today().isoformat()}")
    print(f"machine: {machine()}")
    r = throughput(args.batch, args.nx, args.nu, args.horizon)
    print(f"throughput: batch {r['batch']}, nx {r['nx']}, nu {r['nu']}, t in [0, {r['horizon']}] "
          f"({r['frames']} frames): {r['steps_mean']:.0f} steps/sample (max {r['steps_max']}), "
          f"{r['wall_s']:.2f} s after a {r['compile_s']:.1f} s compile -> {r['cell_updates_per_s']:.3g} "
          f"cell-updates/s")
    rows = [f"| solver, batch {r['batch']}, nx {r['nx']}, ν {r['nu']}, t∈[0,{r['horizon']}] | "
            f"{r['cell_updates_per_s']:.3g} cell-updates/s ({r['steps_mean']:.0f} steps/sample, "
            f"{r['wall_s']:.2f} s; compile {r['compile_s']:.1f} s) |"]
    if not args.skip_dataset:
        d = dataset_time(args.config)
        print(f"default dataset ({d['config']}): {d['samples']} samples x 201 frames x {d['nx']} cells, "
              f"nu {d['nu']}: {d['wall_s']:.1f} s end to end, {d['size_mb']:.0f} MB")
        rows.append(f"| default dataset ({Path(d['config']).name}: {d['samples']}×201×{d['nx']}, ν {d['nu']}) | "
                    f"{d['wall_s']:.1f} s end to end ({d['size_mb']:.0f} MB) |")
    print("\nmarkdown rows for docs/benchmarks.md:")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
