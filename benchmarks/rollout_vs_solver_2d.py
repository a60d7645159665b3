"""2-D Navier–Stokes: surrogates against the built-in pseudo-spectral solver at equal error (issue 20 item 4).

Called by ``benchmarks/rollout_vs_solver.py`` when the config (or the first run's) has ``data.dims = 2``::

    .venv/bin/python benchmarks/rollout_vs_solver.py --config configs/ns2d.py:cpu [--workdir RUN ...]
        [--resolutions 16 32 64 128] [--reference 256:0.01] [--reference-cache FILE.npz] [--max-trajectories N]
        [--repeats 2] [--out PREFIX]

**The truth.** The stored data (``:cpu``: solved at 128², stored at 32²) are themselves a solve, so the test
trajectories are re-solved from their own initial fields on the ``--reference`` grid (default 256², step 0.01;
docs/benchmarks.md "2-D Navier–Stokes data": 128² and 256² agree to ~1e-4 in float32 to t = 20). The initial
fields are redrawn from the file's ``seed`` attribute exactly as the generator drew them (sample ``i`` from
``split(PRNGKey(seed), N)[i]`` on the file's ``solve_grid``), brought to the reference grid by Fourier
interpolation (exact at the draw's own points); the redraw is checked against the stored frame 0. **Every row — solvers and surrogates — is scored against this reference at
the protocol's points** (the stored grid, 32² for ``:cpu``) over the protocol's predicted frames with the
evaluation's per-trajectory nRMSE (``MetricAccumulator(dims=2)``). The stored data's own distance to the
reference is printed: it is the floor of any model trained on them.

* Solver rows: the reference's field at the protocol's last given frame (t = ``initial_step - 1``) restricted
  to ``n``² by Fourier truncation (the pseudo-spectral solver's own restriction), solved by ``ups_jax.data.ns2d``
  to the last frame with the largest stable step of a doubling ladder (from the generator's step ``0.01·256/n``
  up to one step per frame; stable = finite and ``max|w|`` within 2x the reference's), its frames brought to the
  protocol's points by taking every ``n/X``-th point (``n >= X``) or Fourier interpolation (``n < X``).
* Model rows: the run's own evaluation rollout (``ups_jax.eval.evaluate.predict``) from the **stored** frames (what
  it was trained and evaluated on), all test trajectories in one batch; also scored against the stored data
  (= its ``eval/test.json`` nRMSE without ``--max-trajectories``).
* Wall time: best of ``--repeats`` calls after a warm-up call (compile excluded), host arrays to host arrays.
* Equal-error solver: the coarsest resolution whose nRMSE (vs the reference) is no larger than the model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ups_jax.errors import UserError

DEFAULT_RESOLUTIONS_2D = (16, 32, 64, 128)
DEFAULT_REFERENCE = "256:0.01"
BLOWUP_FACTOR = 2.0                 # "stable": max |w| of the solve within this factor of the reference's


def nrmse2d(pred: np.ndarray, true: np.ndarray) -> float:
    """The evaluation's headline nRMSE (per-trajectory mean over the predicted frames) of (N, steps, X, Y)."""
    from ups_jax.eval.evaluate import FRMSE_LX
    from ups_jax.eval.metrics import MetricAccumulator

    acc = MetricAccumulator(FRMSE_LX, dims=2)
    acc.update(np.asarray(pred, np.float64), np.asarray(true, np.float64))
    return acc.result()["nrmse"]


def _resample_axis(w: np.ndarray, n: int, axis: int) -> np.ndarray:
    s = w.shape[axis]
    f = np.moveaxis(np.fft.fft(w, axis=axis), axis, -1)
    g = np.zeros(f.shape[:-1] + (n,), np.complex128)
    h = min(s, n) // 2
    g[..., :h] = f[..., :h]                                  # wavenumbers 0 .. h-1
    g[..., n - h + 1:] = f[..., s - h + 1:]                  # -(h-1) .. -1
    if n > s:                                                # the coarse Nyquist mode, split between +-h: exact
        g[..., h] = g[..., n - h] = 0.5 * f[..., h]
    return np.moveaxis(np.fft.ifft(g, axis=-1).real * (n / s), -1, axis)


def resample(w: np.ndarray, n: int) -> np.ndarray:
    """Fourier interpolation (n > s) or restriction (n < s: the modes |k| < n/2 kept, the rest dropped) of
    periodic fields (..., s, s) on the points ``i/s`` to (..., n, n). Interpolation reproduces the field at the
    coarse points exactly (the Nyquist mode is split between +-s/2)."""
    w = np.asarray(w, np.float64)
    if n == w.shape[-1]:
        return w.copy()
    return _resample_axis(_resample_axis(w, n, -2), n, -1)


def largest_stable_solve(w_given: np.ndarray, n: int, *, nu: float, steps: int, forcing_amplitude: float,
                         bound: float):
    """(solver(w) -> frames (B, steps, n, n) as numpy, its step dt, the ladder tried [(dt, stable)])."""
    import jax

    from ups_jax.data import ns2d
    from ups_jax.data.ns2d_generate import auto_max_dt

    forcing = ns2d.fno_forcing(n, forcing_amplitude, np.float64) if forcing_amplitude else None
    chosen, tried, dt = None, [], auto_max_dt(n)
    while True:
        spf = ns2d.steps_per_frame(1.0, dt)
        solver = ns2d.make_solver(n, nu=nu, frames=steps + 1, max_dt=dt, forcing=forcing)
        out = np.asarray(jax.block_until_ready(solver(w_given)))
        stable = bool(np.all(np.isfinite(out)) and np.abs(out).max() <= BLOWUP_FACTOR * bound)
        tried.append((1.0 / spf, stable))
        if not stable:
            break
        chosen = (solver, 1.0 / spf)
        if spf == 1:
            break
        dt = 1.0 / max(1, spf // 2)
    if chosen is None:
        raise UserError(f"{n}²: the solver is unstable already at the generator's step {auto_max_dt(n):g}")
    solver, dt = chosen
    return (lambda w: np.asarray(solver(w))[:, 1:]), dt, tried


class Protocol2D:
    """The test trajectories: stored frames, the reference re-solve, what the protocol gives and asks for."""

    def __init__(self, cfg, paths, max_trajectories: int, reference: str):
        import h5py
        import jax

        from ups_jax.data import ns2d
        from ups_jax.data.ns2d_reader import open_dataset
        from ups_jax.data.pdebench import make_splits

        self.paths = [str(p) for p in paths]
        if len(self.paths) != 1:
            raise UserError(f"{len(self.paths)} data files: the 2-D comparison re-solves one generated file")
        ds = open_dataset(self.paths, reduced_resolution=int(cfg.data.reduced_resolution),
                          reduced_resolution_t=int(cfg.data.reduced_resolution_t))
        if int(cfg.data.reduced_resolution) != 1 or int(cfg.data.reduced_resolution_t) != 1:
            raise UserError("the 2-D comparison needs data.reduced_resolution = reduced_resolution_t = 1")
        with h5py.File(self.paths[0], "r") as f:
            a = dict(f.attrs)
        need = ("seed", "solve_grid", "Nu", "forcing_amplitude", "frame_dt")
        if any(k not in a for k in need):
            raise UserError(f"{self.paths[0]}: lacks attribute(s) {[k for k in need if k not in a]}: the 2-D "
                            f"comparison redraws the initial fields of a file made by python -m "
                            f"ups_jax.data.generate ns2d")
        idx = make_splits(ds, test_fraction=cfg.data.test_fraction, val_fraction=cfg.data.val_fraction)["test"]
        self.idx = idx[:max_trajectories] if max_trajectories else idx
        self.stored = ds.read(self.idx)                                     # (N, T, X, X)
        self.nu = ds.nu[self.idx]
        self.dt = float(ds.dt)
        self.start = int(cfg.eval.initial_step) - 1
        T, X = self.stored.shape[1], self.stored.shape[2]
        if not 0 <= self.start < T - 1:
            raise UserError(f"eval.initial_step={cfg.eval.initial_step} leaves no frame to predict in {T} frames")
        self.steps, self.X = T - 1 - self.start, X
        self.nu_value, self.forcing_amplitude = float(a["Nu"]), float(a["forcing_amplitude"])
        try:
            s_ref, dt_ref = reference.split(":")
            self.ref_grid, self.ref_dt = int(s_ref), float(dt_ref)
        except ValueError as e:
            raise UserError(f"--reference {reference!r}: not GRID:DT (e.g. 256:0.01)") from e
        if self.ref_grid % X:
            raise UserError(f"--reference grid {self.ref_grid} is not a multiple of the stored {X}² grid")
        # the generator's initial fields, redrawn on its solve grid, interpolated to the reference grid
        solve_grid = int(a["solve_grid"])
        keys = jax.random.split(jax.random.PRNGKey(int(a["seed"])), ds.num_trajectories)[self.idx]
        w0 = np.asarray(jax.vmap(lambda k: ns2d.gaussian_random_field(k, 1, solve_grid)[0])(keys), np.float64)
        w0 = resample(w0, self.ref_grid)
        every = self.ref_grid // X
        redraw = np.abs(w0[:, ::every, ::every] - self.stored[:, 0]).max() / np.abs(self.stored[:, 0]).max()
        if redraw > 1e-4:
            raise UserError(f"{self.paths[0]}: the initial fields redrawn from seed {a['seed']} differ from the "
                            f"stored frame 0 (max rel. {redraw:.2g}); the file was not made by this generator")
        self.redraw_error = float(redraw)
        self._w0, self._T = w0, T

    def solve_reference(self, cache: str | None = None) -> None:
        """The reference re-solve (the slow part: after every argument is checked). ``cache``: an ``.npz`` that
        keeps it for the next call with the same data file, trajectories and reference (else it is solved again)."""
        key = json.dumps([self.paths, Path(self.paths[0]).stat().st_size, self.idx.tolist(), self.start,
                          self.ref_grid, self.ref_dt])
        if cache and Path(cache).is_file():
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    self.given_full, self.truth = z["given_full"], z["truth"]
                    self._finish()
                    return
        self._solve()
        if cache:
            with open(cache, "wb") as f:
                np.savez(f, key=key, given_full=self.given_full, truth=self.truth)

    def _finish(self) -> None:
        self.bound = float(np.abs(self.truth).max())
        self.stored_vs_truth = nrmse2d(self.stored[:, self.start + 1:], self.truth)

    def _solve(self) -> None:
        from ups_jax.data import ns2d

        every = self.ref_grid // self.X
        forcing = ns2d.fno_forcing(self.ref_grid, self.forcing_amplitude, np.float64) if self.forcing_amplitude \
            else None
        solver = ns2d.make_solver(self.ref_grid, nu=self.nu_value, frames=self._T, max_dt=self.ref_dt,
                                  forcing=forcing)
        ref = np.asarray(solver(self._w0.astype(np.float32)))                # (N, T, S, S)
        self.given_full = ref[:, self.start].astype(np.float64)            # the given frame, reference grid
        self.truth = ref[:, self.start + 1:, ::every, ::every].astype(np.float64)    # at the protocol's points
        self._finish()


def solver_row(p: Protocol2D, n: int, repeats: int) -> dict:
    from rollout_vs_solver import timed

    w_given = resample(p.given_full, n).astype(np.float32)
    solve, dt, tried = largest_stable_solve(w_given, n, nu=p.nu_value, steps=p.steps,
                                            forcing_amplitude=p.forcing_amplitude, bound=p.bound)
    frames, wall = timed(lambda: solve(w_given), repeats)
    pred = frames[..., ::n // p.X, ::n // p.X] if n >= p.X else resample(frames, p.X)
    return {"method": f"solver, {n}²", "kind": "solver", "cells": n, "dt": dt, "dt_ladder": tried,
            "nrmse": nrmse2d(pred, p.truth), "wall_s": wall}


def model_row(workdir: str, p: Protocol2D, repeats: int) -> dict:
    from rollout_vs_solver import timed

    from ups_jax.eval.evaluate import predict
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    cfg, data, model, stage, step = load_run(workdir, p.paths)
    if (int(cfg.eval.initial_step) - 1, int(cfg.data.reduced_resolution)) != (p.start, 1):
        raise UserError(f"{workdir}: its protocol (eval.initial_step, data.reduced_resolution) differs from the "
                        f"first run's; benchmark it separately")
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=len(p.idx), mode=cfg.eval.rollout_mode)
    pred, wall = timed(lambda: predict(rollout, p.stored, p.nu, p.dt, p.start, p.steps), repeats)
    return {"method": f"model {workdir}", "kind": "model", "workdir": workdir, "cells": p.X,
            "nrmse": nrmse2d(pred, p.truth), "nrmse_vs_stored": nrmse2d(pred, p.stored[:, p.start + 1:]),
            "wall_s": wall}


def markdown(rows: list[dict], n_traj: int, coarsest: int) -> str:
    head = ["method", "solver step", "nRMSE vs reference", "wall s", "trajectories/s", "equal-error solver",
            "its wall s", "speed-up vs it"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eq = r.get("equal_error")
        cells = [r["method"], f"{r['dt']:g}" if "dt" in r else "—", f"{r['nrmse']:.4g}", f"{r['wall_s']:.4g}",
                 f"{n_traj / r['wall_s']:.4g}"]
        if r["kind"] == "model":
            cells += ([f"{eq['cells']}²" + (" (the coarsest tried)" if eq["cells"] == coarsest else ""),
                       f"{eq['wall_s']:.4g}", f"{eq['wall_s'] / r['wall_s']:.3g}x"] if eq
                      else ["none: every resolution tried is less accurate", "—", "—"])
        else:
            cells += ["", "", ""]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def run(args, cfg, paths) -> int:
    from rollout_vs_solver import finish
    from solver_throughput import machine

    resolutions = sorted(args.resolutions or DEFAULT_RESOLUTIONS_2D)
    p = Protocol2D(cfg, paths, args.max_trajectories, args.reference or DEFAULT_REFERENCE)
    bad = [n for n in resolutions if n < 8 or n % 2 or (n > p.X and n % p.X) or (n < p.X and p.X % n)]
    if bad:
        raise UserError(f"--resolutions {bad}: each must be even, >= 8, and a multiple or divisor of the stored "
                        f"{p.X}² grid")
    p.solve_reference(args.reference_cache)
    print(f"{machine()}\n{len(p.idx)} test trajectories of {p.paths[0]}: given frame t={p.start * p.dt:g}, "
          f"{p.steps} predicted frames at dt={p.dt:g}, scored on the stored {p.X}² points against a "
          f"{p.ref_grid}², dt={p.ref_dt:g} re-solve (initial fields redrawn from the seed: max rel. diff. "
          f"{p.redraw_error:.1e} from the stored frame 0); the stored data's own nRMSE vs that reference: "
          f"{p.stored_vs_truth:.3g}", flush=True)
    solvers = []
    for n in resolutions:
        solvers.append(solver_row(p, n, args.repeats))
        print(f"solver {n}²: dt {solvers[-1]['dt']:g} (ladder {solvers[-1]['dt_ladder']}), nRMSE "
              f"{solvers[-1]['nrmse']:.4g}, {solvers[-1]['wall_s']:.4g} s", flush=True)
    models = [model_row(w, p, args.repeats) for w in args.workdir]
    notes = "; ".join(f"{m['method']}: nRMSE vs the stored data {m['nrmse_vs_stored']:.4g}" for m in models)
    meta = {"data": p.paths, "n_trajectories": len(p.idx), "given_t": p.start * p.dt, "dt": p.dt, "steps": p.steps,
            "protocol_grid": p.X, "reference": {"grid": p.ref_grid, "dt": p.ref_dt}, "redraw_error": p.redraw_error,
            "stored_vs_reference_nrmse": p.stored_vs_truth}
    return finish(models, solvers, lambda rows: markdown(rows, len(p.idx), min(resolutions)), args.repeats,
                  f"\n{notes}" if notes else "", args.out, meta)
