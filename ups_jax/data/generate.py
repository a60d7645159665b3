"""Generate PDEBench-layout 1D Burgers data with the JAX solver.

    python -m ups_jax.data.generate burgers1d --nu 0.01 --samples 512 --nx 1024 --out data/burgers_nu0.01 \\
        [--seed 2022] [--x-min -1 --x-max 1] [--chunk 64] [--overwrite]

writes ``OUT/1D_Burgers_Sols_Nu0.01.hdf5`` exactly like PDEBench's released files:

* ``tensor``: float32 ``(N, 201, nx)``, frames at ``t = 0, 0.01, ..., 2.0``;
* ``x-coordinate``: the ``nx`` cell centres;
* ``t-coordinate``: **202** values ``0, 0.01, ..., 2.01`` (PDEBench's generator writes one more time than
  frames; readers must take frame times from the frame index, never from this array's length);
* attribute ``Nu`` (float).

Domain. PDEBench's code at HEAD uses ``x in (0, 1)``, but its *released* files (made before commit fd12554) carry
cell centres on ``(-1, 1)``. The default here follows the released files (``--x-min -1 --x-max 1``); pass
``--x-min 0 --x-max 1`` for the HEAD convention. The equation is always PDEBench HEAD's
``u_t + (u^2/2)_x = (nu/pi) u_xx`` (see ``ups_jax.data.burgers``).

Samples are solved in chunks (the last one padded, so the solver compiles once) behind a progress bar, written
to a temporary file in the output directory and renamed into place when complete: an interrupted run never
leaves a partial ``.hdf5``. An existing output is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ups_jax.errors import DataError, UserError, run_cli

FRAMES_DT = 0.01
T_FINAL = 2.0


def burgers_filename(nu: float) -> str:
    """PDEBench's name: ``1D_Burgers_Sols_Nu0.01.hdf5``, ``..._Nu1.0.hdf5`` (``str(float(nu))``)."""
    return f"1D_Burgers_Sols_Nu{float(nu)!s}.hdf5"


def _check_args(nu, samples, nx, x_min, x_max, chunk):
    problems = []
    if not (np.isfinite(nu) and nu > 0):
        problems.append(f"--nu must be > 0 (got {nu})")
    if samples < 1:
        problems.append(f"--samples must be >= 1 (got {samples})")
    if nx < 4:
        problems.append(f"--nx must be >= 4 (got {nx})")
    if not (np.isfinite(x_min) and np.isfinite(x_max) and x_max > x_min):
        problems.append(f"need --x-max > --x-min (got {x_min}, {x_max})")
    if chunk < 1:
        problems.append(f"--chunk must be >= 1 (got {chunk})")
    if problems:
        raise UserError("; ".join(problems))


def generate_burgers_file(out_dir, *, nu: float, samples: int, nx: int, seed: int = 2022, x_min: float = -1.0,
                          x_max: float = 1.0, chunk: int = 64, overwrite: bool = False,
                          progress: bool = True) -> Path:
    """Solves ``samples`` PDEBench-distributed Burgers problems and writes them in PDEBench layout.

    Returns the path of ``out_dir/1D_Burgers_Sols_Nu{nu}.hdf5``. Raises ``DataError`` if it exists and not
    ``overwrite``. Deterministic in ``seed``; sample ``i`` does not depend on ``samples`` or ``chunk``.
    """
    import h5py
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from ups_jax.data import burgers
    from ups_jax.data.initial_conditions import burgers_initial_conditions

    nu, samples, nx, x_min, x_max, chunk = float(nu), int(samples), int(nx), float(x_min), float(x_max), int(chunk)
    _check_args(nu, samples, nx, x_min, x_max, chunk)
    out_dir = Path(out_dir)
    out = out_dir / burgers_filename(nu)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out_dir}: cannot create output directory ({e.strerror or e})") from e

    x = burgers.cell_centres(nx, x_min, x_max)
    dx = (x_max - x_min) / nx
    t_frames = burgers.save_times(T_FINAL, FRAMES_DT)                     # (201,)
    # PDEBench quirk, replicated on purpose: tc = arange(it_tot + 1) * dt_save -> 202 values (0 ... 2.01)
    t_coordinate = (np.arange(t_frames.size + 1, dtype=np.float64) * FRAMES_DT).astype(np.float32)
    u0_all = np.asarray(burgers_initial_conditions(jax.random.PRNGKey(int(seed)), x, samples,
                                                   x_min=x_min, x_max=x_max))
    chunk = min(chunk, samples)

    def launch(start):  # asynchronous dispatch: the next chunk computes while the previous one is written
        u0 = u0_all[start:start + chunk]
        if u0.shape[0] < chunk:                                            # pad: one compiled shape
            u0 = np.concatenate([u0, np.repeat(u0[-1:], chunk - u0.shape[0], axis=0)])
        return start, burgers.solve(jnp.asarray(u0), dx=dx, nu=nu, t_save=t_frames)

    tmp = out_dir / f".{out.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            tensor = f.create_dataset("tensor", (samples, t_frames.size, nx), dtype=np.float32)
            f.create_dataset("x-coordinate", data=x.astype(np.float32))
            f.create_dataset("t-coordinate", data=t_coordinate)
            f.attrs["Nu"] = nu
            f.attrs.update({"generator": "ups_jax.data.generate burgers1d", "seed": int(seed),
                            "x_min": x_min, "x_max": x_max, "cfl": burgers.CFL,
                            "pde": "u_t + (u^2/2)_x = (Nu/pi) u_xx"})
            with tqdm(total=samples, unit="sample", desc=out.name, disable=not progress) as bar:
                pending = launch(0)
                while pending is not None:
                    start, frames = pending
                    nxt = start + chunk
                    pending = launch(nxt) if nxt < samples else None
                    n = min(chunk, samples - start)
                    block = np.asarray(frames[:n], dtype=np.float32)
                    if not np.all(np.isfinite(block)):
                        bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=(1, 2)))[0])
                        raise DataError(f"{out}: the solver produced non-finite values (sample {bad}); "
                                        f"check --nu/--nx")
                    tensor[start:start + n] = block
                    bar.update(n)
        _publish(tmp, out, overwrite)
    except OSError as e:                        # unwritable directory, disk full, ...
        raise DataError(f"{out}: cannot write ({_first_line(e)})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Atomic rename into place; without ``overwrite`` never replaces a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)                       # atomic and fails if ``out`` exists
    except FileExistsError as e:
        raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out") from e
    except OSError:                             # filesystem without hard links
        if out.exists():
            raise DataError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
        os.replace(tmp, out)


def _parser() -> argparse.ArgumentParser:
    from ups_jax.cli import ArgumentParser

    p = ArgumentParser(prog="python -m ups_jax.data.generate",
                description="Generate PDEBench-layout data with the JAX solvers.")
    sub = p.add_subparsers(dest="pde", required=True, parser_class=ArgumentParser)
    b = sub.add_parser("burgers1d", help="1D viscous Burgers, PDEBench scheme and IC distribution",
                       description="Writes OUT/1D_Burgers_Sols_Nu{nu}.hdf5 (tensor (N,201,nx) float32, "
                                   "x-coordinate, t-coordinate (202 values, as PDEBench), attr Nu).")
    b.add_argument("--nu", type=float, required=True, help="PDEBench Nu (diffusion coefficient Nu/pi)")
    b.add_argument("--samples", type=int, required=True, help="number of trajectories")
    b.add_argument("--nx", type=int, default=1024, help="cells (default 1024)")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--seed", type=int, default=2022, help="PRNG seed (default 2022, as PDEBench)")
    b.add_argument("--x-min", type=float, default=-1.0, help="domain start (default -1: released PDEBench files)")
    b.add_argument("--x-max", type=float, default=1.0, help="domain end (default 1; PDEBench HEAD code uses 0..1)")
    b.add_argument("--chunk", type=int, default=64, help="samples solved together (default 64)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    t0 = time.perf_counter()
    out = generate_burgers_file(args.out, nu=args.nu, samples=args.samples, nx=args.nx, seed=args.seed,
                                x_min=args.x_min, x_max=args.x_max, chunk=args.chunk, overwrite=args.overwrite,
                                progress=not args.no_progress)
    print(f"wrote {out} ({args.samples} samples x {int(np.ceil(T_FINAL / FRAMES_DT)) + 1} frames x {args.nx} "
          f"cells, Nu={args.nu}) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
