"""The heuristics of ``driver analyze`` (shared with ``driver compare``): the thresholds, each stage's convergence,
gradient and validation status, the evaluation summary and the recommendations."""

from __future__ import annotations

import difflib
import math
from typing import Any, Sequence

from ups_jax.driver import runlog
from ups_jax.driver.runlog import Run, best_val, finite, mean, percentile
from ups_jax.errors import UserError
from ups_jax.driver.formatting import _fmt, _iso, _pct


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
