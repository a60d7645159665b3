"""``python -m ups_jax.driver compare``: compares two or more run directories.

Usage::

    python -m ups_jax.driver compare RUN_DIR1 RUN_DIR2 [RUN_DIR ...] [--out compare.md] [--json] [--split test]

Prints a Markdown report on stdout (``--json``: a machine-readable summary instead) and writes it to ``--out``:

* configuration differences: the flattened config keys whose values differ, one column per run;
* metrics: per common stage the final train loss, best validation metric and mean steps/s; the evaluation split's
  model / persistence nRMSE, rel_l2, corr_time, improvement over persistence (and TTC nRMSE when present); the
  total wall time. The best value is bold (min for errors and time, max for corr_time, improvement and
  steps/s) and every run after the first shows its % change against the first run;
* insights: which config changes accompany the biggest metric change, the best run by test nRMSE, stage sets
  that differ, incomplete runs.

Fixes the original compare_runs.py (ups-original.md §10.2, §12 item 24): it reads what the run directories
contain instead of W&B summary keys that were never logged, diffs the whole config instead of a hand-picked
subset, guards the % change against a zero baseline and gives insights for any number of runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

from ups_jax.config import flatten
from ups_jax.driver import runlog
from ups_jax.cli import ArgumentParser
from ups_jax.files import write_text_atomic
from ups_jax.driver.formatting import _dur, _fmt, _jsonable
from ups_jax.driver.heuristics import DEFAULT_THRESHOLDS, analyze_eval, analyze_stage
from ups_jax.driver.runlog import Run
from ups_jax.errors import UserError

ABSENT = "(absent)"
MAX_KEYS_IN_INSIGHT = 8


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m ups_jax.driver compare", description="Compare two or more run directories.")
    p.add_argument("workdirs", nargs="*", metavar="RUN_DIR", help="run directories (at least two)")
    p.add_argument("--out", help="also write the Markdown report here")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary instead of Markdown")
    p.add_argument("--split", help="evaluation split to compare (default: the first run's eval.split, else test)")
    return p


def _labels(runs: list[Run]) -> list[str]:
    names = [r.name or str(r.workdir) for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.workdir) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def pct_change(value: float | None, base: float | None) -> float | None:
    """(value − base) / |base| · 100; None when either is missing or the base is zero (0 when both are zero)."""
    if value is None or base is None or not (math.isfinite(value) and math.isfinite(base)):
        return None
    if base == 0:
        return 0.0 if value == 0 else None
    return (value - base) / abs(base) * 100.0


def _row(name: str, values: list[float | None], better: str, partial: list[bool] | None = None) -> dict[str, Any]:
    """One metric row. ``partial[i]``: run i's value is not final (unfinished stage/run); such values are shown
    but never marked best."""
    vals = [float(v) if runlog._num(v) else None for v in values]
    partial = [bool(p) and v is not None for p, v in zip(partial or [False] * len(vals), vals)]
    present = [v for v, p in zip(vals, partial) if v is not None and not p]
    best: list[int] = []
    if len(present) >= 2:
        target = min(present) if better == "min" else max(present)
        best = [i for i, v in enumerate(vals) if v is not None and not partial[i] and v == target]
    return {"name": name, "values": vals, "better": better, "best": best, "partial": partial,
            "change_pct": [None] + [pct_change(v, vals[0]) for v in vals[1:]]}


def config_diff(runs: list[Run]) -> dict[str, list[Any]]:
    """Flattened config keys whose values differ between the runs that have a config.json."""
    flats = [flatten(r.config) if r.config else None for r in runs]
    have = [f for f in flats if f is not None]
    if len(have) < 2:
        return {}
    keys = sorted(set().union(*have))
    diff: dict[str, list[Any]] = {}
    for k in keys:
        vals = [f.get(k, ABSENT) if f is not None else None for f in flats]
        distinct = {json.dumps(v, sort_keys=True, default=str) for v, f in zip(vals, flats) if f is not None}
        if len(distinct) > 1:
            diff[k] = vals
    return diff


def compare(runs: list[Run], split: str | None = None) -> dict[str, Any]:
    labels = _labels(runs)
    th = dict(DEFAULT_THRESHOLDS)
    split = split or runs[0].eval_split
    stage_sets = [list(r.stages) for r in runs]
    common = [s for s in stage_sets[0] if all(s in ss for ss in stage_sets[1:])]
    only_in: dict[str, list[str]] = {}
    for label, ss in zip(labels, stage_sets):
        for s in ss:
            if s not in common:
                only_in.setdefault(s, []).append(label)

    stages = [{s: analyze_stage(r, s, th) for s in common} for r in runs]
    evals, predictors = [], []
    for r in runs:
        data = r.eval_result(split)
        evals.append(analyze_eval(data, th) if data is not None else None)
        # which rollout the headline nRMSE scored (eval.refine; evaluations from before it: the operator)
        predictors.append(data.get("predictor", "operator") if isinstance(data, dict) else None)

    rows: list[dict[str, Any]] = []
    for s in common:
        unfinished = [not st[s]["completed"] for st in stages]
        rows.append(_row(f"{s}: final train loss", [st[s]["loss"]["final"] if st[s]["loss"] else None
                                                     for st in stages], "min", unfinished))
        metric = next((st[s]["val"]["metric"] for st in stages if st[s]["val"] and st[s]["val"]["metric"]), None)
        if metric:
            rows.append(_row(f"{s}: best {metric}", [st[s]["val"]["value"] if st[s]["val"] else None
                                                       for st in stages], "min", unfinished))
        rows.append(_row(f"{s}: mean steps/s", [st[s]["speed"]["steps_per_sec_mean"] if st[s]["speed"] else None
                                                 for st in stages], "max"))

    def ev_metric(e, who, key):
        if e is None:
            return None
        if who == "improvement":
            return e.get("improvement_over_persistence")
        return e["metrics"].get(key, {}).get(who)

    for label, who, key, better in (("model nRMSE", "model", "nrmse", "min"),
                                     ("persistence nRMSE", "persistence", "nrmse", "min"),
                                     ("model rel_l2", "model", "rel_l2", "min"),
                                     ("model corr_time", "model", "corr_time", "max"),
                                     ("improvement over persistence", "improvement", None, "max"),
                                     ("TTC nRMSE", "ttc", "nrmse", "min")):
        vals = [ev_metric(e, who, key) for e in evals]
        if who == "ttc" and all(v is None for v in vals):
            continue
        rows.append(_row(f"{split}: {label}", vals, better))
    rows.append(_row("total wall time (s)", [r.wall_time()[0] for r in runs], "min",
                     [not r.wall_time()[1] for r in runs]))

    diff = config_diff(runs)
    result = {
        "runs": [{"label": lb, "workdir": str(r.workdir), "finished": r.finished, "complete": r.complete,
                  "stages": list(r.stages), "missing": list(r.missing), "has_config": bool(r.config),
                  "wall_s": r.wall_time()[0], "wall_exact": r.wall_time()[1]} for lb, r in zip(labels, runs)],
        "split": split, "common_stages": common, "only_in": only_in, "config_diff": diff, "metrics": rows,
        "predictors": predictors,
    }
    result["insights"] = insights(runs, labels, result, evals)
    return result


def _val(v: Any) -> str:
    if v is None:
        return "(no config.json)"
    if v == ABSENT:
        return ABSENT
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def _changes(diff: dict[str, list[Any]], i: int, j: int = 0) -> list[str]:
    out = []
    for k, vals in diff.items():
        a, b = vals[j], vals[i]
        if a is None or b is None:
            continue
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{k} {_val(a)} → {_val(b)}")
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}%"


def insights(runs: list[Run], labels: list[str], result: dict[str, Any], evals: list) -> list[str]:
    out: list[str] = []
    split = result["split"]
    if result["only_in"]:
        others = "; ".join(f"stage '{s}' only in {', '.join(lbs)}" for s, lbs in result["only_in"].items())
        out.append(f"The runs have different stage sets: compared the common stages "
                   f"({', '.join(result['common_stages']) or 'none'}); {others}.")
    old_evals = [labels[i] for i, e in enumerate(evals) if e is not None and e.get("metric_definition") == "batch_mean"]
    if old_evals and len(old_evals) < sum(e is not None for e in evals):
        out.append(f"The evaluation of {', '.join(old_evals)} predates per-trajectory headline metrics (equal-weight "
                   f"batch means, fRMSE scaled by the domain length): not comparable with the others; re-run "
                   f"python -m ups_jax.evaluate --workdir <run> for each.")
    scored = {p for p in result.get("predictors", []) if p is not None}
    if len(scored) > 1:
        out.append(f"The {split} model nRMSE scores different rollouts: " + ", ".join(
            f"{lb} {p}" for lb, p in zip(labels, result["predictors"]) if p is not None)
            + " (eval.refine); the operator alone of a refined run is in its eval/table.json.")
    nrmse_row = next(r for r in result["metrics"] if r["name"] == f"{split}: model nRMSE")
    present = [(v, i) for i, v in enumerate(nrmse_row["values"]) if v is not None]
    if present:
        v, i = min(present)
        vs = ""
        if i != 0 and nrmse_row["values"][0] is not None:
            vs = f", {_pct(nrmse_row['change_pct'][i])} vs {labels[0]} ({_fmt(nrmse_row['values'][0])})"
        out.append(f"Best run overall by {split} model nRMSE: {labels[i]} ({_fmt(v)}{vs}).")
    else:
        out.append(f"No run has a {split} evaluation; the best run cannot be chosen by test nRMSE.")
    # Which config changes accompany the biggest metric change (relative to the first run).
    biggest = None
    for row in result["metrics"]:
        if row["name"].startswith("total wall time") or row["name"].endswith("steps/s"):
            continue  # machine-dependent; not a model-quality change
        for i, c in enumerate(row["change_pct"]):
            if c is not None and i > 0 and (biggest is None or abs(c) > abs(biggest[0])):
                biggest = (c, i, row["name"])
    if biggest is not None:
        c, i, name = biggest
        ch = _changes(result["config_diff"], i)
        more = f" and {len(ch) - MAX_KEYS_IN_INSIGHT} more" if len(ch) > MAX_KEYS_IN_INSIGHT else ""
        acc = ("; accompanying config changes: " + "; ".join(ch[:MAX_KEYS_IN_INSIGHT]) + more) if ch else (
            "; the configs do not differ (seed noise or a code change)" if all(r.config for r in (runs[0], runs[i]))
            else "; config.json missing, changes unknown")
        row = next(r for r in result["metrics"] if r["name"] == name)
        caveat = " (not final: the stage or run did not finish)" if row["partial"][i] or row["partial"][0] else ""
        out.append(f"Biggest metric change: {name} {_pct(c)} in {labels[i]} vs {labels[0]}{caveat}{acc}.")
    for i in range(1, len(runs)):
        ch = _changes(result["config_diff"], i)
        if len(runs) > 2 or biggest is None or biggest[1] != i:
            out.append(f"{labels[i]} vs {labels[0]}: {len(ch)} config change(s)"
                       + (f" ({'; '.join(ch[:MAX_KEYS_IN_INSIGHT])}{' ...' if len(ch) > MAX_KEYS_IN_INSIGHT else ''})"
                          if ch else "") + ".")
    worse = [labels[i] for i, e in enumerate(evals) if e is not None and e["model_beats_persistence"] is False]
    if worse:
        out.append(f"Not better than persistence on {split}: {', '.join(worse)}.")
    incomplete = [labels[i] for i, r in enumerate(runs) if not r.complete]
    if incomplete:
        out.append(f"Incomplete run(s): {', '.join(incomplete)}; their numbers may not be final (see Notes).")
    return out


def render_markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    labels = [r["label"] for r in runs]
    L = [f"# Run comparison ({len(runs)} runs)", ""]
    L += ["| run | workdir | status | stages | wall time |", "|---|---|---|---|---|"]
    for r in runs:
        status = "finished" if r["complete"] else "finished, parts missing" if r["finished"] else "incomplete"
        wall = _dur(r["wall_s"]) + ("" if r["wall_exact"] else " (partial)" if r["wall_s"] is not None else "")
        L.append(f"| {r['label']} | `{r['workdir']}` | {status} | {', '.join(r['stages'])} | {wall} |")
    L.append("")

    L += ["## Configuration differences", ""]
    diff = result["config_diff"]
    if diff:
        L += ["| key | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for k, vals in diff.items():
            L.append(f"| `{k}` | " + " | ".join(_val(v).replace("|", "\\|") for v in vals) + " |")
    elif sum(r["has_config"] for r in runs) < 2:
        L.append("Fewer than two runs have a config.json; no config diff.")
    else:
        L.append("The configs are identical.")
    L.append("")

    L += ["## Metrics", "",
          f"Best value in **bold** (lowest, or highest for corr_time, improvement and steps/s); "
          f"(±x%) = change against {labels[0]}; † = not final (the stage or run did not finish; never marked "
          f"best).", ""]
    L += ["| metric | " + " | ".join(labels) + " | best |", "|---|" + "---|" * (len(labels) + 1)]
    for row in result["metrics"]:
        cells = []
        for i, v in enumerate(row["values"]):
            s = _fmt(v)
            if v is not None and i in row["best"]:
                s = f"**{s}**"
            if i > 0 and v is not None and row["values"][0] is not None:
                s += f" ({_pct(row['change_pct'][i])})"
            if row["partial"][i]:
                s += " †"
            cells.append(s)
        best = ", ".join(labels[i] for i in row["best"]) or "—"
        L.append(f"| {row['name']} | " + " | ".join(cells) + f" | {best} |")
    L.append("")

    L += ["## Insights", ""] + [f"- {s}" for s in result["insights"]] + [""]
    notes = [(r["label"], m) for r in runs for m in r["missing"]]
    if notes:
        L += ["## Notes", ""] + [f"- {lb}: {m}" for lb, m in notes] + [""]
    return "\n".join(L)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if len(args.workdirs) < 2:
        raise UserError(f"compare needs at least two run directories (got {len(args.workdirs)}): "
                        "python -m ups_jax.driver compare RUN_DIR1 RUN_DIR2 [...]")
    runs = [runlog.load_run(d) for d in args.workdirs]
    result = compare(runs, args.split)
    text = render_markdown(result)
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        try:
            write_text_atomic(out, text)
        except OSError as e:
            raise UserError(f"{out}: cannot write the report: {e.strerror or e}") from e
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
