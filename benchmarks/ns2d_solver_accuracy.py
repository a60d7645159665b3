"""The 2-D Navier–Stokes solver (ups_jax.data.ns2d) on the FNO problem: error against a fine reference.

    .venv/bin/python benchmarks/ns2d_solver_accuracy.py [--samples 4] [--frames 21] [--store 64]
        [--reference 256:2.5e-3] [--cases 256:1e-2,128:2e-2,128:1e-2,64:4e-2] [--nu 1e-3]

Every case solves the same initial vorticity fields (drawn on a 256^2 grid, sampled at every (256/s)-th point, so
all cases start from the same point values) with the FNO forcing, and stores frames at ``--store``^2 (every
(s/store)-th point) at t = 0, 1, ..., frames-1. Prints, per case, the relative L2 against the reference (max over
samples) at t = 1, the middle and the last frame, and the wall time (compilation included: one call per case).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cases(text: str) -> list[tuple[int, float]]:
    from ups_jax.errors import UserError

    out = []
    for item in text.split(","):
        try:
            s, dt = item.split(":")
            out.append((int(s), float(dt)))
        except ValueError as e:
            raise UserError(f"--cases/--reference: '{item}' is not GRID:MAX_DT (e.g. 128:2e-2)") from e
    return out


def run(samples: int, frames: int, store: int, reference: tuple[int, float], cases, nu: float, fine: int = 256):
    import jax
    import numpy as np

    from ups_jax.data import ns2d
    from ups_jax.errors import UserError

    for s, _ in [reference, *cases]:
        if fine % s or s % store:
            raise UserError(f"grid {s}: must divide {fine} and be a multiple of --store {store}")
    keys = jax.random.split(jax.random.PRNGKey(0), samples)
    w_fine = jax.vmap(lambda k: ns2d.gaussian_random_field(k, 1, fine)[0])(keys)

    def solve(s, max_dt):
        w0 = w_fine[:, ::fine // s, ::fine // s]
        t0 = time.perf_counter()
        solver = ns2d.make_solver(s, nu=nu, frames=frames, max_dt=max_dt, store_every=s // store,
                                  forcing=ns2d.fno_forcing(s, dtype=np.float64))
        out = np.asarray(jax.block_until_ready(solver(w0)), np.float64)
        return out, time.perf_counter() - t0

    ref, ref_s = solve(*reference)
    rows = [dict(grid=reference[0], max_dt=reference[1], wall_s=ref_s, reference=True)]
    mid = frames // 2
    for s, max_dt in cases:
        out, wall = solve(s, max_dt)
        diff = np.linalg.norm((out - ref).reshape(samples, frames, -1), axis=-1)
        rel = diff / np.linalg.norm(ref.reshape(samples, frames, -1), axis=-1)
        rows.append(dict(grid=s, max_dt=max_dt, wall_s=wall, reference=False, rel_t1=float(rel[:, 1].max()),
                         rel_mid=float(rel[:, mid].max()), rel_end=float(rel[:, -1].max())))
    return rows


def main(argv: Sequence[str]) -> int:
    from ups_jax.cli import ArgumentParser

    p = ArgumentParser(prog="benchmarks/ns2d_solver_accuracy.py", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--frames", type=int, default=21)
    p.add_argument("--store", type=int, default=64)
    p.add_argument("--reference", default="256:2.5e-3")
    p.add_argument("--cases", default="256:1e-2,128:2e-2,128:1e-2,64:4e-2")
    p.add_argument("--nu", type=float, default=1e-3)
    args = p.parse_args(list(argv))
    rows = run(args.samples, args.frames, args.store, _cases(args.reference)[0], _cases(args.cases), args.nu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# nu={args.nu:g}, {args.samples} samples, frames t=0..{args.frames - 1} stored at {args.store}^2; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print("| solve grid | max dt | rel. L2 t=1 | rel. L2 t=mid | rel. L2 t=end | wall s (incl. compile) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["reference"]:
            print(f"| {r['grid']}² | {r['max_dt']:g} | reference | | | {r['wall_s']:.0f} |")
        else:
            print(f"| {r['grid']}² | {r['max_dt']:g} | {r['rel_t1']:.1e} | {r['rel_mid']:.1e} | {r['rel_end']:.1e} "
                  f"| {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
