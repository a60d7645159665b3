"""The PNG plots of ``driver analyze`` (loss, gradient norm, learning rate, validation, evaluation curves)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ups_jax.driver import runlog
from ups_jax.driver.runlog import Run


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
