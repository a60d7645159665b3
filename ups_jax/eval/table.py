"""The comparison table the training run ends with: operator alone, + corrector, + student, + TTC, the FNO
baseline and persistence, on the same test trajectories, each through the same ``evaluate`` (so every metric is
exactly the evaluation's: 31-step PDEBench protocol and the full horizon, fRMSE bands, correlation time), plus the
wall time per trajectory of each row's rollouts (compilation excluded: each row first runs one batch of each
rollout length untimed). Written to ``WORKDIR/eval/table.json`` and ``table.md``; printed.

A second, smaller table compares the steady prior's long-time state with the final frame of the operator's rollout
from t = 0 and with persistence (the initial state), per-trajectory nRMSE of the final frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ups_jax.eval.evaluate import evaluate
from ups_jax.files import write_json_atomic, write_text_atomic

ROW_KEYS = ("nrmse", "rmse", "rel_l2", "frmse_low", "frmse_mid", "frmse_high", "max_error", "corr_time")


class TimedRollout:
    """Wraps a rollout callable; ``seconds`` accumulates the wall time of its calls (numpy out ⇒ synchronised)."""

    def __init__(self, rollout):
        self.rollout, self.seconds, self.trajectories = rollout, 0.0, 0
        self.context_frames = getattr(rollout, "context_frames", 1)

    def __call__(self, given, nu, dt, steps, *, first_index: int = 0):
        t0 = time.perf_counter()
        out = self.rollout(given, nu, dt, steps, first_index=first_index)
        self.seconds += time.perf_counter() - t0
        self.trajectories += len(out)
        return out


def _block(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ROW_KEYS}


def evaluate_row(name: str, rollout, traj, nu, *, dt: float, Lx: float, eval_cfg, evaluations_per_step=None,
                 extra: dict | None = None) -> tuple[dict, dict]:
    """One table row: warm-up (compile) on the first batch for both rollout lengths, then the timed evaluation.
    Returns (row, the evaluation's full results dict)."""
    h = int(getattr(rollout, "context_frames", 1))
    start = eval_cfg.initial_step - 1
    b = min(int(eval_cfg.batch_size), len(traj))
    for s0 in (start, h - 1):                               # the two rollouts evaluate() makes
        rollout(traj[:b, :s0 + 1], nu[:b], dt, traj.shape[1] - s0 - 1)
    timed = TimedRollout(rollout)
    results, _ = evaluate(timed, traj, nu, dt=dt, domain_length=Lx, initial_step=eval_cfg.initial_step,
                          batch_size=eval_cfg.batch_size, corr_threshold=eval_cfg.corr_threshold)
    n = results["n_trajectories"]
    row = {"row": name, "protocol": _block(results["model"]), "full_horizon": _block(results["full_horizon"]["model"]),
           "full_horizon_start_frame": results["full_horizon"]["start_frame"],
           "wall_s_per_trajectory": timed.seconds / n, "evaluations_per_step": evaluations_per_step}
    row.update(extra or {})
    return row, results


def persistence_row(results: dict) -> dict:
    return {"row": "persistence", "protocol": _block(results["persistence"]),
            "full_horizon": _block(results["full_horizon"]["persistence"]),
            "full_horizon_start_frame": results["full_horizon"]["start_frame"], "wall_s_per_trajectory": 0.0,
            "evaluations_per_step": 0}


def _fmt(v, spec=".4f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return format(v, spec)


def markdown(table: dict) -> str:
    p = table["protocol"]
    lines = [f"Test split, {table['n_trajectories']} trajectories; protocol: {p['initial_step']} given frames, "
             f"{p['steps']} predicted (Δt = {p['dt']:g}); full horizon from the first frame each model has its "
             f"context for (start frame in the last column). Wall time: rollouts of both protocols, per trajectory, "
             f"compilation excluded.", "",
             "| row | nRMSE | nRMSE full | rel-L2 | fRMSE low / mid / high | corr. time (steps) | max err | "
             "s / traj | evals / step | full from |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        a, f = r["protocol"], r["full_horizon"]
        lines.append(f"| {r['row']} | {_fmt(a['nrmse'])} | {_fmt(f['nrmse'])} | {_fmt(a['rel_l2'])} | "
                     f"{_fmt(a['frmse_low'])} / {_fmt(a['frmse_mid'])} / {_fmt(a['frmse_high'])} | "
                     f"{_fmt(a['corr_time'], 'g')} | {_fmt(a['max_error'], '.3f')} | "
                     f"{_fmt(r['wall_s_per_trajectory'], '.4f')} | {_fmt(r['evaluations_per_step'], 'd')} | "
                     f"{r['full_horizon_start_frame']} |")
    for note in table.get("notes", []):
        lines.append(f"\n{note}")
    s = table.get("steady")
    if s:
        lines += ["", f"Final state at t = {s['horizon']:g} from the first {s['context_frames']} frame(s) "
                      f"(nRMSE of the final frame, mean over {s['n_trajectories']} test trajectories):", "",
                  "| predictor | final-frame nRMSE | s / traj |", "|---|---|---|"]
        for r in s["rows"]:
            lines.append(f"| {r['row']} | {_fmt(r['final_nrmse'])} | {_fmt(r['wall_s_per_trajectory'], '.4f')} |")
    return "\n".join(lines) + "\n"


def write_table(table: dict, outdir) -> tuple[Path, Path]:
    outdir = Path(outdir)
    return (write_json_atomic(outdir / "table.json", table, indent=1, default=float),
            write_text_atomic(outdir / "table.md", markdown(table)))
