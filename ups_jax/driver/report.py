"""The Markdown report of ``driver analyze``."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ups_jax.driver.runlog import Run
from ups_jax.driver.formatting import _dur, _fmt, _pct, _table
from ups_jax.driver.heuristics import HIGHER_IS_BETTER, OLD_EVAL_NOTE, _stage_config


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
