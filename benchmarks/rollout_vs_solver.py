"""Surrogates against the built-in solver at equal error (McGreivy & Hakim 2024's fair-baseline rule).

    .venv/bin/python benchmarks/rollout_vs_solver.py [--workdir RUN ...] [--config configs/burgers32.py:cpu]
        [--data FILE ...] [--resolutions 8 16 32 64 128 256 512 1024] [--max-trajectories N] [--repeats 2]
        [--advective-scale A] [--reference 256:0.01] [--reference-cache FILE.npz] [--out PREFIX]

A 2-D config or run (``data.dims = 2``, 2-D Navier–Stokes) goes to ``benchmarks/rollout_vs_solver_2d.py`` (its
docstring: resolutions 16² .. 128² against a ``--reference`` re-solve); what follows is the 1-D comparison.

The test trajectories of the dataset (the runs' own data with ``--workdir``, else ``--config``'s data, or
``--data``) at their full resolution are the reference. The protocol (from the first run's config, else
``--config``): frame ``initial_step - 1`` after ``reduced_resolution_t`` (t = 0.45 at Δt = 0.05 for PDEBench
Burgers) is given, the next frames up to the end (31) are predicted, and they are scored on the protocol's grid
(every ``reduced_resolution``-th cell: 256 of 1024) with the evaluation's per-trajectory nRMSE.

* Solver rows: the built-in finite-volume solver (``ups_jax.data.burgers``; the data's equation, advective scale
  from the file's ``advective_scale`` attribute, else 2 = PDEBench's released files) started from the given frame
  restricted to ``n`` cells by cell averages, its frames brought to the protocol's points by piecewise-linear
  periodic interpolation between cell centres (``burgers.interpolate_periodic``). The row at the data's own
  resolution re-solves the data itself: its error says whether the solver is the data's equation.
* Model rows: each run's own evaluation rollout (``ups_jax.eval.evaluate.predict``) on the same trajectories,
  all of them in one batch (as the solver), scored the same way; without ``--max-trajectories`` its nRMSE is the
  run's own ``eval/test.json`` value.
* Wall time: the second (or best of ``--repeats``) call after a warm-up call with the same shapes (compile
  excluded), from host arrays to host arrays (``np.asarray`` blocks until ready); scoring excluded.
* Equal-error solver: the coarsest resolution whose nRMSE is no larger than the model's; speed-up = its wall
  time / the model's (> 1: the surrogate is faster at equal error). When that is the coarsest resolution tried,
  the table says so: a still coarser solver might do.

Prints one markdown table and writes ``PREFIX.json`` / ``PREFIX.md`` when ``--out`` is given.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402

DEFAULT_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)



def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, float]:
    """Calls ``fn`` once to compile, then ``repeats`` times; returns (last result, best wall time in s)."""
    out = fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def nrmse(pred: np.ndarray, true: np.ndarray) -> float:
    """The evaluation's headline nRMSE (per-trajectory mean) of predicted frames (N, steps, X)."""
    from ups_jax.eval.evaluate import FRMSE_LX
    from ups_jax.eval.metrics import MetricAccumulator

    acc = MetricAccumulator(FRMSE_LX)
    acc.update(pred, true)
    return acc.result()["nrmse"]


class Protocol:
    """The test trajectories at full resolution and what the protocol gives and asks for."""

    def __init__(self, cfg, paths, max_trajectories: int):
        from ups_jax.data.pdebench import PDEBenchDataset, make_splits

        self.full = PDEBenchDataset(paths)                                 # no reduction: the reference
        idx = make_splits(self.full, test_fraction=cfg.data.test_fraction, val_fraction=cfg.data.val_fraction)["test"]
        self.idx = idx[:max_trajectories] if max_trajectories else idx
        self.r, self.rt = int(cfg.data.reduced_resolution), int(cfg.data.reduced_resolution_t)
        self.start = int(cfg.eval.initial_step) - 1                        # last given frame (reduced index)
        frames = self.full.read(self.idx)                                  # (N, T_full, X_full)
        self.reduced = frames[:, ::self.rt, ::self.r]                      # what the reader gives a run
        if not 0 <= self.start < self.reduced.shape[1] - 1:
            raise UserError(f"eval.initial_step={cfg.eval.initial_step} leaves no frame to predict in "
                            f"{self.reduced.shape[1]} frames")
        self.u0_full = frames[:, self.start * self.rt]                      # the given frame, full resolution
        self.true = self.reduced[:, self.start + 1:]                        # (N, steps, X_protocol)
        self.steps = self.true.shape[1]
        self.dt = self.full.dt * self.rt
        self.t0 = self.start * self.dt
        self.x = self.full.x[::self.r].astype(np.float64)
        self.nu = self.full.nu[self.idx]
        self.paths = [str(x) for x in paths]

    def advective_scale(self) -> float | None:
        import h5py

        scales = set()
        for f in self.full.files:
            with h5py.File(f, "r") as h:
                scales.add(float(h.attrs["advective_scale"]) if "advective_scale" in h.attrs else None)
        return scales.pop() if len(scales) == 1 else None


def solver_row(p: Protocol, n: int, advective_scale: float, repeats: int) -> dict:
    import jax.numpy as jnp

    from ups_jax.data import burgers

    u0 = jnp.asarray(burgers.restrict(p.u0_full.astype(np.float64), n), jnp.float32)
    # stop at every frame of the data (as the data's own solve did), keep every rt-th: at the data's resolution
    # this re-solves the data exactly; the extra stops cost a few clipped steps
    t_save = p.t0 + p.full.dt * np.arange(p.steps * p.rt + 1)
    dx = (p.full.x_max - p.full.x_min) / n
    nu = jnp.asarray(p.nu, jnp.float32)

    def run():
        frames, steps = burgers.solve(u0, dx=dx, nu=nu, t_save=t_save, advective_scale=advective_scale,
                                      return_steps=True)
        return np.asarray(frames), np.asarray(steps)

    (frames, steps), wall = timed(run, repeats)
    pred = burgers.interpolate_periodic(frames[:, p.rt::p.rt].astype(np.float64), p.full.x_min, p.full.x_max, p.x)
    return {"method": f"solver, {n} cells", "kind": "solver", "cells": n, "nrmse": nrmse(pred, p.true),
            "wall_s": wall, "solver_steps_mean": float(np.mean(steps))}


def surrogate(workdir: str, p: Protocol):
    """(config, predict(trajectories (N, T, X), nu) -> (N, steps, X)) for a trained run: its own evaluation
    rollout on all trajectories in one batch. The one place this benchmark calls a model."""
    from ups_jax.eval.evaluate import predict
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    cfg, data, model, stage, step = load_run(workdir, p.paths)        # grid checks; warns if not its training data
    if (cfg.data.reduced_resolution, cfg.data.reduced_resolution_t, cfg.eval.initial_step) != (
            p.r, p.rt, p.start + 1):
        raise UserError(f"{workdir}: its protocol (reduced_resolution, reduced_resolution_t, initial_step) differs "
                        f"from the first run's; benchmark it separately")
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=len(p.idx), mode=cfg.eval.rollout_mode)
    return cfg, lambda traj, nu: predict(rollout, traj, nu, p.dt, p.start, p.steps)


def model_row(workdir: str, p: Protocol, repeats: int) -> dict:
    _, predict_fn = surrogate(workdir, p)
    pred, wall = timed(lambda: predict_fn(p.reduced, p.nu), repeats)
    return {"method": f"model {workdir}", "kind": "model",
            "workdir": workdir, "cells": int(p.x.size), "nrmse": nrmse(pred.astype(np.float64), p.true),
            "wall_s": wall}


def equal_error(model: dict, solvers: list[dict]) -> dict | None:
    """The coarsest solver row whose nRMSE is no larger than the model's (None: no resolution is that coarse)."""
    ok = [s for s in solvers if s["nrmse"] <= model["nrmse"]]
    return min(ok, key=lambda s: s["cells"]) if ok else None


def markdown(rows: list[dict], n_traj: int, coarsest: int) -> str:
    head = ["method", "nRMSE", "wall s", "trajectories/s", "equal-error solver", "its wall s", "speed-up vs it"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eq = r.get("equal_error")
        cells = [r["method"], f"{r['nrmse']:.4g}", f"{r['wall_s']:.4g}", f"{n_traj / r['wall_s']:.4g}"]
        if r["kind"] == "model":
            name = f"{eq['cells']} cells" + (" (the coarsest tried)" if eq and eq["cells"] == coarsest else "") \
                if eq else ""
            cells += ([name, f"{eq['wall_s']:.4g}", f"{eq['wall_s'] / r['wall_s']:.3g}x"] if eq
                      else ["none: every resolution tried is less accurate", "—", "—"])
        else:
            cells += ["", "", ""]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: Sequence[str]) -> int:
    ap = ArgumentParser(prog="benchmarks/rollout_vs_solver.py", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", nargs="+", default=[], help="trained run directories (their data and protocol)")
    ap.add_argument("--config", default="configs/burgers32.py:cpu", help="data and protocol when no --workdir")
    ap.add_argument("--data", nargs="+", help="PDEBench files (default: the runs' / config's data)")
    ap.add_argument("--resolutions", nargs="+", type=int,
                    help=f"solver grids (default 1-D: {' '.join(map(str, DEFAULT_RESOLUTIONS))}; 2-D: 16 32 64 128)")
    ap.add_argument("--max-trajectories", type=int, default=0, help="first N test trajectories (0 = all)")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up; the best counts")
    ap.add_argument("--advective-scale", type=float, help="solver flux factor (default: the file's attribute, else 2)")
    ap.add_argument("--reference", help="2-D only: GRID:DT of the re-solve every row is scored against "
                                        "(default 256:0.01)")
    ap.add_argument("--reference-cache", help="2-D only: .npz keeping the reference re-solve between calls")
    ap.add_argument("--out", help="write PREFIX.json and PREFIX.md")
    args = ap.parse_args(list(argv))
    from solver_throughput import machine
    from ups_jax.config import config_from_dict, load_config

    if args.workdir:
        wd = Path(args.workdir[0])
        if not (wd / "config.json").is_file() or not (wd / "run_meta.json").is_file():
            raise UserError(f"{wd}: not a ups_jax run directory (no config.json / run_meta.json)")
        cfg = config_from_dict(json.loads((wd / "config.json").read_text()))
        paths = args.data or json.loads((wd / "run_meta.json").read_text())["data_paths"]
    else:
        from ups_jax.data.default import ensure_default_data

        cfg = load_config(args.config)
        paths = args.data or ensure_default_data(cfg)
    if int(cfg.data.get("dims", 1)) == 2:
        import rollout_vs_solver_2d

        if args.advective_scale is not None:
            raise UserError("--advective-scale is a 1-D (Burgers) option; the 2-D config has none")
        return rollout_vs_solver_2d.run(args, cfg, paths)
    if args.reference or args.reference_cache:
        raise UserError("--reference/--reference-cache are 2-D options; the 1-D rows are scored against the data")
    args.resolutions = args.resolutions or list(DEFAULT_RESOLUTIONS)
    p = Protocol(cfg, paths, args.max_trajectories)
    nx_full = p.full.nx
    bad = [n for n in args.resolutions if n < 4 or nx_full % n]
    if bad:
        raise UserError(f"--resolutions {bad}: each must divide the data's {nx_full} cells (cell-average restriction)")
    scale = args.advective_scale or p.advective_scale() or 2.0
    print(f"{machine()}\n{len(p.idx)} test trajectories of {', '.join(map(str, paths))}: given frame t={p.t0:.2f}, "
          f"{p.steps} predicted frames at dt={p.dt:g}, scored on {p.x.size} of {nx_full} cells; solver "
          f"advective_scale={scale:g}", flush=True)
    solvers = [solver_row(p, n, scale, args.repeats) for n in sorted(args.resolutions)]
    own = next((s for s in solvers if s["cells"] == nx_full), None)
    if own is not None and own["nrmse"] > 1e-3:
        print(f"warning: the solver at the data's own {nx_full} cells misses the data by nRMSE {own['nrmse']:.3g}: "
              f"the data do not solve this equation (try --advective-scale)", flush=True)
    models = [model_row(w, p, args.repeats) for w in args.workdir]
    meta = {"data": [str(x) for x in paths], "n_trajectories": len(p.idx), "given_t": p.t0, "dt": p.dt,
            "steps": p.steps, "protocol_cells": int(p.x.size), "advective_scale": scale}
    return finish(models, solvers, lambda rows: markdown(rows, len(p.idx), min(args.resolutions)), args.repeats,
                  "; solver frames interpolated piecewise-linearly to the protocol grid", args.out, meta)


def finish(models: list[dict], solvers: list[dict], table: Callable[[list[dict]], str], repeats: int, trailer: str,
           out: str | None, meta: dict) -> int:
    """The end of the 1-D and the 2-D comparison: each model's equal-error solver, ``table(rows)`` printed with
    date, load and jax, and with ``out`` PREFIX.md and PREFIX.json (``meta`` + machine, date, load and the rows)."""
    import jax

    from solver_throughput import machine

    for m in models:
        m["equal_error"] = equal_error(m, solvers)
    rows = models + solvers
    md = table(rows)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(md + f"\n\n{datetime.date.today().isoformat()}; load average {load}; jax {jax.__version__}; wall = best "
               f"of {repeats} after a warm-up call" + trailer)
    if out:
        report = {"date": datetime.date.today().isoformat(), "machine": machine(), "loadavg": load, **meta,
                  "rows": rows}
        Path(out + ".json").write_text(json.dumps(report, indent=1))
        Path(out + ".md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
