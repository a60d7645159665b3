"""Training throughput with the batch split over N devices (``runtime.data_parallel``) vs one device.

    python benchmarks/data_parallel.py [--config configs/burgers32.py:cpu] [--devices 2] [--steps 30]
        [--min-time 10] [--stages operator]

On a CPU the N devices are XLA host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set for a
child process); on a GPU node (``JAX_PLATFORMS=cuda``), the node's GPUs. For each stage it builds the train step
exactly as the trainer does (``driver.compiled_step.stage_parts``: loss, optimizer, accumulation, placement, batch
sharding), warms it up,
and times optimizer updates through the loop body (loader → normalise → shard → jitted step) on synthetic
fields with the config's grid and batch size. Three runs per stage: a plain one-device process, and one process
with N devices at ``data_parallel=off`` and ``=N``. Prints updates/s, samples/s and the N-device / 1-device ratio.
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


def measure(spec: str, stages: list[str], settings: list[str], steps: int, min_time: float) -> dict:
    """In this process: {setting: {stage: {'updates_per_s', 'samples_per_s', 'devices'}}}."""
    sys.path.insert(0, str(ROOT))
    import jax
    from flax import nnx

    from ups_jax.config import load_config
    from ups_jax.driver.compiled_step import stage_parts
    from ups_jax.driver.synthetic_data import SyntheticData
    from ups_jax.models import build_model

    out = {}
    for setting in settings:
        cfg = load_config(spec, [f"runtime.data_parallel={setting}"])
        data = SyntheticData(cfg, max_per_file=256)
        model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
        out[setting] = {}
        for i, name in enumerate(cfg.stage_order):
            if stages and name not in stages:
                continue
            sc, runner, state, loader = stage_parts(cfg, data, model, i, name)
            N = runner.steps_per_dispatch
            key = runner.place(jax.random.key(0))
            try:
                for k in range(2):     # compile + one more
                    state, o = runner.run(state, key, k * N, runner.next_inputs(N))
                jax.block_until_ready(o)
                n, t0 = 0, time.perf_counter()
                while n < steps or time.perf_counter() - t0 < min_time:
                    state, o = runner.run(state, key, (2 + n) * N, runner.next_inputs(N))
                    n += 1
                jax.block_until_ready((state, o))
                dt = time.perf_counter() - t0
                n *= N
            finally:
                loader.close()
            ups = n / dt
            out[setting][name] = {"updates_per_s": ups, "samples_per_s": ups * sc.batch_size * sc.accum_steps,
                                  "devices": len(state.params.devices()),
                                  "updates": n}
    return out


def _child(spec, stages, settings, steps, min_time, devices: int | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    if devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import data_parallel as d; "
            f"print(json.dumps(d.measure({spec!r}, {stages!r}, {settings!r}, {steps}, {min_time})))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/burgers32.py:cpu")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="timed updates per run (at least)")
    ap.add_argument("--min-time", type=float, default=10.0, help="time each run for at least this many seconds")
    ap.add_argument("--stages", default="", help="comma-separated stage names (default: the config's stage_order)")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    print(f"load average before: {os.getloadavg()}; config {args.config}; {args.devices} devices", flush=True)
    on_gpu = os.environ.get("JAX_PLATFORMS", "cpu") != "cpu"     # e.g. JAX_PLATFORMS=cuda on a GPU node
    one = _child(args.config, stages, ["off"], args.steps, args.min_time, None)["off"]
    stages = stages or list(one)
    many = _child(args.config, stages, ["off", str(args.devices)], args.steps, args.min_time,
                  None if on_gpu else args.devices)
    print(f"\n{'stage':9s} {'run':34s} {'updates/s':>10s} {'samples/s':>10s}")
    for name in stages:
        rows = [("1 device (plain process)", one[name]),
                (f"{args.devices}-device process, data_parallel=off", many["off"][name]),
                (f"{args.devices}-device process, data_parallel={args.devices}", many[str(args.devices)][name])]
        for label, r in rows:
            print(f"{name:9s} {label:34s} {r['updates_per_s']:10.2f} {r['samples_per_s']:10.1f}")
        ratio = many[str(args.devices)][name]["samples_per_s"] / one[name]["samples_per_s"]
        print(f"{name:9s} ratio {args.devices} devices / 1 device: {ratio:.2f}x")
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
