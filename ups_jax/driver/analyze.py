"""``python -m ups_jax.driver analyze``: a Markdown report (plus PNG plots) on a finished or partial run.

Usage::

    python -m ups_jax.driver analyze --workdir runs/burgers32 [--out report.md] [--plots-dir DIR]
        [--threshold key=value ...] [--wandb ENTITY/PROJECT/RUN_ID] [--json] [--no-plots] [--debug]

Reads the run directory (``ups_jax.driver.runlog``), never W&B unless ``--wandb`` is given. Sections follow the
original ``scripts/analyze_run.py`` (ups-original.md §10.1): per-stage loss analysis with a convergence status,
gradient-norm health, learning-rate trace, evaluation (model vs persistence, TTC gain), recommendations; plus
what the original lacked: step-time statistics, validation/early stopping, and a "Missing" section for partial
runs. The original's heuristics are kept as :data:`DEFAULT_THRESHOLDS` (override with ``--threshold``), except
its absolute-loss recommendations (operator loss > 1e-3, diffusion loss > 0.01), which depend on the data's scale
and are replaced by the relative convergence status.

Exit 0 with a report, also for a partial run; 2 with one line on stderr when the directory is not a run.
"""

from __future__ import annotations
import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ups_jax.driver import runlog
from ups_jax.cli import ArgumentParser
from ups_jax.files import write_text_atomic
from ups_jax.errors import UserError
# the report's parts, in their own modules; their public names stay importable from here
from ups_jax.driver.formatting import _jsonable
from ups_jax.driver.heuristics import (DEFAULT_THRESHOLDS, EVAL_KEYS, HIGHER_IS_BETTER, OLD_EVAL_NOTE,  # noqa: F401
                                      analyze, analyze_eval, analyze_stage, convergence_status, grad_status,
                                      metric_definition, parse_thresholds, recommendations, ttc_status)
from ups_jax.driver.report import render_markdown
from ups_jax.driver.run_plots import make_plots
from ups_jax.driver.wandb_history import TRAIN_FIELDS, fetch_wandb_history, merge_wandb  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m ups_jax.driver analyze",
                description="Report on a finished or partial run directory (Markdown + PNG plots).")
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, eval/)")
    p.add_argument("--out", help="Markdown report path (default WORKDIR/analysis/report.md; '-' = stdout)")
    p.add_argument("--plots-dir", help="where the PNG plots go (default: a 'plots' folder beside the report)")
    p.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                   help="override a heuristic threshold; keys: " + ", ".join(DEFAULT_THRESHOLDS))
    p.add_argument("--wandb", metavar="ENTITY/PROJECT/RUN_ID",
                   help="also fetch the run's W&B history and merge steps missing from metrics.jsonl (needs network)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p



def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    th, changed = parse_thresholds(args.threshold)
    run = runlog.load_run(args.workdir)
    if args.wandb:
        rows = fetch_wandb_history(args.wandb)
        n = merge_wandb(run, rows)
        run.warnings.append(f"W&B run {args.wandb}: merged {n} train/val record(s) absent from metrics.jsonl"
                            f" ({len(rows)} history rows read)")
    summary = analyze(run, th)

    to_stdout = args.out == "-"
    report = None if to_stdout else Path(args.out) if args.out else run.workdir / "analysis" / "report.md"
    report_dir = report.parent if report is not None else Path.cwd()
    if args.plots_dir:
        plots_dir = Path(args.plots_dir)
    else:  # beside the report; with --out - (stdout) in WORKDIR/analysis/plots, linked relative to the cwd
        plots_dir = (report_dir if report is not None else run.workdir / "analysis") / "plots"
    plots: dict[str, str] = {}
    if not args.no_plots:
        plots, notes = make_plots(run, summary, plots_dir)
        summary["warnings"] += notes
    summary["plots"] = plots
    text = render_markdown(run, summary, plots, report_dir, changed)
    if report is not None:
        try:
            write_text_atomic(report, text)
        except OSError as e:
            raise UserError(f"{report}: cannot write the report: {e.strerror or e}") from e
    summary["report"] = str(report) if report is not None else None

    if args.json:
        print(json.dumps(_jsonable(summary), indent=2))
    elif to_stdout:
        print(text)
    else:
        print(f"report: {report}")
        if plots:
            print(f"plots:  {len(plots)} PNG(s) in {plots_dir}")
        for stage, s in summary["stages"].items():
            print(f"  {stage}: {s['convergence']}" + (f"; gradients {s['grad']['status']}" if s["grad"] else ""))
        if run.missing:
            print(f"  incomplete run: {len(run.missing)} missing item(s), see the report's Missing section")
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
