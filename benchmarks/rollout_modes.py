"""Cost per rollout step of every inference mode, and zero-shot super-resolution against the 1024-cell data.

    .venv/bin/python benchmarks/rollout_modes.py --workdir runs/burgers32_cpu [--batch 50] [--steps 31]
                                                 [--superres] [--presets default enhanced aggressive]

1. Cost: the test split's first ``--batch`` trajectories, ``--steps`` steps from the last given frame, per mode:
   operator alone, +corrector (K+1 refiner calls), +student (S calls), TTC per preset, the steady prior (one call
   for the whole horizon). One untimed call first (compilation), then the median of 3 timed calls; ms per step
   per trajectory and model evaluations per step (operator, refiner and decoder forwards of one state).
2. ``--superres``: the model reads the 256-cell test frames (every 4th cell of the 1024-cell files) and its
   decoder answers at the 1024 cell centres; nRMSE against the 1024-cell truth of (a) the codec's reconstruction
   of the given frame and (b) the 31-step rollout, beside periodic linear interpolation of the same 256-point
   fields to 1024 points, and the 256-point error itself.

Prints the machine, load average and markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ups_jax.errors import run_cli  # noqa: E402  (one-line errors, the project's logging setup)


def _timed(fn, repeats=3) -> float:
    fn()                                                   # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cost_rows(workdir, batch: int, steps: int, presets) -> list[str]:
    from ups_jax.eval.rollout import Rollout
    from ups_jax.inference.ttc import TTCRollout, make_plan
    from ups_jax.training.restore import load_run
    from ups_jax.training.stages import steady_predictor

    cfg, data, model, _, _ = load_run(workdir)
    traj, nu = data.trajectories("test", batch)
    dt, start = float(data.dataset.dt), cfg.eval.initial_step - 1
    given = traj[:, :start + 1]
    n = len(traj)
    rows = []

    def add(name, evals, seconds, per_steps=steps):
        rows.append(f"| {name} | {evals} | {1e3 * seconds / (n * per_steps):.3f} | {1e3 * seconds / n:.1f} |")
        print(rows[-1], flush=True)

    for refine in ("none", "corrector", "student"):
        if refine != "none" and getattr(model, refine, None) is None:
            continue
        r = Rollout(model, norm=data.norm, x01=data.x01, batch_size=n, refine=refine)
        calls = 0 if refine == "none" else getattr(model, refine).calls
        add("operator" if refine == "none" else f"+{refine}", 2 + calls, _timed(lambda: r(given, nu, dt, steps)))
    for preset in presets:
        net = getattr(model, str(cfg.ttc.refine))
        plan = make_plan(cfg.ttc, preset, net.calls, str(cfg.ttc.refine))
        r = TTCRollout(model, norm=data.norm, x01=data.x01, batch_size=n, plan=plan, weights=dict(cfg.ttc.weights))
        add(f"+TTC({preset}): {plan.candidates}×{plan.beam_width}×H{plan.horizon}", plan.evaluations_per_step + 1,
            _timed(lambda: r(given, nu, dt, steps), repeats=1))
    if getattr(model, "steady", None) is not None:
        h = int(model.context_frames)
        predict = steady_predictor(model, data, n)
        s = _timed(lambda: predict(model, traj[:, :h], nu, (traj.shape[1] - h) * dt))
        rows.append(f"| steady prior (whole horizon, {model.steady.iterations} iterations) | "
                    f"{model.steady.iterations + 2} per horizon | — | {1e3 * s / n:.1f} |")
        print(rows[-1], flush=True)
    return rows


def superres_rows(workdir, steps: int) -> list[str]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.data.pdebench import PDEBenchDataset
    from ups_jax.eval.metrics import per_sample_nrmse
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    cfg, data, model, _, _ = load_run(workdir)
    r, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    fine = PDEBenchDataset(data.paths, reduced_resolution=1, reduced_resolution_t=rt)
    idx = np.asarray(data.splits["test"])
    truth = fine.read(idx)                                                 # (N, nt, 1024)
    x_fine = fine.x.astype(np.float64)
    x01_fine = ((x_fine - fine.x_min) / (fine.x_max - fine.x_min)).astype(np.float32)
    coarse = truth[..., ::r]                                               # what the model reads (256 cells)
    nu = np.asarray(data.dataset.nu)[idx]
    dt, start = float(data.dataset.dt), cfg.eval.initial_step - 1
    L = fine.x_max - fine.x_min

    def interp(u):   # periodic linear interpolation of (..., 256) at x_fine[::r] to every x_fine
        xc = x_fine[::r]
        flat = u.reshape(-1, u.shape[-1])
        return np.stack([np.interp(x_fine, xc, f, period=L) for f in flat]).reshape(u.shape[:-1] + (len(x_fine),))

    def nrmse(p, y):
        return float(np.mean(per_sample_nrmse(p, y)))

    graphdef, state = nnx.split(model)
    mean, std = float(data.norm["mean"]), float(data.norm["std"])

    @jax.jit
    def recon(u, xq):
        m = nnx.merge(graphdef, state)
        return m.decode(m.encode_frames(u, jnp.asarray(data.x01)), xq)[..., 0]

    frame = coarse[:, start:start + 1]
    rec_fine = np.asarray(recon(jnp.asarray((frame - mean) / std), jnp.asarray(x01_fine))) * std + mean
    rec_coarse = np.asarray(recon(jnp.asarray((frame - mean) / std), jnp.asarray(data.x01))) * std + mean
    y = truth[:, start]
    rows = [f"| reconstruction of the given frame | {nrmse(rec_coarse, y[:, ::r]):.4f} | {nrmse(rec_fine, y):.4f} | "
            f"{nrmse(interp(rec_coarse), y):.4f} | {nrmse(interp(frame[:, 0]), y):.4f} |"]
    bs = min(int(cfg.eval.batch_size), len(idx))
    out = []
    for xq in (None, x01_fine):
        roll = Rollout(model, norm=data.norm, x01=data.x01, batch_size=bs, out_x01=xq)
        out.append(roll(coarse[:, :start + 1], nu, dt, steps))
    pred_c, pred_f = out
    yt = truth[:, start + 1:start + 1 + steps]
    rows.append(f"| {steps}-step rollout | {nrmse(pred_c, yt[..., ::r]):.4f} | {nrmse(pred_f, yt):.4f} | "
                f"{nrmse(interp(pred_c), yt):.4f} | — |")
    for row in rows:
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    from solver_throughput import machine

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--steps", type=int, default=31)
    p.add_argument("--presets", nargs="*", default=["default", "enhanced", "aggressive"])
    p.add_argument("--superres", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    args = p.parse_args(argv)
    print(f"{datetime.date.today()} | {machine()} | load average at start {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_cost:
        print(f"\n| mode | model evaluations / step | ms / step / trajectory | ms / trajectory ({args.steps} steps) |")
        print("|---|---|---|---|")
        cost_rows(args.workdir, args.batch, args.steps, args.presets)
    if args.superres:
        print("\n| nRMSE vs truth | at the 256 training cells | decoder at 1024 cells | linear interp. 256→1024 "
              "of the model's field | linear interp. of the true 256-cell frame |")
        print("|---|---|---|---|---|")
        superres_rows(args.workdir, args.steps)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
