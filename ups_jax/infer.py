"""``python -m ups_jax.infer --workdir DIR --input FILE --out FILE [--steps N] [--mode transient|steady]
[--refine none|corrector|student] [--ttc PRESET] [--x-query X1,X2,...|FILE.npy] [--nx-out M] [--nu NU]
[--frame K] [--data PATH...] [--debug]``

Runs a trained model (the final stage's best EMA weights of DIR) from initial states read from FILE and writes the
predicted trajectories in PDEBench's layout.

Input: a PDEBench-layout HDF5 file (``tensor`` (N, T, X), ``x-coordinate``, attribute ``Nu``) on the training grid
or on the raw grid it was reduced from (the run's ``reduced_resolution``; time likewise), or a ``.npy`` array
(N, X), (N, T, X) or (N, T, X, 1) on the training grid (``--nu`` gives ν, default: the training data's single ν).
The model reads its ``context_frames`` frames ending at frame ``--frame`` (default: the first frame at which the
context is complete).

Output: HDF5 ``tensor`` (N, 1 + steps, Q) — frame 0 is the given state (on the grid: the input itself; at query
points: the decoder's reconstruction of it), then the prediction every Δt of the run — with ``x-coordinate`` (the Q
output points), ``t-coordinate`` (one more value than frames, as PDEBench writes it) and attribute ``Nu``. The
output is readable as input again. ``--mode steady``: the steady prior's state at its trained horizon, (N, 2, Q).
``--ttc PRESET``: test-time compute (inference/ttc.py); its log goes to ``OUT.ttc.json``.

Super-resolution: the decoder reads any point, so ``--nx-out M`` (M cell centres over the domain) or ``--x-query``
can ask for a finer grid than training's; docs/benchmarks.md measures that error against the 1024-cell data.

2-D runs (``data.dims = 2``, e.g. configs/ns2d.py): input a 2-D file (the 2-D PDEBench layout or the FNO ``.mat``;
on the training grid or one it was reduced from) or a ``.npy`` (N, X, Y), (N, T, X, Y) or (N, T, X, Y, 1); output
``tensor`` (N, 1 + steps, X, Y) with ``x-coordinate``, ``y-coordinate`` and ``t-coordinate`` (the T frame times),
readable as input again. ``--nx-out M``: the M x M grid of points ``x_min + i L / M`` (the 2-D data's points,
e.g. twice the training grid), same layout. ``--x-query``: scattered points, a ``.npy`` (Q, 2) or ``x1,y1,x2,y2,...``
in domain units; output ``tensor`` (N, 1 + steps, Q) with ``query-points`` (Q, 2) (not readable as input).

Bad input (a wrong grid or channel count, an unknown preset, a budget below the candidate count, a stage that is
not trained, an existing --out or OUT.ttc.json) is a one-line error with exit code 2 (--debug for the traceback);
nothing is written. Exit codes: 0 done; 2 bad input; 1 a bug. Status lines go to stderr, nothing to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ups_jax.cli import ArgumentParser
from ups_jax.errors import CheckpointError, ConfigError, DataError, run_cli
from ups_jax.files import write_json_atomic
from ups_jax.inference.inputs import output_points, output_points_2d, read_input, read_input_2d

log = logging.getLogger(__name__)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m ups_jax.infer", description=__doc__)
    p.add_argument("--workdir", required=True, help="trained run directory")
    p.add_argument("--input", required=True, help="initial states: PDEBench HDF5 or .npy")
    p.add_argument("--out", required=True, help="output HDF5 (PDEBench layout); must not exist")
    p.add_argument("--steps", type=int, help="rollout steps (transient; required there)")
    p.add_argument("--mode", choices=("transient", "steady"), default="transient")
    p.add_argument("--refine", choices=("none", "corrector", "student"), default=None,
                   help="predictor–corrector refinement (transient; default: the run's eval.refine, the rollout its "
                        "evaluation scored, when that stage is trained); with --ttc: the candidate sampler")
    p.add_argument("--ttc", metavar="PRESET", help="test-time compute preset of the run's ttc.presets")
    p.add_argument("--x-query", help="output points: comma-separated x values or a .npy file (domain units)")
    p.add_argument("--nx-out", type=int, help="output on M cell centres over the domain (super-resolution)")
    p.add_argument("--nu", type=float, help="viscosity for .npy input (default: the training data's ν)")
    p.add_argument("--frame", type=int, help="the last given frame of the input (default: context_frames − 1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the corrector/student/TTC")
    p.add_argument("--data", nargs="+", help="the run's training data files (default: the paths it recorded); "
                                            "needed when a run was copied from another machine")
    return p


# ---------------------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------------------

def write_pdebench(out: Path, tensor: np.ndarray, x: np.ndarray, t0: float, dt: float, nu: np.ndarray,
                   attrs: dict, *, y: np.ndarray | None = None, datasets: dict | None = None) -> None:
    """PDEBench layout, written to a temporary file and renamed into place (never over an existing file).
    2-D (``y`` or ``datasets`` given): ``y-coordinate`` / the extra datasets, and the T frame times (as the ns2d
    generator writes them) instead of 1-D PDEBench's T + 1."""
    two_d = y is not None or bool(datasets)
    import h5py

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("tensor", data=tensor.astype(np.float32))
            f.create_dataset("x-coordinate", data=np.asarray(x, np.float32))
            if y is not None:
                f.create_dataset("y-coordinate", data=np.asarray(y, np.float32))
            for name, value in (datasets or {}).items():
                f.create_dataset(name, data=value)
            # PDEBench writes one more time value than frames in 1-D; readers take times from the frame index
            nt = tensor.shape[1] + (0 if two_d else 1)
            f.create_dataset("t-coordinate", data=(t0 + np.arange(nt) * dt).astype(np.float32))
            f.attrs["Nu"] = float(nu[0])
            if not np.all(nu == nu[0]):
                f.create_dataset("nu", data=nu.astype(np.float32))
            f.attrs.update({k: v for k, v in attrs.items() if v is not None})
        os.link(tmp, out)   # atomic; fails if out appeared meanwhile
    except FileExistsError as e:
        raise DataError(f"{out}: already exists; choose another --out") from e
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------

def _require_stage(workdir, name: str, cfg) -> None:
    from ups_jax.training.stages import stage_finished

    if name not in cfg.stage_order or not stage_finished(workdir, name):
        raise CheckpointError(f"{workdir}: the {name} stage is not trained (no finished checkpoint in "
                              f"checkpoints/{name}); train it: python -m ups_jax.train --config ... --workdir "
                              f"{workdir} --stages {name}")


def _run_refiner(workdir, cfg, model, *, off_grid: bool) -> str:
    """The default --refine: the run's ``eval.refine`` when that stage is finished, so that infer predicts what the
    run's evaluation scored; 'none' off the grid with the field corrector (grid-only), said in the log."""
    from ups_jax.models.field_corrector import is_field
    from ups_jax.training.pipeline import eval_refiner
    from ups_jax.training.stages import stage_finished

    refine = eval_refiner(cfg, {n for n in cfg.stage_order if stage_finished(workdir, n)}, use="used")
    if refine != "none" and off_grid and is_field(model, refine):
        log.info(f"--x-query/--nx-out: the field corrector (the run's eval.refine={refine!r}) predicts on the "
                 f"training grid only; the operator alone is used (pass --refine none to say so)")
        return "none"
    if refine != "none":
        log.info(f"--refine {refine}: the run's eval.refine (pass --refine none for the operator alone)")
    return refine


def main(argv) -> int:
    args = _parser().parse_args(list(argv))
    out, inp, workdir = Path(args.out), Path(args.input), Path(args.workdir)
    for path in (out, Path(str(out) + ".ttc.json") if args.ttc else None):
        if path is not None and path.exists():
            raise DataError(f"{path}: already exists; choose another --out (nothing was overwritten)")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: output directory does not exist")
    if args.mode == "transient" and (args.steps is None or args.steps < 1):
        raise ConfigError("--steps N (>= 1) is required in transient mode")
    explicit_refine = args.refine is not None
    args.refine = args.refine or "none"
    if args.mode == "steady" and (args.ttc or args.refine != "none" or args.x_query or args.nx_out):
        raise ConfigError("--ttc / --refine / --x-query / --nx-out apply to transient rollouts, not --mode steady")

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.recorded_data import check_recorded_data
    from ups_jax.training.restore import load_run

    if not args.data:
        check_recorded_data(workdir)
    cfg, data, model, stage, step = load_run(workdir, args.data)
    from ups_jax.compilation import enable_cache_from_config

    enable_cache_from_config(cfg)
    meta = json.loads((workdir / "run_meta.json").read_text())       # load_run has checked it
    dt, x_min, x_max = float(meta["dt"]), float(meta["x_min"]), float(meta["x_max"])
    train_nus = [f["nu"] for f in meta["fingerprint"].get("files", [])]
    # every check before any compute: the stage each mode needs, the preset, the points
    plan = None
    if args.mode == "steady":
        _require_stage(workdir, "steady", cfg)
    elif args.ttc:
        from ups_jax.inference.ttc import plan_for_model, ttc_refiner

        refine = args.refine if args.refine != "none" else ttc_refiner(cfg)
        _require_stage(workdir, refine, cfg)
        plan = plan_for_model(cfg.ttc, args.ttc, model, refine)
    elif args.refine != "none":
        _require_stage(workdir, args.refine, cfg)
    elif not explicit_refine and args.mode == "transient":
        args.refine = _run_refiner(workdir, cfg, model, off_grid=bool(args.x_query or args.nx_out))
    if (args.x_query or args.nx_out) and not hasattr(model, "decode"):
        raise ConfigError(f"{workdir}: --x-query / --nx-out need a UPS run (its decoder reads any point); this "
                          f"model predicts on its training grid only")
    two_d = data.dims == 2
    if two_d:   # output points (Q, 2) physical, the output's spatial shape, the points in model coordinates
        xq, out_shape, xq01 = output_points_2d(args, x_min=x_min, x_max=x_max, grid=data.grid) or (None, None, None)
        frames, nu, in_dt = read_input_2d(inp, grid_x=np.asarray(data.x, np.float64),
                                          grid_y=np.asarray(data.y, np.float64), dt=dt, nu_arg=args.nu,
                                          train_nus=train_nus)
    else:
        xq = output_points(args, grid_x=data.x, x_min=x_min, x_max=x_max)
        xq01 = None if xq is None else ((xq - x_min) / (x_max - x_min)) % 1.0
        out_shape = None if xq is None else (len(xq),)
        frames, nu, in_dt = read_input(inp, grid_x=np.asarray(data.x, np.float64), dt=dt, nu_arg=args.nu,
                                       train_nus=train_nus)
    from ups_jax.models.field_corrector import GRID_ONLY, is_field

    if xq is not None and (plan is not None and plan.kind == "field" or is_field(model, args.refine)):
        raise ConfigError(GRID_ONLY)
    h = int(model.context_frames)
    k = h - 1 if args.frame is None else int(args.frame)
    if not h - 1 <= k < frames.shape[1]:
        raise ConfigError(f"--frame={k}: the model reads {h} frame(s) ending there; the input has "
                          f"{frames.shape[1]} frame(s) (use {h - 1}..{frames.shape[1] - 1})")
    ctx = frames[:, k - h + 1:k + 1]
    out_x = data.x if xq is None else xq
    bs = min(int(cfg.eval.batch_size), len(ctx))
    mean, std = float(data.norm["mean"]), float(data.norm["std"])
    if xq is None:
        first = ctx[:, -1]
    else:   # the given state at the query points: the codec's reconstruction of it
        graphdef, state = nnx.split(model)
        recon = jax.jit(lambda s, u, x, q: nnx.merge(graphdef, s).decode(
            nnx.merge(graphdef, s).encode_frames(u, x), q)[..., 0])
        first = np.concatenate([np.asarray(recon(state, jnp.asarray((ctx[i:i + bs] - mean) / std, jnp.float32),
                                                 jnp.asarray(data.x01), jnp.asarray(xq01, jnp.float32)))
                                for i in range(0, len(ctx), bs)]) * std + mean
        first = first.reshape(len(ctx), *out_shape)
    attrs = {"generator": "ups_jax.infer", "workdir": str(workdir.absolute()), "stage": stage, "step": int(step),
             "mode": args.mode, "refine": args.refine, "ttc": args.ttc or "", "context_frames": h,
             "input": str(inp), "input_frame": k, "frame0": "given" if xq is None else "decoded reconstruction"}
    t0 = k * in_dt
    if args.mode == "steady":
        from ups_jax.training.stages import steady_predictor

        horizon_steps = (data.dataset.nt - h) if args.steps is None else int(args.steps)
        predict = steady_predictor(model, data, bs)
        pred = predict(model, ctx, nu, horizon_steps * dt)[:, None]
        attrs["horizon"] = horizon_steps * dt
        write_pdebench(out, np.concatenate([first[:, None], pred], 1), out_x, t0, horizon_steps * dt, nu, attrs)
        log.info(f"wrote {out}: {len(ctx)} steady state(s) at t = {t0 + horizon_steps * dt:g}")
        return 0
    if plan is not None:
        from ups_jax.inference.ttc import TTCRollout

        roll = TTCRollout(model, norm=data.norm, x01=data.x01, batch_size=bs, plan=plan,
                          weights=dict(cfg.ttc.weights), seed=args.seed, out_x01=xq01)
        log.info(plan.describe())
    else:
        roll = Rollout(model, norm=data.norm, x01=data.x01, batch_size=bs, mode="latent", refine=args.refine,
                       seed=args.seed, out_x01=xq01)
    pred = roll(ctx, nu, dt, int(args.steps))
    if out_shape is not None:
        pred = pred.reshape(pred.shape[:2] + tuple(out_shape))
    where = {}
    if two_d and xq is None:                        # the training grid
        out_x, where = data.x, {"y": data.y}
    elif two_d and len(out_shape) == 2:             # the --nx-out M x M grid
        axis = xq.reshape(*out_shape, 2)[:, 0, 0]
        out_x, where = axis, {"y": axis}
    elif two_d:                                     # scattered points
        out_x, where = xq[:, 0], {"datasets": {"query-points": xq.astype(np.float32)}}
        where["y"] = xq[:, 1]
    write_pdebench(out, np.concatenate([first[:, None], pred], 1), out_x, t0, dt, nu, attrs, **where)
    if plan is not None:
        ttc_log = {"summary": roll.summary(),   # per batch: evaluations per step; chosen reward (trajectory, step)
                   "evaluations_per_step": [np.asarray(b["evaluations"]).tolist() for b in roll.logs],
                   "chosen_reward": np.concatenate([np.asarray(b["chosen_reward"]) for b in roll.logs]).tolist()}
        write_json_atomic(str(out) + ".ttc.json", ttc_log)
    log.info(f"wrote {out}: {len(ctx)} trajectories × {args.steps} steps on "
             f"{'x'.join(map(str, pred.shape[2:]))} points")
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
