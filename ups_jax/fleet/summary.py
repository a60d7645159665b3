"""The fleet's table: one row per trial (changed config keys, best validation metric, steps, status, retries,
device-hours, cost) and the totals. Read from the sweep's storage with ``tune.ExperimentAnalysis``, so the same
table comes out of a finished, an interrupted or a running sweep, from any machine that can read the storage.

Per trial: device-hours = Tune's ``time_total_s`` of the trial (accumulated over restarts; excludes scheduling
and start-up, and work lost between a trial's last checkpoint and a failure) x the GPUs per trial, or x the CPUs
for CPU-only trials; its cost = its GPU-hours x the per-GPU price (its share, for comparing trials). The total is
what the cloud bills for the workers: whole nodes while any trial holds them, priced by the GPU type Ray detected
on each node (``fleet.cost``; the experiment's ``accelerator`` where Ray reports none), plus the sweep's
wall-clock span (the head's time) listed unpriced.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ups_jax.errors import UserError
from ups_jax.fleet import storage


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def read_trials(experiment_path: str, metric: str, mode: str) -> list[dict[str, Any]]:
    """One dict per trial: id, status, failures, config, best metric and its step, last global step, time."""
    analysis = open_analysis(experiment_path, metric, mode)
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        df = frames.get(trial.trial_id)
        best, best_step = None, None
        if df is not None and metric in df and "global_step" in df:
            vals = df[[metric, "global_step"]].dropna()
            if len(vals):
                i = vals[metric].idxmin() if mode == "min" else vals[metric].idxmax()
                best, best_step = float(vals[metric][i]), int(vals["global_step"][i])
        last = trial.last_result or {}
        rows.append({"trial_id": trial.trial_id, "status": trial.status, "failures": int(trial.num_failures),
                     "config": {k: _jsonable(v) for k, v in (trial.config or {}).items()},
                     "best": best, "best_step": best_step, "global_step": last.get("global_step"),
                     "time_total_s": float(last.get("time_total_s", 0.0) or 0.0),
                     "hostname": last.get("hostname"), "error": _error(trial),
                     "git_commit": last.get("worker/git_commit"), "image": last.get("worker/image")})
    return sorted(rows, key=lambda r: r["trial_id"])


def open_analysis(experiment_path: str, metric: str, mode: str):
    from ray.tune import ExperimentAnalysis

    if not storage.exists(experiment_path):
        raise UserError(f"{experiment_path}: no sweep there (the experiment directory is <storage>/<name>; "
                        f"see the path the sweep printed)")
    try:
        return ExperimentAnalysis(experiment_path, default_metric=metric, default_mode=mode)
    except (ValueError, OSError, RuntimeError) as e:
        raise UserError(f"{experiment_path}: cannot read the sweep's state ({storage.first_line(e)}); is this the "
                        f"directory of a Tune experiment?") from None


def _error(trial) -> str | None:
    if trial.status != "ERROR":
        return None
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file may be missing on the storage: the status alone still says ERROR
        text = ""
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "failed (no error text)"


def _jsonable(v):
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v)


def load(experiment_path: str) -> dict:
    """The table of the sweep at ``experiment_path``, from its storage alone (``fleet_experiment.json`` + Tune's
    trial results): works for a running, interrupted or finished sweep, from any machine."""
    described = storage.read_json(storage.join(experiment_path, "fleet_experiment.json"),
                                  what="the sweep's experiment record")
    if described is None:
        raise UserError(f"{experiment_path}: no fleet_experiment.json; not a sweep started by ups_jax.fleet.sweep "
                        f"(the experiment directory is <storage>/<name>)")
    t = described["table"]
    rows = read_trials(experiment_path, described["metric"], described["mode"])
    nodes = None
    if t["gpus"] > 0 and "prices" in t:
        from ups_jax.fleet import cost

        frames = open_analysis(experiment_path, described["metric"], described["mode"]).trial_dataframes
        reports = {tid: df.to_dict("records") for tid, df in frames.items() if df is not None}
        nodes = cost.node_table(reports, t["prices"], t["accelerator"])
    return summarize(rows, metric=described["metric"], total_steps=t["total_steps"], gpus=t["gpus"], cpus=t["cpus"],
                     accelerator=t["accelerator"], price_per_hour=t["price_per_hour"], nodes=nodes)


def summarize(rows: list[dict], *, metric: str, total_steps: int, gpus: float, cpus: float,
              accelerator: str | None, price_per_hour: float | None, nodes: dict | None = None) -> dict:
    """Adds per-trial device-hours, cost and a readable status; computes the totals."""
    device = "GPU" if gpus > 0 else "CPU"
    per_trial = gpus if gpus > 0 else cpus
    price = float(price_per_hour) if (price_per_hour is not None and gpus > 0) else None
    out = []
    for r in rows:
        hours = r["time_total_s"] / 3600.0 * per_trial
        status = {"TERMINATED": "done" if (r["global_step"] or 0) >= total_steps else "stopped early",
                  "ERROR": "error"}.get(r["status"], r["status"].lower())
        out.append({**r, "state": status, "device_hours": hours, "cost": None if price is None else hours * price})
    totals = {"trials": len(out), "device_hours": sum(r["device_hours"] for r in out),
              "cost": None if price is None else sum(r["cost"] for r in out),
              "by_state": {s: sum(r["state"] == s for r in out) for s in sorted({r["state"] for r in out})},
              "retries": sum(r["failures"] for r in out)}
    if nodes is not None:          # what the cloud bills: whole worker nodes while busy (fleet.cost)
        totals.update(trial_cost=totals["cost"], cost=nodes["cost"], node_hours=sum(
            n["busy_hours"] for n in nodes["nodes"].values()), wall_hours=nodes["wall_hours"])
    return {"metric": metric, "device": device, "accelerator": accelerator, "price_per_hour": price,
            "total_steps": total_steps, "trials": out, "totals": totals, "nodes": nodes}


def format_table(summary: dict) -> str:
    metric, device = summary["metric"], summary["device"]
    acc = f" ({summary['accelerator']})" if summary["accelerator"] and device == "GPU" else ""
    head = ["trial", "changed keys", f"best {metric}", "at step", "steps", "status", "retries",
            f"{device}-h{acc}", "cost $"]
    lines = []
    for r in summary["trials"]:
        changes = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["config"].items())) or "-"
        lines.append([r["trial_id"], changes, _num(r["best"]), _num(r["best_step"]), _num(r["global_step"]),
                      r["state"] + (f": {r['error']}" if r["error"] else ""), str(r["failures"]),
                      f"{r['device_hours']:.4f}", _num(r["cost"], ".4f")])
    t = summary["totals"]
    states = ", ".join(f"{n} {s}" for s, n in t["by_state"].items())
    lines.append(["total", f"{t['trials']} trials", "", "", "", states, str(t["retries"]), f"{t['device_hours']:.4f}",
                  _num(t["cost"], ".4f")])
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(head)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    out = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt.format(*row) for row in lines]
    nodes = summary.get("nodes")
    if nodes:
        for node, n in sorted(nodes["nodes"].items()):
            price = f"${n['price_per_hour']:.2f}/h" if n["price_per_hour"] is not None else "no price"
            out.append(f"node {node[:12]}: {n['gpus']:g} x {n['accelerator'] or 'unknown GPU'} ({price}), busy "
                       f"{n['busy_hours']:.4f} h, cost {_num(n['cost'], '.4f')} "
                       f"(billed whole while any trial holds it)")
        out.append(f"head and idle time: not in the reports; the sweep spanned {nodes['wall_hours']:.4f} h of "
                   f"wall-clock (price the head and any idle workers for that long)")
    return "\n".join(out)


def best_trial_id(experiment_path: str, metric: str, mode: str) -> str | None:
    """The finished trial with the best ``metric`` over its history (Ray's ``ResultGrid.get_best_result`` with
    ``scope='all'``, NaN and inf ignored); None if no finished trial has a finite value."""
    from ray.tune import ResultGrid

    analysis = open_analysis(experiment_path, metric, mode)
    # finished trials only (ResultGrid returns a lone trial without looking at its metric: filtered here too)
    analysis.trials = [t for t in analysis.trials if t.status == "TERMINATED"
                       and _finite(t.metric_analysis.get(metric, {}).get(mode))]
    if not analysis.trials:
        return None
    best = ResultGrid(analysis).get_best_result(metric, mode, scope="all", filter_nan_and_inf=True)
    return best.metrics["trial_id"]


def save(summary: dict, experiment_path: str) -> tuple[str, str]:
    md_path = storage.join(experiment_path, "fleet_summary.md")
    json_path = storage.join(experiment_path, "fleet_summary.json")
    storage.write_text(md_path, format_table(summary) + "\n")
    storage.write_text(json_path, json.dumps(summary, indent=1, default=str))
    return md_path, json_path


def _num(x, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:{fmt}}" if isinstance(x, float) else str(x)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
