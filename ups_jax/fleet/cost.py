"""What a sweep costs: node-hours, as the cloud bills them, from the trials' reports.

Each trial reports the node it runs on (``node_id``), that node's GPU type (Ray's ``accelerator_type:<type>``
resource, e.g. ``A10G``, ``A100``; ``cfg.cost.price_per_hour`` prices one GPU of a type) and its GPU count. A
node is billed whole while any trial holds any part of it: its busy time is the union of the intervals of the
trials that ran on it (a trial's interval on a node: from its start there to its last report), priced at
GPUs x the per-GPU price of its type. Per trial the table keeps its own share (time x its GPUs x price) for
comparing trials; the totals add the whole nodes. The head and the time nodes sat idle between trials are not
in the reports: the table lists the sweep's wall-clock span (the head runs all of it) so they can be priced
by hand.
"""

from __future__ import annotations

import math
from typing import Iterable

from ray.tune import Stopper   # this module is imported only where Ray is (fleet.summary / sweep / trainable)


def node_resources() -> dict:
    """In a trial: its node, that node's GPU type (None when Ray did not detect one) and GPU count."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    resources = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
    accelerator = next((k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), None)
    return {"node_id": node_id, "accelerator_type": accelerator, "node_gpus": float(resources.get("GPU", 0))}


def intervals(results: Iterable[dict]) -> list[tuple[str, float, float]]:
    """(node_id, start, end) of each stretch a trial ran in one process, from its reports in order (Tune's
    ``timestamp`` and ``time_this_iter_s``: the first report of a process covers the time since it started)."""
    out: list[list] = []
    last_pid = None
    for r in results:
        pid, node, end = r.get("pid"), r.get("worker/node_id"), float(r.get("timestamp") or 0)
        if not node or not end:
            continue
        if pid != last_pid or not out or out[-1][0] != node:
            out.append([node, end - float(r.get("time_this_iter_s") or 0.0), end])
            last_pid = pid
        out[-1][2] = end
    return [tuple(i) for i in out]


def union_hours(spans: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total / 3600.0


def node_table(trials: dict[str, list[dict]], prices: dict, fallback_accelerator: str | None) -> dict:
    """Per node: GPU type, GPUs, busy hours (union over its trials), $/h for the whole node and cost; plus the
    sweep's wall-clock span. ``trials``: trial id -> its reports in order."""
    nodes: dict[str, dict] = {}
    first, last = math.inf, -math.inf
    for results in trials.values():
        for r in results:
            node = r.get("worker/node_id")
            if node and node not in nodes:
                nodes[node] = {"accelerator": r.get("worker/accelerator_type") or fallback_accelerator,
                               "gpus": float(r.get("worker/node_gpus") or 0), "spans": []}
        for node, start, end in intervals(results):
            nodes[node]["spans"].append((start, end))
            first, last = min(first, start), max(last, end)
    out = {}
    for node, n in nodes.items():
        price = prices.get(n["accelerator"]) if n["accelerator"] else None
        per_hour = None if price is None or n["gpus"] <= 0 else float(price) * n["gpus"]
        hours = union_hours(n["spans"])
        out[node] = {"accelerator": n["accelerator"], "gpus": n["gpus"], "busy_hours": hours,
                     "price_per_hour": per_hour, "cost": None if per_hour is None else hours * per_hour}
    known = [n["cost"] for n in out.values() if n["cost"] is not None]
    return {"nodes": out, "cost": sum(known) if known else None,
            "unpriced_nodes": sorted(k for k, n in out.items() if n["cost"] is None and n["gpus"] > 0),
            "wall_hours": max(0.0, last - first) / 3600.0 if last > first else 0.0}


class BudgetStopper(Stopper):
    """A Tune ``Stopper`` that stops the whole sweep once the node cost of the reports so far reaches
    ``budget_usd`` (checked after every report; the trials end at their next report, their checkpoints kept).
    Tune saves it with the sweep's run config (module-level class: picklable); ``Tuner.restore`` restores that one,
    so a ``--resume`` cannot install a new cap (``fleet.sweep`` refuses a budget already spent instead)."""

    def __init__(self, budget_usd: float, prices: dict, fallback_accelerator: str | None, spent_before: float = 0.0):
        self.budget, self.prices, self.fallback = float(budget_usd), dict(prices), fallback_accelerator
        self.spent_before = float(spent_before)
        self.results: dict[str, list[dict]] = {}
        self.reached = False

    def spent(self) -> float:
        return self.spent_before + (node_table(self.results, self.prices, self.fallback)["cost"] or 0.0)

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.results.setdefault(trial_id, []).append(
            {k: result.get(k) for k in ("pid", "timestamp", "time_this_iter_s", "worker/node_id",
                                        "worker/accelerator_type", "worker/node_gpus")})
        self.reached = self.reached or self.spent() >= self.budget
        return self.reached

    def stop_all(self) -> bool:
        return self.reached
