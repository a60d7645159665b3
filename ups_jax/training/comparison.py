"""Builds the end-of-run comparison (eval/table.py) from whatever the run has trained.

Rows, all on the same test trajectories: ``operator`` (the latent rollout alone), ``+corrector`` (predictor–corrector,
K+1 refiner calls per step), ``+student`` (S calls), ``+TTC(<preset>)`` (beam search over refiner samples, within its
budget), the baseline run's row (cfg.baseline: ``FNO`` or the hybrid, its ``baseline_row``) and ``persistence``. A row whose stage is not finished is left out
with a note saying why. Stochastic rows use ``cfg.seed`` for their noise, so the table is reproducible.

It sits in ``training`` (with the pipeline that calls it), above ``eval`` and ``inference``: it uses both, and the
steady prior's predictor from ``training.stages``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ups_jax.checks import baseline_spec
from ups_jax.eval.metrics import per_sample_nrmse
from ups_jax.eval.rollout import Rollout
from ups_jax.eval.table import evaluate_row, persistence_row, write_table

log = logging.getLogger(__name__)


def run_comparison(model, cfg, data, workdir, done: set, baseline=None, split: str | None = None) -> dict:
    """``done``: stages finished in this workdir; ``baseline``: (model, norm) of the trained baseline or None."""
    split = split or cfg.eval.split
    traj, nu = data.trajectories(split, cfg.eval.max_trajectories)
    dt, ev = float(data.dataset.dt), cfg.eval
    bs = min(int(ev.batch_size), len(traj))

    def rollout(m, norm=None, **kw):
        return Rollout(m, norm=norm or data.norm, x01=data.x01, batch_size=bs, mode=ev.rollout_mode, seed=cfg.seed,
                       **kw)

    def row(name, r, evals, **extra):
        out, res = evaluate_row(name, r, traj, nu, dt=dt, Lx=data.Lx, eval_cfg=ev, evaluations_per_step=evals,
                                extra=extra)
        steps = res["protocol"]["steps"]                 # the protocol's predicted frames (31 for PDEBench Burgers)
        log.info(f"[table] {name}: nRMSE {out['protocol']['nrmse']:.4f} ({steps}-step), "
                 f"{out['full_horizon']['nrmse']:.4f} (full); {out['wall_s_per_trajectory']:.4f} s/trajectory")
        return out, res

    from ups_jax.models import model_kind

    rows, notes = [], []
    fno = model_kind(cfg) != "ups"          # a baseline's own run: its model is the first row
    op_row, op_res = row(model.baseline_row if fno else "operator", rollout(model), 1 if fno else 2)
    rows.append(op_row)
    for name in ("corrector", "student"):
        net = getattr(model, name, None)
        if name in done and net is not None:
            # operator + decoder + the refiner's calls (+ the encoder of the field corrector's state='encode')
            extra = int(getattr(net, "state_update", "") == "encode")
            rows.append(row(f"+{name}", rollout(model, refine=name), net.calls + 2 + extra)[0])
        elif name in cfg.stage_order:
            notes.append(f"+{name}: not evaluated (stage '{name}' is not finished in this workdir)")
    preset = str(ev.get("ttc_preset", "") or "")
    if preset:
        from ups_jax.inference.ttc import TTCRollout, plan_for_model, ttc_refiner

        refine = ttc_refiner(cfg)
        net = getattr(model, refine, None)
        if refine in done and net is not None:
            plan = plan_for_model(cfg.ttc, preset, model, refine)
            t = TTCRollout(model, norm=data.norm, x01=data.x01, batch_size=bs, plan=plan,
                           weights=dict(cfg.ttc.weights), seed=cfg.seed)
            r, _ = row(f"+TTC({preset})", t, plan.evaluations_per_step + 1)
            r["ttc"] = t.summary()
            rows.append(r)
        else:
            why = ("is not finished" if refine in cfg.stage_order else
                   f"is not in stage_order; add it with --config.stage_order=...,{refine}, or drop this row with "
                   f"--config.eval.ttc_preset=''")
            notes.append(f"+TTC({preset}): not evaluated (its refiner stage '{refine}' {why})")
    if fno:
        pass                                # this run is itself a baseline: no baseline of its own
    elif baseline is not None:
        b_model, b_norm = baseline
        rows.append(row(b_model.baseline_row, rollout(b_model, norm=b_norm), 1)[0])
    elif baseline_spec(cfg):                # named by its config: the baseline may be the FNO or the hybrid
        notes.append(f"baseline {baseline_spec(cfg)}: not evaluated (its run is not finished)")
    else:
        notes.append("baseline: not configured (set --config.baseline.config=configs/fno_burgers.py:cpu, or "
                     "configs/hybrid_burgers.py:cpu for the solver-in-the-loop hybrid)")
    rows.append(persistence_row(op_res))
    table = {"split": split, "n_trajectories": op_res["n_trajectories"], "protocol": op_res["protocol"],
             "rows": rows, "notes": notes, "seed": int(cfg.seed)}
    if "steady" in done and getattr(model, "steady", None) is not None:
        table["steady"] = steady_table(model, data, traj, nu, bs, rollout(model))
    write_table(table, Path(workdir) / "eval")
    return table


def steady_table(model, data, traj, nu, batch_size: int, op_rollout) -> dict:
    """Final-frame nRMSE: steady prior vs the operator's rollout from t = 0 vs persistence."""
    from ups_jax.training.stages import steady_predictor

    h = int(model.context_frames)
    dt = float(data.dataset.dt)
    steps = traj.shape[1] - h
    final = traj[:, -1]

    def nrmse(pred):
        return float(np.mean(per_sample_nrmse(pred, final)))

    predict = steady_predictor(model, data, batch_size)
    b = min(batch_size, len(traj))
    rows = []
    for name, fn in (("steady prior", lambda c, n: predict(model, c, n, steps * dt)),
                     ("operator rollout (final step)", lambda c, n: op_rollout(c, n, dt, steps)[:, -1])):
        fn(traj[:b, :h], nu[:b])                                          # compile
        t0 = time.perf_counter()
        pred = fn(traj[:, :h], nu)
        rows.append({"row": name, "final_nrmse": nrmse(pred),
                     "wall_s_per_trajectory": (time.perf_counter() - t0) / len(traj)})
    rows.append({"row": "persistence (initial state)", "final_nrmse": nrmse(traj[:, h - 1]),
                 "wall_s_per_trajectory": 0.0})
    return {"horizon": steps * dt, "context_frames": h, "n_trajectories": int(len(traj)), "rows": rows}
