"""The comparison table of several seeds' runs (``WORKDIR/eval/table.json``, written by ``python -m ups_jax.train``
at the end of a run), as mean ± std over the runs (sample std, ddof = 1):

    .venv/bin/python benchmarks/stage_table.py RUN_SEED0 RUN_SEED1 RUN_SEED2 [--out PREFIX]

Per row (operator, +corrector, +student, +TTC, FNO, persistence): nRMSE of the 31-step protocol and of the full
horizon, fRMSE bands, correlation time, wall time per trajectory and model evaluations per step; then each refined
row's change against the operator alone, computed per seed (row / operator − 1) and then averaged — the number issue 8's
"≥ 10 % and more than the seed spread" is judged on; the steady prior's final-frame block; each refine stage's
training wall time (``stage_end`` in ``metrics.jsonl``). The runs must share the split, the trajectories and the
protocol (else one-line error, exit 2). Writes ``PREFIX.json`` / ``PREFIX.md`` when ``--out`` is given; prints
the markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import _pm, mean_std  # noqa: E402

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402
from ups_jax.stage_kinds import REFINE_STAGES  # noqa: E402

COLUMNS = (("nRMSE", "protocol", "nrmse"), ("nRMSE full", "full_horizon", "nrmse"),
           ("fRMSE low", "protocol", "frmse_low"), ("fRMSE mid", "protocol", "frmse_mid"),
           ("fRMSE high", "protocol", "frmse_high"), ("corr. time", "protocol", "corr_time"),
           ("s / traj", None, "wall_s_per_trajectory"), ("evals / step", None, "evaluations_per_step"))



def load_table(workdir: Path) -> dict:
    path = workdir / "eval" / "table.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; finish the run first (python -m ups_jax.train ... --workdir {workdir})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e}); re-run the evaluation of {workdir}") from e


def stage_walls(workdir: Path) -> dict:
    """Training wall time of each refine stage's last segment (``stage_end``), from ``metrics.jsonl``."""
    from ups_jax.training.logging import read_jsonl

    path = workdir / "metrics.jsonl"
    walls = {}
    for r in (read_jsonl(path)[0] if path.exists() else []):
        if r.get("kind") == "stage_end" and r.get("stage") in REFINE_STAGES:
            walls[r["stage"]] = r.get("wall_s")
    return walls


def _value(row: dict, where: str | None, key: str):
    return row.get(key) if where is None else row.get(where, {}).get(key)


def summarize(workdirs: Sequence[Path]) -> dict:
    tables = [load_table(w) for w in workdirs]
    ref = tables[0]
    for w, t in zip(workdirs[1:], tables[1:]):
        for key in ("split", "n_trajectories", "protocol"):
            if t.get(key) != ref.get(key):
                raise UserError(f"{w}: its table has another {key} than {workdirs[0]} ({t.get(key)} vs "
                                f"{ref.get(key)}); compare runs evaluated on the same trajectories")
    names = [r["row"] for r in ref["rows"]]
    for w, t in zip(workdirs, tables):
        if [r["row"] for r in t["rows"]] != names:
            raise UserError(f"{w}: its table has rows {[r['row'] for r in t['rows']]}, {workdirs[0]} has {names}; "
                            f"run the same stages (and baseline) in every run")
    rows = []
    for i, name in enumerate(names):
        per_seed = [t["rows"][i] for t in tables]
        cells = {f"{where or 'run'}/{key}": mean_std([_value(r, where, key) for r in per_seed])
                 for _, where, key in COLUMNS}
        change = {}
        if "operator" in names and name.startswith("+"):    # the refined rollouts (same start frame)
            j = names.index("operator")
            for where in ("protocol", "full_horizon"):
                change[where] = mean_std([r[where]["nrmse"] / t["rows"][j][where]["nrmse"] - 1
                                          for r, t in zip(per_seed, tables)])
        rows.append({"row": name, "cells": cells, "change_vs_operator": change,
                     "per_seed_nrmse": [r["protocol"]["nrmse"] for r in per_seed]})
    steady = None
    if all(t.get("steady") for t in tables):
        steady = [{"predictor": s["row"], "final_nrmse": mean_std([t["steady"]["rows"][k]["final_nrmse"]
                                                                            for t in tables])}
                  for k, s in enumerate(ref["steady"]["rows"])]
    walls = {s: mean_std([stage_walls(w).get(s) for w in workdirs]) for s in REFINE_STAGES}
    return {"runs": [str(w) for w in workdirs], "seeds": [t.get("seed") for t in tables], "split": ref["split"],
            "n_trajectories": ref["n_trajectories"], "protocol": ref["protocol"], "rows": rows, "steady": steady,
            "stage_wall_s": walls}


def markdown(s: dict) -> str:
    lines = [f"{s['split']} split, {s['n_trajectories']} trajectories, {len(s['runs'])} runs (seeds "
             f"{', '.join(str(x) for x in s['seeds'])}); mean ± std over runs.", "",
             "| row | " + " | ".join(c[0] for c in COLUMNS) + " | Δ nRMSE vs operator | Δ full vs operator |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for r in s["rows"]:
        ch = r["change_vs_operator"]
        pct = [f"{100 * c['mean']:+.1f} ± {100 * c['std']:.1f} %" if c.get("std") is not None else
               (f"{100 * c['mean']:+.1f} %" if c.get("mean") is not None else "—")
               for c in (ch.get("protocol", {}), ch.get("full_horizon", {}))]
        lines.append(f"| {r['row']} | " + " | ".join(_pm(r["cells"][f"{w or 'run'}/{k}"], 3 if w is None else 4)
                                                    for _, w, k in COLUMNS) + " | " + " | ".join(pct) + " |")
    lines += ["", "Per-seed nRMSE (31-step): " + "; ".join(
        f"{r['row']} " + " / ".join(f"{v:.4f}" for v in r["per_seed_nrmse"]) for r in s["rows"])]
    if s["steady"]:
        lines += ["", "| final frame | nRMSE |", "|---|---|"]
        lines += [f"| {r['predictor']} | {_pm(r['final_nrmse'])} |" for r in s["steady"]]
    walls = [f"{k} {_pm(v, 3)} s" for k, v in s["stage_wall_s"].items() if v["mean"] is not None]
    if walls:
        lines += ["", "Refine stages' training wall time: " + "; ".join(walls) + "."]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = ArgumentParser(prog="benchmarks/stage_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", type=Path, help="finished runs (one per seed)")
    p.add_argument("--out", type=Path, help="write PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    summary = summarize(args.workdirs)
    md = markdown(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
        args.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
