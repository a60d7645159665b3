"""Writes small synthetic run directories in the trainer's format (config.json, metrics.jsonl, eval/).

Used by tests/test_analyze_compare.py; keeps the run-directory contract in one place::

    spec = {"codec": stage(loss=(1.0, 0.05)), "operator": stage(loss=(1.0, 0.9), grad_max=15.0)}
    write_run(tmp_path / "run", spec, eval_=eval_json(0.05, 0.2), samples=True)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

T0 = 1_700_000_000.0
VAL_METRIC = {"codec": "val/recon_nrmse"}


def stage(loss=(1.0, 0.05), grad=(1.0, 0.1), grad_max: float | None = None, lr=1e-3, steps=100, every=10,
          val=(0.5, 0.1), val_every=50, stopped_early=False, step_time_ms=20.0, batch_size=8) -> dict[str, Any]:
    """A stage spec: loss/grad/val decay geometrically from the first to the second value."""
    return dict(loss=loss, grad=grad, grad_max=grad_max, lr=lr, steps=steps, every=every, val=val,
                val_every=val_every, stopped_early=stopped_early, step_time_ms=step_time_ms, batch_size=batch_size)


def make_config(spec: dict[str, dict], **overrides: Any) -> dict[str, Any]:
    """Nested config like the trainer's config.json; ``overrides`` are dotted keys (``model.latent_dim=16``)."""
    cfg: dict[str, Any] = {
        "seed": 0, "variant": "test", "stage_order": list(spec),
        "data": {"reduced_resolution": 4, "paths": []},
        "model": {"latent_dim": 32, "latent_tokens": 32, "operator": {"hidden_dim": 96, "depths": [1, 1, 1]}},
        "stages": {name: {"steps": s["steps"], "lr": s["lr"], "batch_size": s["batch_size"], "warmup_steps": 10,
                          "grad_clip": 1.0, "rollout_steps": 1, "eval_every": s["val_every"], "patience": 0}
                   for name, s in spec.items()},
        "eval": {"split": "test", "initial_step": 10},
    }
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def _geom(a: float, b: float, n: int) -> list[float]:
    if n == 1:
        return [a]
    return [a * (b / a) ** (i / (n - 1)) for i in range(n)]


def stage_records(name: str, s: dict[str, Any], t: float, stop_at: int | None = None) -> tuple[list[dict], float]:
    """train/val records (and stage_end unless ``stop_at``) for one stage; returns (records, end time)."""
    recs: list[dict] = []
    steps = list(range(s["every"], s["steps"] + 1, s["every"]))
    losses = _geom(*s["loss"], len(steps))
    grads = _geom(*s["grad"], len(steps))
    if s["grad_max"] is not None:
        grads[len(grads) // 3] = s["grad_max"]
    vsteps = list(range(s["val_every"], s["steps"] + 1, s["val_every"]))
    vals = _geom(*s["val"], len(vsteps))
    metric = VAL_METRIC.get(name, "val/nrmse")
    best = (None, float("inf"))
    for i, step in enumerate(steps):
        if stop_at is not None and step > stop_at:
            return recs, t
        t += s["every"] * s["step_time_ms"] / 1000.0
        rec = {"kind": "train", "stage": name, "step": step, "time": t, "loss": losses[i],
               "loss/recon": losses[i] * 0.6, "grad_norm": grads[i],
               "lr": s["lr"] * min(1.0, step / 20) * (1.0 - 0.9 * step / s["steps"]),
               "steps_per_sec": 1000.0 / s["step_time_ms"],
               "samples_per_sec": 1000.0 / s["step_time_ms"] * s["batch_size"],
               "step_time_ms": s["step_time_ms"] * (10.0 if i == 0 else 1.0)}  # first window includes compilation
        if name != "codec":
            rec["loss/one_step"] = losses[i] * 0.4
        recs.append(rec)
        if step in vsteps:
            v = vals[vsteps.index(step)]
            is_best = v < best[1]
            if is_best:
                best = (step, v)
            recs.append({"kind": "val", "stage": name, "step": step, "time": t, "val_metric": metric, metric: v,
                         "val/persistence_nrmse": 0.4, "is_best": is_best})
    if stop_at is None:
        recs.append({"kind": "stage_end", "stage": name, "step": steps[-1], "time": t, "best_step": best[0],
                     "best_val": best[1], "val_metric": metric, "stopped_early": s["stopped_early"],
                     "wall_s": len(steps) * s["every"] * s["step_time_ms"] / 1000.0})
    return recs, t


def eval_json(model_nrmse: float = 0.05, pers_nrmse: float = 0.2, ttc_nrmse: float | None = None,
              steps: int = 31, split: str = "test") -> dict[str, Any]:
    def block(n: float) -> dict[str, Any]:
        return {"nrmse": n, "rmse": 2 * n, "crmse": 0.5 * n, "brmse": 3 * n, "max_error": 10 * n,
                "frmse_low": n, "frmse_mid": 0.1 * n, "frmse_high": 0.01 * n, "rel_l2": 1.1 * n,
                "corr_time": 1.0 / n / 100.0, "nrmse_per_step": [n * (k + 1) / steps * 2 for k in range(steps)]}
    out = {"split": split, "n_trajectories": 51,
           "protocol": {"initial_step": 10, "dt": 0.05, "nx": 256, "steps": steps},
           "model": block(model_nrmse), "persistence": block(pers_nrmse),
           "full_horizon": {"steps": 40, "model": block(model_nrmse * 1.2), "persistence": block(pers_nrmse * 1.1)},
           "improvement_over_persistence": (pers_nrmse - model_nrmse) / pers_nrmse}
    if ttc_nrmse is not None:
        out["ttc"] = block(ttc_nrmse)
    return out


def write_run(path: Path, spec: dict[str, dict], *, config: dict | None = None, eval_: dict | None = None,
              samples: bool = False, stop_at: tuple[str, int] | None = None, truncate_last: bool = False,
              with_config: bool = True, extra_lines: list[str] = ()) -> Path:
    """Writes a run directory. ``stop_at=(stage, step)`` kills the run there (no stage_end for that stage, no
    later stages, no eval, no run_end); ``truncate_last`` appends half a JSON line as a kill mid-write would."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(config) if config is not None else make_config(spec)
    if with_config:
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
    t = T0
    recs: list[dict] = [{"kind": "run_start", "time": t, "version": "0.1.0", "stages": list(spec),
                         "params": {"total": 1000, "encoder": 300, "operator": 500, "decoder": 200},
                         "device": "cpu", "data": {"train": 400, "val": 51, "test": 51, "nx": 256}}]
    killed = False
    for name, s in spec.items():
        stop = stop_at[1] if stop_at is not None and stop_at[0] == name else None
        r, t = stage_records(name, s, t, stop)
        recs += r
        if stop is not None:
            killed = True
            break
    if not killed and eval_ is not None:
        (path / "eval").mkdir(exist_ok=True)
        split = eval_["split"]
        (path / "eval" / f"{split}.json").write_text(json.dumps(eval_, indent=2))
        t += 5.0
        recs.append({"kind": "eval", "split": split, "time": t, "model/nrmse": eval_["model"]["nrmse"],
                     "persistence/nrmse": eval_["persistence"]["nrmse"], "file": f"eval/{split}.json"})
        if samples:
            rng = np.random.default_rng(0)
            T, X = 11, 16
            true = rng.normal(size=(2, T, X)).astype(np.float32)
            np.savez(path / "eval" / f"{split}_samples.npz", true=true, pred=true + 0.1,
                     x=np.linspace(-1, 1, X), t=np.arange(T) * 0.05)
    if not killed:
        recs.append({"kind": "run_end", "time": t + 1.0, "wall_s": t + 1.0 - T0})
    lines = [json.dumps(r) for r in recs] + list(extra_lines)
    if truncate_last:
        lines.append(json.dumps({"kind": "train", "stage": "x", "step": 1, "time": t, "loss": 0.5})[:25])
    (path / "metrics.jsonl").write_text("\n".join(lines) + ("" if truncate_last else "\n"))
    return path
