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
import datetime as _dt
import difflib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ups_jax.driver import runlog
from ups_jax.driver.runlog import Run, best_val, finite, mean, percentile
from ups_jax.cli import ArgumentParser
from ups_jax.files import write_text_atomic
from ups_jax.errors import UserError

DEFAULT_THRESHOLDS: dict[str, float] = {
    # Convergence status of a stage's train loss (original analyze_run.py, Oct-16 version):
    # final < converge_good * initial -> "good convergence"; < converge_moderate * initial -> "moderate"; else "poor".
    "converge_good": 0.1,
    "converge_moderate": 0.5,
    # Gradient health. grad_high is the original's. grad_vanishing: the original flagged final < 0.01, but it
    # tested the *mean pre-clip norm over an epoch* of an un-normalised model; our trainer logs the global pre-clip
    # norm at a logged step, on z-score-normalised fields, after a cosine decay to lr * end_lr_factor. A stage
    # that has converged to a low loss legitimately ends with global norms in the 1e-2 range, so 0.01 warned on
    # healthy runs; 1e-3 is an order of magnitude lower and still catches gradients that have really vanished.
    "grad_high": 10.0,
    "grad_vanishing": 1e-3,
    # TTC gain (model.nrmse - ttc.nrmse) / model.nrmse * 100 (original: > 20 excellent, > 10 good, > 5 moderate).
    "ttc_excellent": 20.0,
    "ttc_good": 10.0,
    "ttc_moderate": 5.0,
    "ttc_recommend_below": 10.0,   # original: TTC improvement < 10 % -> "tune candidates/beam_width"
    # Validation still improving at the end of a finished stage: the last evaluation is the best one and beats the
    # previous best by more than this fraction -> recommend more steps.
    "val_improving_rel": 0.01,
    # Codec floor: a codec whose best val reconstruction nRMSE exceeds this fraction of the model's test nRMSE
    # bounds the achievable accuracy -> recommend a better codec.
    "codec_floor_fraction": 0.5,
}

EVAL_KEYS = ("nrmse", "rmse", "crmse", "brmse", "max_error", "frmse_low", "frmse_mid", "frmse_high", "rel_l2",
             "corr_time")
HIGHER_IS_BETTER = {"corr_time"}


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


def parse_thresholds(items: Sequence[str]) -> tuple[dict[str, float], set[str]]:
    th = dict(DEFAULT_THRESHOLDS)
    changed: set[str] = set()
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"--threshold {item!r}: expected KEY=VALUE, e.g. --threshold grad_high=5")
        if key not in th:
            near = difflib.get_close_matches(key, th, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; keys: {', '.join(th)}"
            raise UserError(f"--threshold {item!r}: unknown threshold {key!r}{hint}")
        try:
            th[key] = float(raw)
        except ValueError:
            raise UserError(f"--threshold {item!r}: {raw!r} is not a number") from None
        changed.add(key)
    return th, changed


# ---------------------------------------------------------------------------------------------------------------
# Analysis (pure: Run -> summary dict)


def convergence_status(initial: float | None, final: float | None, n: int, th: dict[str, float]) -> str:
    if initial is None or final is None or n < 2:
        return "insufficient data"
    if not math.isfinite(final):
        return "diverged (non-finite loss)"
    if not math.isfinite(initial) or initial <= 0:
        return "unknown (initial loss not positive)"
    ratio = final / initial
    if ratio < th["converge_good"]:
        return "good convergence"
    if ratio < th["converge_moderate"]:
        return "moderate convergence"
    return "poor convergence"


def grad_status(values: list[float], th: dict[str, float]) -> str:
    if not values:
        return "no gradient norms logged"
    if not all(math.isfinite(v) for v in values):
        return "non-finite gradient norms"
    if max(values) > th["grad_high"]:
        return "high gradient norms (possible instability)"
    if values[-1] < th["grad_vanishing"]:
        return "very low final gradients (vanishing/possible early stopping)"
    return "healthy"


def ttc_status(gain: float, th: dict[str, float]) -> str:
    if gain > th["ttc_excellent"]:
        return "excellent"
    if gain > th["ttc_good"]:
        return "good"
    if gain > th["ttc_moderate"]:
        return "moderate"
    return "minimal"


def _stage_config(run: Run, stage: str) -> dict[str, Any]:
    stages = run.config.get("stages")
    cfg = stages.get(stage) if isinstance(stages, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def analyze_stage(run: Run, stage: str, th: dict[str, float]) -> dict[str, Any]:
    recs = run.train.get(stage, [])
    steps, loss = run.series(stage, "loss")
    out: dict[str, Any] = {"completed": stage in run.stage_end, "last_step": run.last_step(stage),
                           "planned_steps": run.planned_steps(stage), "n_train_records": len(recs)}
    end = run.stage_end.get(stage)
    out["wall_s"] = float(end["wall_s"]) if end is not None and runlog._num(end.get("wall_s")) else None

    if loss:
        i, f = loss[0], loss[-1]
        fin = [(s, v) for s, v in zip(steps, loss) if math.isfinite(v)]
        min_step, min_v = min(fin, key=lambda p: p[1]) if fin else (None, None)
        red = (i - f) / i * 100.0 if (i != 0 and math.isfinite(i) and math.isfinite(f)) else None
        first_nonfinite = next((s for s, v in zip(steps, loss) if not math.isfinite(v)), None)
        out["loss"] = {"initial": i, "final": f, "min": min_v, "min_step": min_step, "reduction_pct": red,
                       "n_records": len(loss), "first_step": steps[0], "last_step": steps[-1],
                       "first_nonfinite_step": first_nonfinite}
        out["convergence"] = convergence_status(i, f, len(loss), th)
    else:
        out["loss"] = None
        out["convergence"] = "insufficient data"

    terms = sorted({k for r in recs for k in r if k.startswith("loss/")})
    out["loss_terms"] = {}
    for k in terms:
        _, v = run.series(stage, k)
        if v:
            out["loss_terms"][k] = {"initial": v[0], "final": v[-1], "min": min(finite(v), default=None)}

    gsteps, grads = run.series(stage, "grad_norm")
    if grads:
        fin = finite(grads)
        max_i = max(range(len(grads)), key=lambda j: grads[j] if math.isfinite(grads[j]) else math.inf)
        out["grad"] = {"initial": grads[0], "final": grads[-1], "max": max(fin) if fin else None,
                       "max_step": gsteps[max_i], "mean": mean(fin), "status": grad_status(grads, th)}
    else:
        out["grad"] = None

    lsteps, lrs = run.series(stage, "lr")
    if lrs:
        peak_i = max(range(len(lrs)), key=lambda j: lrs[j])
        out["lr"] = {"initial": lrs[0], "peak": lrs[peak_i], "peak_step": lsteps[peak_i], "final": lrs[-1]}
    else:
        out["lr"] = None

    # Step time: the first logged window includes JIT compilation, so it is left out when there are >= 3 records.
    _, st = run.series(stage, "step_time_ms")
    _, sps = run.series(stage, "steps_per_sec")
    _, smp = run.series(stage, "samples_per_sec")
    excl = len(st) >= 3 or len(sps) >= 3
    st_, sps_, smp_ = (finite(v[1:] if excl and len(v) >= 3 else v) for v in (st, sps, smp))
    out["speed"] = {"step_time_ms_mean": mean(st_), "step_time_ms_median": percentile(st_, 50),
                    "step_time_ms_p90": percentile(st_, 90), "steps_per_sec_mean": mean(sps_),
                    "samples_per_sec_mean": mean(smp_), "n_records": max(len(st_), len(sps_)),
                    "first_excluded": excl} if (st_ or sps_) else None

    bv = best_val(run, stage)
    if bv is not None:
        hist = [(s, v) for s, v in bv.pop("history") if math.isfinite(v)]
        bv["still_improving"], bv["last_gain_pct"] = False, None
        if len(hist) >= 2:
            prev_best = min(v for _, v in hist[:-1])
            last = hist[-1][1]
            if prev_best > 0 and last < prev_best:
                bv["last_gain_pct"] = (prev_best - last) / prev_best * 100.0
                bv["still_improving"] = (out["completed"] and not bv.get("stopped_early")
                                         and bv["last_gain_pct"] > th["val_improving_rel"] * 100.0)
        # Persistence at the best step, when logged (the val split's no-skill reference).
        pers = None
        for r in run.val.get(stage, []):
            if r.get("step") == bv["step"] and runlog._num(r.get("val/persistence_nrmse")):
                pers = float(r["val/persistence_nrmse"])
        bv["persistence_at_best"] = pers
    out["val"] = bv
    return out


OLD_EVAL_NOTE = ("predates per-trajectory headline metrics: its numbers are equal-weight batch means (fRMSE scaled "
                 "by the domain length), not comparable with newer evaluations; re-run python -m ups_jax.evaluate "
                 "--workdir {workdir}")


def metric_definition(data: dict[str, Any]) -> str | None:
    """'per_trajectory' (eval JSON with a ``conventions`` block, version >= 2, or an eval record that says so),
    'batch_mean' (older eval JSONs), None when unknown (only an older eval record's headline numbers)."""
    conv = data.get("conventions")
    if isinstance(conv, dict) and runlog._num(conv.get("version")) and conv["version"] >= 2:
        return "per_trajectory"
    if data.get("_from_record"):
        return "per_trajectory" if runlog._num(data.get("conventions_version")) and \
            data["conventions_version"] >= 2 else None
    return "batch_mean"


def analyze_eval(data: dict[str, Any], th: dict[str, float]) -> dict[str, Any]:
    model = data.get("model") or {}
    pers = data.get("persistence") or {}
    ttc = data.get("ttc") if isinstance(data.get("ttc"), dict) else None
    keys = [k for k in EVAL_KEYS if k in model or k in pers]
    keys += sorted(k for k in model if k not in keys and runlog._num(model.get(k)))
    metrics = {}
    for k in keys:
        m, p = model.get(k), pers.get(k)
        ratio = m / p if runlog._num(m) and runlog._num(p) and p != 0 else None
        row = {"model": m if runlog._num(m) else None, "persistence": p if runlog._num(p) else None, "ratio": ratio}
        if ttc is not None:
            row["ttc"] = ttc.get(k) if runlog._num(ttc.get(k)) else None
        metrics[k] = row
    out: dict[str, Any] = {
        "split": data.get("split"), "n_trajectories": data.get("n_trajectories"),
        "protocol": data.get("protocol") if isinstance(data.get("protocol"), dict) else {},
        "metrics": metrics, "improvement_over_persistence": data.get("improvement_over_persistence"),
        "headline_only": bool(data.get("_from_record")),
        "metric_definition": metric_definition(data),
    }
    mn, pn = model.get("nrmse"), pers.get("nrmse")
    out["model_beats_persistence"] = (mn < pn) if runlog._num(mn) and runlog._num(pn) else None
    fh = data.get("full_horizon")
    if isinstance(fh, dict) and isinstance(fh.get("model"), dict):
        fm, fp = fh["model"], fh.get("persistence") or {}
        out["full_horizon"] = {"steps": fh.get("steps"), "metrics": {
            k: {"model": fm.get(k), "persistence": fp.get(k),
                "ratio": fm[k] / fp[k] if runlog._num(fm.get(k)) and runlog._num(fp.get(k)) and fp[k] != 0 else None}
            for k in ("nrmse", "rel_l2", "corr_time") if k in fm}}
    if ttc is not None and runlog._num(mn) and runlog._num(ttc.get("nrmse")) and mn != 0:
        gain = round((mn - ttc["nrmse"]) / mn * 100.0, 9)  # 10.000000000000002 % is 10 %, not "> 10 %"
        out["ttc"] = {"nrmse": ttc["nrmse"], "gain_pct": gain, "status": ttc_status(gain, th)}
    for name, src in (("model", model), ("persistence", pers), ("ttc", ttc or {})):
        if isinstance(src.get("nrmse_per_step"), list):
            out.setdefault("nrmse_per_step", {})[name] = finite(src["nrmse_per_step"])
    return out


def recommendations(run: Run, summary: dict[str, Any], th: dict[str, float]) -> list[str]:
    recs: list[str] = []
    for stage, s in summary["stages"].items():
        cfg = _stage_config(run, stage)
        tail = "" if s["completed"] else " (the stage did not finish; re-check once it has)"
        loss = s["loss"]
        conv = s["convergence"]
        if conv.startswith("diverged"):
            recs.append(f"stage '{stage}': the loss became non-finite at step {loss['first_nonfinite_step']}: lower "
                        f"stages.{stage}.lr (now {_fmt(cfg.get('lr'))}) and stages.{stage}.grad_clip, lengthen "
                        f"warmup_steps, and check the data normalisation")
        elif conv == "poor convergence":
            recs.append(f"stage '{stage}': poor convergence (loss {_fmt(loss['initial'])} -> {_fmt(loss['final'])}, "
                        f"{_pct(loss['reduction_pct'])} reduction): increase stages.{stage}.steps (now "
                        f"{_fmt(cfg.get('steps'))}) or lower stages.{stage}.lr (now {_fmt(cfg.get('lr'))}){tail}")
        elif conv == "moderate convergence":
            recs.append(f"stage '{stage}': moderate convergence ({_pct(loss['reduction_pct'])} loss reduction): more "
                        f"steps (stages.{stage}.steps, now {_fmt(cfg.get('steps'))}) may help{tail}")
        g = s["grad"]
        if g is not None and g["status"].startswith("high"):
            recs.append(f"stage '{stage}': gradient norm reached {_fmt(g['max'])} at step {g['max_step']} "
                        f"(> {_fmt(th['grad_high'])}): lower stages.{stage}.grad_clip (now "
                        f"{_fmt(cfg.get('grad_clip'))}) or stages.{stage}.lr (now {_fmt(cfg.get('lr'))}), or "
                        f"lengthen stages.{stage}.warmup_steps")
        elif g is not None and g["status"].startswith("non-finite"):
            recs.append(f"stage '{stage}': non-finite gradient norms: lower stages.{stage}.lr and check the data")
        elif g is not None and g["status"].startswith("very low"):
            recs.append(f"stage '{stage}': final gradient norm {_fmt(g['final'])} (< {_fmt(th['grad_vanishing'])}):"
                        f" training has stalled; if the loss is still high raise stages.{stage}.lr or "
                        f"stages.{stage}.end_lr_factor, if it is already low the stage can be shortened")
        v = s["val"]
        if v is not None and v.get("still_improving"):
            recs.append(f"stage '{stage}': {v['metric']} was still improving at the end (best at the last evaluation,"
                        f" step {v['last_step']}, {_pct(v['last_gain_pct'])} better than the previous best): more "
                        f"steps would likely help (stages.{stage}.steps, now {_fmt(cfg.get('steps'))})")

    ev = summary["evaluation"].get(run.eval_split) or next(iter(summary["evaluation"].values()), None)
    if ev is not None:
        m = ev["metrics"].get("nrmse", {})
        if ev["model_beats_persistence"] is False:
            op = "operator" if "operator" in run.stages else (run.stages[-1] if run.stages else "operator")
            recs.append(f"model is not better than persistence: {ev['split'] or 'test'} nRMSE {_fmt(m['model'])} vs "
                        f"persistence {_fmt(m['persistence'])} (ratio {_fmt(m['ratio'])}); the model adds nothing over "
                        f"repeating the last given frame: train the operator longer (stages.{op}.steps), check the "
                        f"codec's reconstruction error (val/recon_nrmse), or raise stages.{op}.rollout_steps")
        t = ev.get("ttc")
        if t is not None and t["gain_pct"] < 0:
            recs.append(f"TTC makes the prediction worse ({_pct(t['gain_pct'])} nRMSE change): check the reward "
                        f"model, or disable TTC")
        elif t is not None and t["gain_pct"] < th["ttc_recommend_below"]:
            recs.append(f"TTC gain is only {_pct(t['gain_pct'])} (< {_fmt(th['ttc_recommend_below'])}%): tune the "
                        f"TTC candidates / beam width, or disable TTC to save compute")
        mn = m.get("model")
        for stage, s in summary["stages"].items():
            v = s["val"]
            if (v is not None and v["metric"] == "val/recon_nrmse" and runlog._num(v.get("value"))
                    and runlog._num(mn) and mn > 0 and v["value"] > th["codec_floor_fraction"] * mn):
                recs.append(f"stage '{stage}': the codec's best reconstruction nRMSE {_fmt(v['value'])} is "
                            f"{v['value'] / mn * 100:.0f}% of the model's test nRMSE {_fmt(mn)}: the codec bounds the "
                            f"achievable accuracy; train it longer (stages.{stage}.steps) or widen the latent "
                            f"(model.latent_dim / model.latent_tokens)")
    if not recs:
        recs.append("Training looks good" if not run.missing else
                    "Training looks good so far; the run is incomplete (see Missing)")
    return recs


def analyze(run: Run, th: dict[str, float]) -> dict[str, Any]:
    """The full machine-readable summary of a run (what ``--json`` prints, minus plot paths)."""
    start = run.run_start or {}
    wall, exact = run.wall_time()
    summary: dict[str, Any] = {
        "run": {"name": run.name, "workdir": str(run.workdir), "version": start.get("version"),
                "device": start.get("device"), "params": start.get("params"), "data": start.get("data"),
                "started": _iso(start.get("time")), "finished": run.finished, "complete": run.complete,
                "wall_s": wall, "wall_exact": exact, "resumed": run.resumed, "stages": list(run.stages)},
        "stages": {s: analyze_stage(run, s, th) for s in run.stages},
        "evaluation": {split: analyze_eval(run.eval_result(split), th)
                       for split in sorted(set(run.evals) | set(run.eval_records))},
        "missing": list(run.missing), "warnings": list(run.warnings), "thresholds": dict(th),
    }
    summary["recommendations"] = recommendations(run, summary, th)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# W&B (optional)


TRAIN_FIELDS = {"loss", "grad_norm", "lr", "steps_per_sec", "samples_per_sec", "step_time_ms"}


def fetch_wandb_history(spec: str) -> list[dict[str, Any]]:
    parts = spec.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"--wandb {spec!r}: expected ENTITY/PROJECT/RUN_ID")
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb: the wandb package is not installed (pip install wandb)") from None
    try:
        api = wandb.Api(timeout=30)
        return [dict(r) for r in api.run("/".join(parts)).scan_history()]
    except Exception as e:  # offline, no key, unknown run: all the user's environment, one line
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"--wandb {spec}: cannot fetch the run from W&B ({type(e).__name__}: {reason}); check the "
                        "network and the API key (wandb login / WANDB_API_KEY), or analyse without --wandb") from None


def merge_wandb(run: Run, rows: list[dict[str, Any]]) -> int:
    """Adds train/val records from W&B history rows for (stage, step) pairs absent from metrics.jsonl.

    Understood row layouts: records logged verbatim (``kind``/``stage``/``step`` keys), or per-stage keys
    ``<stage>/<field>`` / ``train/<stage>/<field>`` (``<stage>/val/...`` for validation) with the step in
    ``<stage>/step``, ``step`` or W&B's ``_step``. Only stages the run plans are mapped.
    """
    added = 0
    known = set(run.stages)

    def add(kind: str, stage: str, rec: dict[str, Any]) -> None:
        nonlocal added
        table = run.train if kind == "train" else run.val
        recs = table.setdefault(stage, [])
        if any(r["step"] == rec["step"] for r in recs):
            return
        recs.append(rec)
        recs.sort(key=lambda r: r["step"])
        added += 1

    for row in rows:
        if row.get("kind") in ("train", "val") and isinstance(row.get("stage"), str) and runlog._num(row.get("step")):
            rec = {k: v for k, v in row.items() if not k.startswith("_")}
            rec["step"] = int(rec["step"])
            add(row["kind"], row["stage"], rec)
            continue
        per: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in row.items():
            parts = key.split("/")
            if parts[0] == "train" and len(parts) >= 3:
                parts = parts[1:]
            if len(parts) < 2 or parts[0] not in known or not runlog._num(value):
                continue
            stage, fld = parts[0], "/".join(parts[1:])
            if fld.startswith("val/"):
                per.setdefault(("val", stage), {})[fld] = value
            elif fld in TRAIN_FIELDS or fld.startswith("loss/"):
                per.setdefault(("train", stage), {})[fld] = value
        for (kind, stage), fields in per.items():
            step = row.get(f"{stage}/step", row.get("step", row.get("_step")))
            if not runlog._num(step):
                continue
            add(kind, stage, {"kind": kind, "stage": stage, "step": int(step), "_source": "wandb", **fields})
    return added


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_plots(run: Run, summary: dict[str, Any], plots_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Writes the PNGs; returns ({key: path}, notes). A plot that fails is noted, never fatal."""
    try:
        import numpy as np

        from ups_jax.eval import plots
    except ImportError as e:
        return {}, [f"plots skipped: {e}"]
    out: dict[str, str] = {}
    notes: list[str] = []

    def attempt(key: str, fn, *args, **kw) -> None:
        try:
            out[key] = str(fn(*args, **kw))
        except Exception as e:  # a plot of odd data must not cost the report
            notes.append(f"plot {key} failed: {type(e).__name__}: {e}")

    grads, lrs = {}, {}
    for stage in run.stages:
        series = {}
        for key in ["loss"] + sorted(summary["stages"][stage]["loss_terms"]):
            steps, vals = run.series(stage, key)
            if steps:
                series[key] = (steps, vals)
        if series:
            attempt(f"loss:{stage}", plots.plot_loss_curves, series, plots_dir / f"loss_{_safe(stage)}.png",
                    ylabel=f"train loss ({stage})", logy=True, title=f"{run.name}: stage {stage}")
        v = summary["stages"][stage]["val"]
        if v is not None and v.get("metric"):
            vseries = {}
            for key in (v["metric"], "val/persistence_nrmse"):
                steps, vals = run.series(stage, key, kind="val")
                if steps:
                    vseries[key] = (steps, vals)
            if vseries:
                attempt(f"val:{stage}", plots.plot_loss_curves, vseries, plots_dir / f"val_{_safe(stage)}.png",
                        ylabel="validation", logy=True, title=f"{run.name}: validation, stage {stage}")
        steps, vals = run.series(stage, "grad_norm")
        if steps:
            grads[stage] = (steps, vals)
        steps, vals = run.series(stage, "lr")
        if steps:
            lrs[stage] = (steps, vals)
    if grads:
        attempt("grad_norm", plots.plot_series, grads, plots_dir / "grad_norm.png", "gradient norm (pre-clip)",
                logy=True, title=f"{run.name}: gradient norms")
    if lrs:
        attempt("lr", plots.plot_series, lrs, plots_dir / "lr.png", "learning rate", logy=False,
                title=f"{run.name}: learning rate")
    for split, ev in summary["evaluation"].items():
        curves = {k: v for k, v in (ev.get("nrmse_per_step") or {}).items() if v}
        if curves:
            dt = ev["protocol"].get("dt")
            attempt(f"nrmse:{split}", plots.plot_nrmse_curves, curves, dt if runlog._num(dt) else None,
                    plots_dir / f"nrmse_{_safe(split)}.png", title=f"{run.name}: {split} nRMSE vs rollout time")
        npz = run.samples.get(split)
        if npz is not None:
            try:
                with np.load(npz) as z:
                    true, pred, x, t = (z[k] for k in ("true", "pred", "x", "t"))
                if true.ndim != 3 or len(true) == 0:
                    raise ValueError(f"'true' has shape {true.shape}, expected (n, T, X) with n >= 1")
            except Exception as e:
                notes.append(f"{npz.relative_to(run.workdir)} unreadable ({type(e).__name__}: {e}); no x-t map")
                continue
            attempt(f"xt:{split}", plots.plot_xt_maps, true[0], pred[0], x, t, plots_dir / f"xt_{_safe(split)}.png",
                    title=f"{run.name}: {split} trajectory 0")
    return out, notes


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f}%" if v < 0 else f"{v:.1f}%"


def _iso(t: Any) -> str | None:
    if not runlog._num(t):
        return None
    return _dt.datetime.fromtimestamp(float(t), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(s: float | None) -> str:
    if s is None:
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else _fmt(c) for c in r) + " |")
    return lines


def render_markdown(run: Run, summary: dict[str, Any], plots: dict[str, str], report_dir: Path,
                    changed: set[str] = frozenset()) -> str:
    def img(key: str, alt: str) -> list[str]:
        if key not in plots:
            return []
        rel = os.path.relpath(plots[key], report_dir)
        return [f"![{alt}]({Path(rel).as_posix()})", ""]

    info = summary["run"]
    L: list[str] = [f"# Run analysis: {run.name}", ""]
    state = "finished" if info["finished"] else "incomplete (see Missing)"
    if info["finished"] and run.missing:
        state = "finished, with missing parts (see Missing)"
    L += [f"- Workdir: `{run.workdir}`", f"- Status: {state}"]
    if info["version"] or info["device"]:
        L.append(f"- ups_jax {info['version'] or '?'} on {info['device'] or '?'}")
    if info["started"]:
        L.append(f"- Started: {info['started']}")
    L.append(f"- Wall time: {_dur(info['wall_s'])}" + ("" if info["wall_exact"] else " (from record timestamps)"))
    if info["resumed"]:
        L.append(f"- Resumed {info['resumed']} time(s)")
    params = info["params"]
    if isinstance(params, dict) and params:
        L.append("- Parameters: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                               for k, v in params.items()))
    if isinstance(info["data"], dict) and info["data"]:
        L.append("- Data: " + ", ".join(f"{k}={_fmt(v)}" for k, v in info["data"].items()))
    L.append("")

    # ---- summary ----
    L += ["## Summary", ""]
    for stage, s in summary["stages"].items():
        bits = [s["convergence"]]
        if s["grad"]:
            bits.append(f"gradients: {s['grad']['status']}")
        if s["val"] and s["val"]["value"] is not None:
            bits.append(f"best {s['val']['metric']} {_fmt(s['val']['value'])} at step {s['val']['step']}")
        if not s["completed"]:
            bits.append("did not finish" if s["last_step"] is not None else "never started")
        L.append(f"- Stage `{stage}`: " + "; ".join(bits))
    for split, ev in summary["evaluation"].items():
        m = ev["metrics"].get("nrmse", {})
        verdict = {True: "better than persistence", False: "NOT better than persistence", None: ""}[
            ev["model_beats_persistence"]]
        L.append(f"- Evaluation `{split}`: model nRMSE {_fmt(m.get('model'))} vs persistence "
                 f"{_fmt(m.get('persistence'))} ({verdict})")
    L.append(f"- {len(summary['recommendations'])} recommendation(s); {len(run.missing)} missing item(s)")
    L.append("")

    # ---- configuration ----
    if run.config:
        L += ["## Configuration", ""]
        model = run.config.get("model") if isinstance(run.config.get("model"), dict) else {}
        dims = [f"{k}={_fmt(model[k])}" for k in ("latent_dim", "latent_tokens") if k in model]
        if dims:
            L += ["Model: " + ", ".join(dims), ""]
        cols = ["steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "accum_steps",
                "rollout_steps", "eval_every", "patience"]
        rows = []
        for stage in run.stages:
            c = _stage_config(run, stage)
            if c:
                rows.append([f"`{stage}`"] + [c.get(k) for k in cols])
        if rows:
            present = [j for j, k in enumerate(cols) if any(r[j + 1] is not None for r in rows)]
            L += _table(["stage"] + [cols[j] for j in present], [[r[0]] + [r[j + 1] for j in present] for r in rows])
            L.append("")

    # ---- training ----
    L += ["## Training", ""]
    for stage, s in summary["stages"].items():
        L += [f"### Stage `{stage}`", ""]
        if s["last_step"] is None:
            L += ["No records: the stage never started.", ""]
            continue
        planned = f" of {s['planned_steps']}" if s["planned_steps"] else ""
        done = "finished" if s["completed"] else "did not finish"
        L += [f"Last step {s['last_step']}{planned} ({done}); wall time {_dur(s['wall_s'])}.", ""]
        lo = s["loss"]
        if lo:
            L += [f"**Loss: {s['convergence']}**", ""]
            L += _table(["", "initial", "final", "min (step)", "reduction", "steps recorded"],
                        [["loss", lo["initial"], lo["final"], f"{_fmt(lo['min'])} ({lo['min_step']})",
                          _pct(lo["reduction_pct"]), f"{lo['n_records']} ({lo['first_step']}–{lo['last_step']})"]]
                        + [[k, t["initial"], t["final"], _fmt(t["min"]), "", ""] for k, t in s["loss_terms"].items()])
            L.append("")
        else:
            L += ["No train loss recorded.", ""]
        g = s["grad"]
        if g:
            L += [f"**Gradients: {g['status']}** — initial {_fmt(g['initial'])}, final {_fmt(g['final'])}, "
                  f"max {_fmt(g['max'])} (step {g['max_step']}), mean {_fmt(g['mean'])}", ""]
        lr = s["lr"]
        if lr:
            L += [f"Learning rate: initial {_fmt(lr['initial'])}, peak {_fmt(lr['peak'])} (step {lr['peak_step']}), "
                  f"final {_fmt(lr['final'])}", ""]
        sp = s["speed"]
        if sp:
            note = " (first logged window excluded: it includes compilation)" if sp["first_excluded"] else ""
            L += [f"Step time: mean {_fmt(sp['step_time_ms_mean'])} ms, median {_fmt(sp['step_time_ms_median'])} ms, "
                  f"p90 {_fmt(sp['step_time_ms_p90'])} ms; {_fmt(sp['steps_per_sec_mean'])} steps/s, "
                  f"{_fmt(sp['samples_per_sec_mean'])} samples/s{note}", ""]
        v = s["val"]
        if v:
            es = {True: "stopped early", False: "not stopped early", None: "stage unfinished"}[v["stopped_early"]]
            pers = f" (persistence {_fmt(v['persistence_at_best'])})" if v.get("persistence_at_best") else ""
            L += [f"Validation: best {v['metric']} = {_fmt(v['value'])}{pers} at step {v['step']}; "
                  f"{v['n_evals']} evaluation(s), last {_fmt(v['last_value'])} at step {v['last_step']}; {es}"
                  + ("; still improving at the end" if v["still_improving"] else ""), ""]
        L += img(f"loss:{stage}", f"loss {stage}") + img(f"val:{stage}", f"validation {stage}")
    L += img("grad_norm", "gradient norms") + img("lr", "learning rate")

    # ---- evaluation ----
    L += ["## Evaluation", ""]
    if not summary["evaluation"]:
        L += ["No evaluation results (see Missing).", ""]
    for split, ev in summary["evaluation"].items():
        proto = ev["protocol"]
        desc = ", ".join(f"{k}={_fmt(v)}" for k, v in proto.items())
        n = f"{ev['n_trajectories']} trajectories" if ev["n_trajectories"] is not None else ""
        L += [f"### Split `{split}`", ""]
        if n or desc:
            L += [f"{n}{'; ' if n and desc else ''}{desc}", ""]
        if ev["headline_only"]:
            L += [f"Only the eval record's headline numbers (eval/{split}.json missing).", ""]
        if ev.get("metric_definition") == "batch_mean":
            L += [f"**Note:** eval/{split}.json " + OLD_EVAL_NOTE.format(workdir=run.workdir), ""]
        elif ev.get("metric_definition") == "per_trajectory":
            L += ["Headline metrics: per-trajectory means over the whole split (independent of the batch size); "
                  "fRMSE with PDEBench's Lx = 1.", ""]
        has_ttc = any("ttc" in r for r in ev["metrics"].values())
        header = ["metric", "model", "persistence", "model / persistence"] + (["ttc"] if has_ttc else [])
        rows = []
        for k, r in ev["metrics"].items():
            name = k + (" (higher is better)" if k in HIGHER_IS_BETTER else "")
            rows.append([name, r["model"], r["persistence"], r["ratio"]] + ([r.get("ttc")] if has_ttc else []))
        L += _table(header, rows) + [""]
        if ev.get("improvement_over_persistence") is not None:
            L += [f"Improvement over persistence: {_fmt(ev['improvement_over_persistence'])}", ""]
        fh = ev.get("full_horizon")
        if fh:
            L += [f"Full horizon ({fh['steps']} steps):", ""]
            L += _table(["metric", "model", "persistence", "model / persistence"],
                        [[k, r["model"], r["persistence"], r["ratio"]] for k, r in fh["metrics"].items()]) + [""]
        t = ev.get("ttc")
        if t:
            L += [f"**TTC gain: {_pct(t['gain_pct'])} ({t['status']})** — nRMSE {_fmt(ev['metrics']['nrmse']['model'])}"
                  f" -> {_fmt(t['nrmse'])}", ""]
        L += img(f"nrmse:{split}", f"nRMSE vs rollout step ({split})") + img(f"xt:{split}", f"x-t maps ({split})")

    # ---- recommendations / missing / notes ----
    L += ["## Recommendations", ""] + [f"- {r}" for r in summary["recommendations"]] + [""]
    if run.missing:
        L += ["## Missing", ""] + [f"- {m}" for m in run.missing] + [""]
    if summary["warnings"]:
        L += ["## Notes", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    L += ["## Thresholds", ""]
    L += _table(["threshold", "value"], [[k + (" (overridden)" if k in changed else ""), v]
                                         for k, v in summary["thresholds"].items()]) + [""]
    now = _dt.datetime.now(tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    L += [f"_Generated by `python -m ups_jax.driver analyze` at {now}._", ""]
    return "\n".join(L)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON; the status strings say "diverged"/"non-finite"
    if isinstance(obj, Path):
        return str(obj)
    return obj


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
