"""Generate PDEBench-layout data with the JAX solvers: 1-D Burgers (here) and 2-D Navier–Stokes (``ns2d``).

    python -m ups_jax.data.generate burgers1d --nu 0.01 --samples 512 --nx 1024 --out data/burgers_nu0.01 \\
        [--seed 2022] [--x-min -1 --x-max 1] [--advective-scale 2] [--chunk 64] [--overwrite]
    python -m ups_jax.data.generate burgers1d --initial-from FILE (--out DIR | --check) \\
        [--nu NU] [--nx NX] [--samples N] [--frames K] [--advective-scale 2]
    python -m ups_jax.data.generate ns2d --samples N --frames T --out DIR [...]   (ups_jax.data.ns2d_generate)

The first form writes ``OUT/1D_Burgers_Sols_Nu0.01.hdf5`` in the layout of PDEBench's files:

* ``tensor``: float32 ``(N, 201, nx)``, frames at ``t = 0, 0.01, ..., 2.0``;
* ``x-coordinate``: the ``nx`` cell centres;
* ``t-coordinate``: **202** values ``0, 0.01, ..., 2.01`` (PDEBench's generator writes one more time than
  frames; readers must take frame times from the frame index, never from this array's length);
* attribute ``Nu`` (float), plus the generation parameters (``advective_scale``, ``x_min``, ``x_max``, ``seed``,
  ``cfl``, ``pde``, ...; :func:`generation_attrs`), so that a file made with other settings is recognised.

The equation is ``u_t + a (u^2/2)_x = (Nu/pi) u_xx`` on ``[x_min, x_max)``, periodic, with ``a`` =
``--advective-scale``. The defaults follow PDEBench's *released* files (made before PDEBench commit fd12554):
``a = 2``, i.e. ``u_t + (u^2)_x = (Nu/pi) u_xx``, on ``(-1, 1)``. PDEBench's current code solves
``u_t + (u^2/2)_x = (Nu/pi) u_xx`` on ``(0, 1)``: pass ``--advective-scale 1 --x-min 0 --x-max 1``. What is
checked (tests/test_pdebench_reference.py): from the same initial states, this solver with ``a = 2`` reproduces
the generator of the ``pdebench`` 0.1.0 package (the pre-fd12554 code) to float32 round-off over 20 frames. The
initial conditions follow PDEBench's distribution but not its random stream (``ups_jax.data.initial_conditions``).

The second form re-solves the initial states (frame 0) of an existing PDEBench-layout file: ``--check`` compares
the result with the file's own frames (is it this equation, this ``a`` and ``Nu``?), ``--out`` writes a new file,
e.g. at another ``--nu`` or on a coarser grid (``--nx`` must divide the file's cell count; the initial states are
restricted by cell averages, the finite-volume solver's natural restriction). Domain and frame times come from
the file.

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
from typing import Iterator, Sequence

import numpy as np

from ups_jax.data.outputs import first_line as _first_line
from ups_jax.data.outputs import output_path_named
from ups_jax.data.outputs import publish as _publish
from ups_jax.errors import DataError, UserError, run_cli

FRAMES_DT = 0.01
T_FINAL = 2.0
# PDEBench's released Burgers files: flux u^2 (the upwind sum without the outer 1/2 that commit fd12554 added)
DEFAULT_ADVECTIVE_SCALE = 2.0
GENERATOR = "ups_jax.data.generate burgers1d"


def burgers_filename(nu: float) -> str:
    """PDEBench's name: ``1D_Burgers_Sols_Nu0.01.hdf5``, ``..._Nu1.0.hdf5`` (``str(float(nu))``)."""
    return f"1D_Burgers_Sols_Nu{float(nu)!s}.hdf5"


def pde_string(advective_scale: float) -> str:
    """The equation solved with ``advective_scale`` ``a``: ``u_t + a (u^2/2)_x = (Nu/pi) u_xx``, written out."""
    a = float(advective_scale)
    flux = {1.0: "(u^2/2)_x", 2.0: "(u^2)_x"}.get(a, f"{a:g} (u^2/2)_x")
    return f"u_t + {flux} = (Nu/pi) u_xx"


def generation_attrs(*, advective_scale: float, x_min: float, x_max: float, **extra) -> dict:
    """HDF5 attributes recording how a file was made (``ensure_default_data`` compares them with the config)."""
    from ups_jax import __version__
    from ups_jax.data import burgers

    attrs = {"generator": GENERATOR, "ups_jax_version": __version__, "advective_scale": float(advective_scale),
             "pde": pde_string(advective_scale), "x_min": float(x_min), "x_max": float(x_max), "cfl": burgers.CFL,
             "scheme": "PDEBench finite volume: MUSCL + MC limiter, upwind flux, predictor-corrector, adaptive dt"}
    attrs.update(extra)
    return attrs


def _check_args(nu, samples, nx, x_min, x_max, chunk, advective_scale=DEFAULT_ADVECTIVE_SCALE):
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
    if not (np.isfinite(advective_scale) and advective_scale > 0):
        problems.append(f"--advective-scale must be > 0 (got {advective_scale})")
    if problems:
        raise UserError("; ".join(problems))


def generate_burgers_file(out_dir, *, nu: float, samples: int, nx: int, seed: int = 2022, x_min: float = -1.0,
                          x_max: float = 1.0, advective_scale: float = DEFAULT_ADVECTIVE_SCALE, chunk: int = 64,
                          overwrite: bool = False, progress: bool = True) -> Path:
    """Solves ``samples`` PDEBench-distributed Burgers problems and writes them in PDEBench layout.

    Returns the path of ``out_dir/1D_Burgers_Sols_Nu{nu}.hdf5``. Raises ``DataError`` if it exists and not
    ``overwrite``. Deterministic in ``seed``; sample ``i`` does not depend on ``samples`` or ``chunk``.
    """
    import jax

    from ups_jax.data import burgers
    from ups_jax.data.initial_conditions import burgers_initial_conditions

    nu, samples, nx, x_min, x_max, chunk = float(nu), int(samples), int(nx), float(x_min), float(x_max), int(chunk)
    advective_scale = float(advective_scale)
    _check_args(nu, samples, nx, x_min, x_max, chunk, advective_scale)
    out = _output_path(out_dir, nu, overwrite)
    x = burgers.cell_centres(nx, x_min, x_max)
    u0_all = np.asarray(burgers_initial_conditions(jax.random.PRNGKey(int(seed)), x, samples,
                                                   x_min=x_min, x_max=x_max))
    attrs = generation_attrs(advective_scale=advective_scale, x_min=x_min, x_max=x_max, seed=int(seed),
                             initial_conditions="ups_jax.data.initial_conditions (PDEBench init_multi distribution)")
    return _write(out, u0_all, x=x, dx=(x_max - x_min) / nx, nu=nu, t_frames=burgers.save_times(T_FINAL, FRAMES_DT),
                  advective_scale=advective_scale, attrs=attrs, chunk=chunk, overwrite=overwrite, progress=progress)


def _output_path(out_dir, nu: float, overwrite: bool) -> Path:
    return output_path_named(out_dir, burgers_filename(nu), overwrite)


def _solve_chunks(u0_all: np.ndarray, *, dx: float, nu: float, t_frames: np.ndarray, advective_scale: float,
                  chunk: int, where: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(start, frames (n, T, X) float32)`` chunk by chunk; the next chunk computes while one is consumed."""
    import jax.numpy as jnp

    from ups_jax.data import burgers

    samples = u0_all.shape[0]
    chunk = min(chunk, samples)

    def launch(start):  # asynchronous dispatch
        u0 = u0_all[start:start + chunk]
        if u0.shape[0] < chunk:                                            # pad: one compiled shape
            u0 = np.concatenate([u0, np.repeat(u0[-1:], chunk - u0.shape[0], axis=0)])
        return start, burgers.solve(jnp.asarray(u0, jnp.float32), dx=dx, nu=nu, t_save=t_frames,
                                    advective_scale=advective_scale)

    pending = launch(0)
    while pending is not None:
        start, frames = pending
        nxt = start + chunk
        pending = launch(nxt) if nxt < samples else None
        n = min(chunk, samples - start)
        block = np.asarray(frames[:n], dtype=np.float32)
        if not np.all(np.isfinite(block)):
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=(1, 2)))[0])
            raise DataError(f"{where}: the solver produced non-finite values (sample {bad}); check --nu/--nx")
        yield start, block


def _write(out: Path, u0_all: np.ndarray, *, x: np.ndarray, dx: float, nu: float, t_frames: np.ndarray,
           advective_scale: float, attrs: dict, chunk: int, overwrite: bool, progress: bool) -> Path:
    import h5py
    from tqdm.auto import tqdm

    samples, nx = u0_all.shape
    # PDEBench quirk, replicated on purpose: tc = arange(it_tot + 1) * dt_save -> one more value than frames
    dt = float(t_frames[1] - t_frames[0]) if t_frames.size > 1 else FRAMES_DT
    t_coordinate = (np.arange(t_frames.size + 1, dtype=np.float64) * dt).astype(np.float32)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            tensor = f.create_dataset("tensor", (samples, t_frames.size, nx), dtype=np.float32)
            f.create_dataset("x-coordinate", data=np.asarray(x, np.float32))
            f.create_dataset("t-coordinate", data=t_coordinate)
            f.attrs["Nu"] = nu
            f.attrs.update(attrs)
            with tqdm(total=samples, unit="sample", desc=out.name, disable=not progress) as bar:
                for start, block in _solve_chunks(u0_all, dx=dx, nu=nu, t_frames=t_frames,
                                                  advective_scale=advective_scale, chunk=chunk, where=out):
                    tensor[start:start + block.shape[0]] = block
                    bar.update(block.shape[0])
        _publish(tmp, out, overwrite)
    except OSError as e:                        # unwritable directory, disk full, ...
        raise DataError(f"{out}: cannot write ({_first_line(e)})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# --------------------------------------------------------------------------------------------------------------
# re-solving the initial states of an existing file
# --------------------------------------------------------------------------------------------------------------
def _initial_states(source: Path, *, nx: int | None, samples: int | None, frames: int | None):
    """Reads frame 0 of ``source`` (restricted to ``nx`` cells by cell averages) and its grid and frame times."""
    from ups_jax.data import burgers
    from ups_jax.data.pdebench import H5_ERRORS, PDEBenchDataset, _nu_of

    with PDEBenchDataset(source) as ds:                   # validates the layout (one-line DataErrors)
        n_file, nt_file, nx_file = ds.num_trajectories, ds.nt, ds.nx
        x_min, x_max, dt = ds.x_min, ds.x_max, ds.dt
    samples = n_file if samples is None else int(samples)
    frames = nt_file if frames is None else int(frames)
    nx = nx_file if nx is None else int(nx)
    if not 1 <= samples <= n_file:
        raise UserError(f"--samples {samples}: {source} has {n_file} trajectories; use 1..{n_file}")
    if not 2 <= frames <= nt_file:
        raise UserError(f"--frames {frames}: {source} has {nt_file} frames; use 2..{nt_file}")
    if nx < 4 or nx_file % nx:
        raise UserError(f"--nx {nx}: must divide the {nx_file} cells of {source} (the initial states are restricted "
                        f"by cell averages); e.g. --nx {nx_file // 4}")
    import h5py

    try:
        with h5py.File(source, "r") as f:
            u0 = np.asarray(f["tensor"][:samples, 0, :], np.float64)
            nu_file = _nu_of(f, source)                   # float64 as stored (the reader keeps float32)
    except H5_ERRORS as e:
        raise DataError(f"{source}: cannot read 'tensor' ({_first_line(e)})") from e
    u0 = burgers.restrict(u0, nx).astype(np.float32)
    x = burgers.cell_centres(nx, x_min, x_max)
    t_frames = np.arange(frames, dtype=np.float64) * dt
    return u0, x, t_frames, dict(x_min=x_min, x_max=x_max, nu=nu_file, nx_file=nx_file)


def resolve_initial_states(source, out_dir=None, *, nu: float | None = None, nx: int | None = None,
                           samples: int | None = None, frames: int | None = None,
                           advective_scale: float = DEFAULT_ADVECTIVE_SCALE, chunk: int = 64,
                           overwrite: bool = False, progress: bool = True):
    """Re-solves frame 0 of the first ``samples`` trajectories of ``source`` over its first ``frames`` frames.

    With ``out_dir``: writes ``out_dir/1D_Burgers_Sols_Nu{nu}.hdf5`` (PDEBench layout) and returns its path.
    Without: compares with the file's own frames (restricted by cell averages when ``nx`` is coarser) and returns
    ``{'rel_l2': (samples, frames) relative L2 per trajectory and frame, 'nu', 'advective_scale', ...}``.
    ``nu`` defaults to the file's ``Nu``, ``nx`` to its cell count; domain and frame times come from the file.
    """
    source = Path(source)
    u0, x, t_frames, meta = _initial_states(source, nx=nx, samples=samples, frames=frames)
    nu = meta["nu"] if nu is None else float(nu)
    _check_args(nu, u0.shape[0], x.size, meta["x_min"], meta["x_max"], int(chunk), float(advective_scale))
    dx = (meta["x_max"] - meta["x_min"]) / x.size
    if out_dir is not None:
        out = _output_path(out_dir, nu, overwrite)
        if out.resolve() == source.resolve():
            raise UserError(f"{out}: is the --initial-from file itself; choose another --out")
        attrs = generation_attrs(advective_scale=advective_scale, x_min=meta["x_min"], x_max=meta["x_max"],
                                 initial_conditions=f"frame 0 of {source.name} (cell averages over "
                                                    f"{meta['nx_file'] // x.size} of its {meta['nx_file']} cells)")
        return _write(out, u0, x=x, dx=dx, nu=nu, t_frames=t_frames, advective_scale=float(advective_scale),
                      attrs=attrs, chunk=int(chunk), overwrite=overwrite, progress=progress)
    import h5py

    from ups_jax.data import burgers

    rel = np.zeros((u0.shape[0], t_frames.size))
    with h5py.File(source, "r") as f:
        for start, block in _solve_chunks(u0, dx=dx, nu=nu, t_frames=t_frames, advective_scale=float(advective_scale),
                                          chunk=int(chunk), where=source):
            n = block.shape[0]
            ref = burgers.restrict(np.asarray(f["tensor"][start:start + n, :t_frames.size, :], np.float64), x.size)
            err = np.sqrt(np.sum((block - ref) ** 2, axis=2))
            with np.errstate(divide="ignore", invalid="ignore"):
                rel[start:start + n] = err / np.sqrt(np.sum(ref ** 2, axis=2))
    return {"rel_l2": rel, "nu": nu, "advective_scale": float(advective_scale), "nx": int(x.size),
            "t": t_frames, "source": str(source)}


def _parser() -> argparse.ArgumentParser:
    from ups_jax.cli import ArgumentParser

    p = ArgumentParser(prog="python -m ups_jax.data.generate",
                description="Generate PDEBench-layout data with the JAX solvers.")
    sub = p.add_subparsers(dest="pde", required=True, parser_class=ArgumentParser)
    b = sub.add_parser("burgers1d", help="1D viscous Burgers, PDEBench scheme and IC distribution",
                       description="Writes OUT/1D_Burgers_Sols_Nu{nu}.hdf5 (tensor (N,201,nx) float32, "
                                   "x-coordinate, t-coordinate (202 values, as PDEBench), attr Nu), solving "
                                   "u_t + a (u^2/2)_x = (Nu/pi) u_xx (a = --advective-scale; default 2 = "
                                   "PDEBench's released files). With --initial-from FILE: re-solves FILE's "
                                   "initial states (--check compares with FILE's frames, --out writes a file).")
    b.add_argument("--nu", type=float, help="PDEBench Nu (diffusion coefficient Nu/pi); required unless "
                                            "--initial-from (default: the file's Nu)")
    b.add_argument("--samples", type=int, help="number of trajectories; required unless --initial-from (then: "
                                               "its first N, default all)")
    b.add_argument("--nx", type=int, help="cells (default 1024; with --initial-from the file's, or a divisor)")
    b.add_argument("--out", help="output directory")
    b.add_argument("--seed", type=int, default=2022, help="PRNG seed (default 2022, as PDEBench)")
    b.add_argument("--x-min", type=float, default=-1.0, help="domain start (default -1: released PDEBench files)")
    b.add_argument("--x-max", type=float, default=1.0, help="domain end (default 1; PDEBench HEAD code uses 0..1)")
    b.add_argument("--advective-scale", type=float, default=DEFAULT_ADVECTIVE_SCALE,
                   help="a in u_t + a (u^2/2)_x = (Nu/pi) u_xx: 2 = PDEBench's released files (default), "
                        "1 = PDEBench's current code")
    b.add_argument("--initial-from", metavar="FILE", help="re-solve the initial states (frame 0) of this "
                                                          "PDEBench-layout file (its domain and frame times)")
    b.add_argument("--frames", type=int, help="with --initial-from: solve only the first K frames (default all)")
    b.add_argument("--check", action="store_true", help="with --initial-from: compare with the file's own frames "
                                                        "instead of writing a file")
    b.add_argument("--chunk", type=int, default=64, help="samples solved together (default 64)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ups_jax.data import ns2d_generate

    ns2d_generate.add_parser(sub)
    return p


def _usage(args) -> None:
    """The argument combinations argparse cannot express; one line naming the flag."""
    if args.initial_from is None:
        for flag in ("nu", "samples", "out"):
            if getattr(args, flag) is None:
                raise UserError(f"burgers1d: --{flag} is required (or re-solve a file with --initial-from FILE)")
        for flag in ("frames", "check"):
            if getattr(args, flag):
                raise UserError(f"burgers1d: --{flag} needs --initial-from FILE")
    elif args.check == (args.out is not None):
        raise UserError("burgers1d --initial-from: give exactly one of --check (compare with the file) and "
                        "--out DIR (write a new file)")


def _check_summary(res: dict) -> str:
    rel, t = res["rel_l2"], res["t"]
    worst = rel.max(axis=0)                               # max over trajectories, per frame
    shown = sorted({1, min(10, t.size - 1), min(20, t.size - 1), t.size - 1})
    per = ", ".join(f"t={t[k]:.2f}: {worst[k]:.2e}" for k in shown)
    return (f"{res['source']}: re-solved {rel.shape[0]} trajectories x {t.size} frames at nx={res['nx']}, "
            f"Nu={res['nu']:g}, advective_scale={res['advective_scale']:g}; relative L2 to the file's frames, max over "
            f"trajectories: {per} (max {worst.max():.2e})")


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    t0 = time.perf_counter()
    if args.pde == "ns2d":
        from ups_jax.data import ns2d_generate

        print(f"{ns2d_generate.main(args)} in {time.perf_counter() - t0:.1f} s")
        return 0
    _usage(args)
    progress = not args.no_progress
    if args.initial_from is not None:
        res = resolve_initial_states(args.initial_from, args.out, nu=args.nu, nx=args.nx, samples=args.samples,
                                     frames=args.frames, advective_scale=args.advective_scale, chunk=args.chunk,
                                     overwrite=args.overwrite, progress=progress)
        if args.check:
            print(_check_summary(res))
            return 0
        print(f"wrote {res} (initial states of {args.initial_from}) in {time.perf_counter() - t0:.1f} s")
        return 0
    nx = 1024 if args.nx is None else args.nx
    out = generate_burgers_file(args.out, nu=args.nu, samples=args.samples, nx=nx, seed=args.seed,
                                x_min=args.x_min, x_max=args.x_max, advective_scale=args.advective_scale,
                                chunk=args.chunk, overwrite=args.overwrite, progress=progress)
    print(f"wrote {out} ({args.samples} samples x {int(np.ceil(T_FINAL / FRAMES_DT)) + 1} frames x {nx} "
          f"cells, Nu={args.nu}, {pde_string(args.advective_scale)}) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
