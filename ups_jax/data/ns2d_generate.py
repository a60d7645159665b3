"""Writes 2-D Navier–Stokes vorticity data (the FNO paper's problem, ``ups_jax.data.ns2d``), 2-D PDEBench layout.

    python -m ups_jax.data.generate ns2d --samples 64 --frames 21 --out data/ns2d [--nu 1e-3] [--solve-grid 256]
        [--grid 64] [--max-dt auto] [--forcing-amplitude 0.1] [--seed 0] [--chunk 16] [--overwrite]

writes ``OUT/2D_NS_Vorticity_Nu0.001.hdf5`` (layout: docs/run-format.md, "2-D data"):

* ``tensor``: float32 ``(N, T, X, Y)``, frame ``k`` at ``t = k`` (frame 0 = the initial vorticity), axis 2 = x;
* ``x-coordinate``, ``y-coordinate``: the ``X`` / ``Y`` grid points ``i / X`` of the unit torus (ns_2d.py's
  points, not cell centres); ``t-coordinate``: the ``T`` frame times ``0, 1, ..., T - 1``;
* attributes ``Nu``, ``forcing``, ``forcing_amplitude``, ``pde``, ``scheme``, ``solve_grid``, ``grid``,
  ``store_every``, ``dt`` (solver step), ``frame_dt``, ``seed``, ``initial_conditions``, ``generator``,
  ``ups_jax_version``, ``dims`` = 2.

As the 1-D generator: chunks of ``--chunk`` samples (the last padded, one compilation), a progress bar, a temporary
file renamed into place when complete, an existing output refused without ``--overwrite``, a chunk with non-finite
values a one-line ``DataError``. Sample ``i`` depends only on ``seed`` and ``i`` (its own PRNG key).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ups_jax.errors import DataError, UserError

GENERATOR = "ups_jax.data.generate ns2d"
DEFAULT_NU = 1e-3
# Largest step at which the IF-RK4 solve of the FNO flow (|u| <~ 0.3 up to t = 50) is stable with margin: the
# advective limit dt |u| k_max <= 2.8 with k_max = 2 pi (s/3) scales as 1/s (docs/benchmarks.md, "2-D Navier–Stokes").
AUTO_DT_AT_256 = 1e-2


def filename(nu: float) -> str:
    return f"2D_NS_Vorticity_Nu{float(nu)!s}.hdf5"


def auto_max_dt(solve_grid: int) -> float:
    return AUTO_DT_AT_256 * 256 / int(solve_grid)


def check_args(*, nu, samples, frames, solve_grid, grid, chunk, max_dt, forcing_amplitude) -> int:
    """One ``UserError`` listing every bad flag; returns ``store_every`` = solve_grid / grid."""
    problems = []
    if not (np.isfinite(nu) and nu > 0):
        problems.append(f"--nu must be > 0 (got {nu})")
    if samples < 1:
        problems.append(f"--samples must be >= 1 (got {samples})")
    if frames < 2:
        problems.append(f"--frames must be >= 2 (got {frames})")
    if solve_grid < 8 or solve_grid % 2:
        problems.append(f"--solve-grid must be even and >= 8 (got {solve_grid})")
    if grid < 2:
        problems.append(f"--grid must be >= 2 (got {grid})")
    elif solve_grid >= 8 and solve_grid % grid:
        divisors = [d for d in (16, 32, 64, 128, 256) if d <= solve_grid and solve_grid % d == 0]
        problems.append(f"--grid {grid} does not divide --solve-grid {solve_grid} (frames are stored at every "
                        f"(solve-grid / grid)-th point); use a divisor, e.g. --grid {divisors[-1] if divisors else 2}")
    if chunk < 1:
        problems.append(f"--chunk must be >= 1 (got {chunk})")
    if not (np.isfinite(max_dt) and max_dt > 0):
        problems.append(f"--max-dt must be > 0 (got {max_dt})")
    if not np.isfinite(forcing_amplitude):
        problems.append(f"--forcing-amplitude must be finite (got {forcing_amplitude})")
    if problems:
        raise UserError("ns2d: " + "; ".join(problems))
    return solve_grid // grid


def generate_ns2d_file(out_dir, *, samples: int, frames: int, nu: float = DEFAULT_NU, solve_grid: int = 256,
                       grid: int = 64, max_dt: float | None = None, forcing_amplitude: float = 0.1, seed: int = 0,
                       chunk: int = 16, overwrite: bool = False, progress: bool = True) -> Path:
    """Solves ``samples`` FNO-distributed vorticity fields for ``frames - 1`` time units; returns the file's path."""
    import jax

    from ups_jax.data import ns2d
    from ups_jax.data.outputs import output_path_named

    samples, frames, solve_grid, grid, chunk = int(samples), int(frames), int(solve_grid), int(grid), int(chunk)
    nu, forcing_amplitude = float(nu), float(forcing_amplitude)
    max_dt = auto_max_dt(solve_grid) if max_dt is None else float(max_dt)
    store_every = check_args(nu=nu, samples=samples, frames=frames, solve_grid=solve_grid, grid=grid, chunk=chunk,
                             max_dt=max_dt, forcing_amplitude=forcing_amplitude)
    out = output_path_named(out_dir, filename(nu), overwrite)
    n_sub = ns2d.steps_per_frame(1.0, max_dt)
    forcing = ns2d.fno_forcing(solve_grid, forcing_amplitude, np.float64) if forcing_amplitude else None
    chunk = min(chunk, samples)
    solver = ns2d.make_solver(solve_grid, nu=nu, frames=frames, max_dt=max_dt, forcing=forcing,
                              store_every=store_every)
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), samples)          # sample i: its own key

    def initial(start):
        idx = np.minimum(np.arange(start, start + chunk), samples - 1)      # the last chunk padded with repeats
        return jax.vmap(lambda k: ns2d.gaussian_random_field(k, 1, solve_grid)[0])(keys[idx])

    attrs = {"Nu": nu, "dims": 2, "generator": GENERATOR, "pde": ns2d.PDE, "scheme": ns2d.SCHEME,
             "forcing": ns2d.FNO_FORCING.replace("0.1", f"{forcing_amplitude:g}", 1) if forcing_amplitude else "0",
             "forcing_amplitude": forcing_amplitude, "solve_grid": solve_grid, "grid": grid,
             "store_every": store_every, "dt": 1.0 / n_sub, "frame_dt": 1.0, "seed": int(seed),
             "initial_conditions": f"GRF N(0, 7^1.5 (-lap + 49 I)^-2.5) as FNO's GaussianRF(2, {solve_grid}, "
                                   f"alpha=2.5, tau=7), sample i from jax.random.split(PRNGKey(seed), N)[i]"}
    return _write(out, solver, initial, samples=samples, frames=frames, grid=grid, chunk=chunk, attrs=attrs,
                  overwrite=overwrite, progress=progress)


def _write(out: Path, solver, initial, *, samples, frames, grid, chunk, attrs, overwrite, progress) -> Path:
    import h5py
    from tqdm.auto import tqdm

    from ups_jax import __version__
    from ups_jax.data import ns2d
    from ups_jax.data.outputs import first_line as _first_line
    from ups_jax.data.outputs import publish as _publish

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            # one chunk per (sample, frame): a trajectory or a frame window reads whole chunks
            tensor = f.create_dataset("tensor", (samples, frames, grid, grid), dtype=np.float32,
                                      chunks=(1, 1, grid, grid))
            f.create_dataset("x-coordinate", data=ns2d.points(grid))
            f.create_dataset("y-coordinate", data=ns2d.points(grid))
            f.create_dataset("t-coordinate", data=np.arange(frames, dtype=np.float32))
            f.attrs.update(attrs)
            f.attrs["ups_jax_version"] = __version__
            with tqdm(total=samples, unit="sample", desc=out.name, disable=not progress) as bar:
                pending = solver(initial(0))                                   # asynchronous dispatch
                for start in range(0, samples, chunk):
                    block = pending
                    if start + chunk < samples:
                        pending = solver(initial(start + chunk))
                    n = min(chunk, samples - start)
                    block = np.asarray(block[:n], np.float32)
                    if not np.all(np.isfinite(block)):
                        bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=(1, 2, 3)))[0])
                        raise DataError(f"{out}: the solver produced non-finite values (sample {bad}); lower "
                                        f"--max-dt (now {attrs['dt']:g}) or raise --nu")
                    tensor[start:start + n] = block
                    bar.update(n)
        _publish(tmp, out, overwrite)
    except OSError as e:
        raise DataError(f"{out}: cannot write ({_first_line(e)})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def add_parser(sub) -> None:
    """The ``ns2d`` subcommand of ``python -m ups_jax.data.generate``."""
    p = sub.add_parser("ns2d", help="2-D incompressible Navier-Stokes (vorticity), the FNO paper's problem",
                       description="Writes OUT/2D_NS_Vorticity_Nu{nu}.hdf5: tensor (N, T, X, Y) float32 (frame k "
                                   "at t = k, frame 0 = initial vorticity), x-/y-/t-coordinate, attrs Nu, forcing, "
                                   "solver settings. w_t + u.grad w = nu lap w + f on the unit torus, f = A (sin "
                                   "2pi(x+y) + cos 2pi(x+y)), w0 ~ GRF as the FNO paper.")
    p.add_argument("--samples", type=int, required=True, help="number of trajectories N")
    p.add_argument("--frames", type=int, required=True, help="frames T stored (t = 0, 1, ..., T-1)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--nu", type=float, default=DEFAULT_NU, help="viscosity (default 1e-3)")
    p.add_argument("--solve-grid", type=int, default=256, help="grid the solver runs on (default 256)")
    p.add_argument("--grid", type=int, default=64, help="stored grid; must divide --solve-grid (default 64)")
    p.add_argument("--max-dt", type=float, default=None,
                   help=f"largest solver step (default {AUTO_DT_AT_256:g} * 256 / solve-grid)")
    p.add_argument("--forcing-amplitude", type=float, default=0.1, help="A of the forcing (default 0.1; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--chunk", type=int, default=16, help="trajectories solved together (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> str:
    out = generate_ns2d_file(args.out, samples=args.samples, frames=args.frames, nu=args.nu,
                             solve_grid=args.solve_grid, grid=args.grid, max_dt=args.max_dt,
                             forcing_amplitude=args.forcing_amplitude, seed=args.seed, chunk=args.chunk,
                             overwrite=args.overwrite, progress=not args.no_progress)
    return (f"wrote {out} ({args.samples} samples x {args.frames} frames x {args.grid}^2, solved at "
            f"{args.solve_grid}^2, Nu={args.nu:g})")

