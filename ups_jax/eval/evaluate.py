"""Physical-space evaluation on a held-out split, always next to the persistence baseline.

Protocol (PDEBench Burgers): 256 cells, Δt = 0.05 (41 frames), ``initial_step`` = 10 given frames, the model
rolls out from the given frames over the remaining 31; metrics as PDEBench's ``metric_func`` over the predicted
frames only. Plus the full horizon: roll out from t = 0 over every remaining frame at the data's Δt.

Headline numbers are whole-split statistics in which every trajectory weighs the same (per-trajectory means for
nRMSE, RMSE, bRMSE, rel-L2, correlation; see ``ups_jax.eval.metrics``), so they do not depend on
``eval.batch_size``; PDEBench's batched values sit beside them under ``pdebench_batched``. fRMSE uses PDEBench's
``Lx = 1.0``. The JSON's ``conventions`` block says all of this; training validation (``make_validator``) calls the
same :func:`score`, so val and test numbers are the same quantity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ups_jax.eval.metrics import MetricAccumulator, persistence_prediction
from ups_jax.eval.rollout import Rollout
from ups_jax.files import atomic_path, write_json_atomic

FRMSE_LX = 1.0          # PDEBench's training scripts call metric_func(..., Lx=1.0) whatever the domain
CONVENTIONS_VERSION = 2  # 1 (no ``conventions`` block): equal-weight batch means, fRMSE scaled by the domain length


def conventions(*, domain_length: float, batch_size: int) -> dict:
    """The ``conventions`` block of an eval JSON: what the headline numbers are."""
    return {
        "version": CONVENTIONS_VERSION,
        "headline": "whole split, every trajectory weighs the same (independent of eval.batch_size): nrmse, rmse, "
                    "brmse, rel_l2, corr are means over trajectories; crmse and frmse are RMS over all "
                    "trajectories; max_error is the max over all trajectories; each averaged over predicted steps",
        "pdebench_batched": f"PDEBench metric_func per batch of {int(batch_size)} trajectories, batches weighted by "
                            f"their size (PDEBench itself weighs batches equally and divides by n_batches - 1)",
        "frmse_Lx": FRMSE_LX,
        "domain_length": float(domain_length),
        "metrics_over": "predicted frames only (the given frames are excluded), physical units",
    }


def predict(rollout: Rollout, traj: np.ndarray, nu: np.ndarray, dt: float, start: int, steps: int, *,
            first_index: int = 0) -> np.ndarray:
    """The model's prediction of frames ``start+1 .. start+steps`` given frames ``0 .. start``: (B, steps, X).

    The one place evaluation, validation and the benchmarks call the model's rollout (physical units in and out).
    The rollout reads the last ``context_frames`` of the given frames; ``first_index`` is ``traj[0]``'s index in
    the whole evaluation (a stochastic rollout keys each trajectory's noise by it).
    """
    return rollout(traj[:, :start + 1], nu, dt, steps, first_index=first_index)


def score(rollout: Rollout, traj: np.ndarray, nu: np.ndarray, dt: float, start: int, *, batch_size: int,
          corr_threshold: float = 0.8, keep: int = 0):
    """Rolls out from frame ``start`` to the end in batches; returns (model metrics, persistence metrics, the
    first ``keep`` predictions or None). Metrics are :class:`MetricAccumulator` results (batch-size invariant)."""
    steps = traj.shape[1] - start - 1
    dims = traj.ndim - 2                       # (N, T, X) or (N, T, X, Y)
    acc_m = MetricAccumulator(FRMSE_LX, corr_threshold=corr_threshold, dims=dims)
    acc_p = MetricAccumulator(FRMSE_LX, corr_threshold=corr_threshold, dims=dims)
    kept = []
    for s in range(0, traj.shape[0], batch_size):
        chunk = traj[s:s + batch_size]
        true = chunk[:, start + 1:]
        pred = predict(rollout, chunk, nu[s:s + batch_size], dt, start, steps, first_index=s)
        acc_m.update(pred, true)
        acc_p.update(persistence_prediction(chunk[:, start], steps), true)
        if sum(len(k) for k in kept) < keep:
            kept.append(pred)
    preds = np.concatenate(kept)[:keep] if kept else None
    return acc_m.result(), acc_p.result(), preds


def evaluate(rollout: Rollout, traj: np.ndarray, nu: np.ndarray, *, dt: float, domain_length: float,
             initial_step: int, batch_size: int, corr_threshold: float = 0.8, split: str = "test",
             keep_samples: int = 0, full_horizon: bool = True) -> tuple[dict, dict | None]:
    """traj: (N, T, X) or (N, T, X, Y) physical. Returns (results JSON dict, samples dict for plots or None)."""
    N, T, X = traj.shape[:3]
    if not 0 < initial_step < T:
        raise ValueError(f"eval.initial_step={initial_step} must be in 1..{T - 1} for {T} frames")
    start = initial_step - 1
    context_frames = int(getattr(rollout, "context_frames", 1))
    if context_frames > initial_step:
        raise ValueError(f"the model reads {context_frames} context frames but eval.initial_step={initial_step} "
                         f"gives fewer")
    model, persistence, preds = score(rollout, traj, nu, dt, start, batch_size=batch_size,
                                      corr_threshold=corr_threshold, keep=keep_samples)
    results = {
        "split": split, "n_trajectories": int(N),
        "protocol": dict({"initial_step": int(initial_step), "dt": float(dt), "nx": int(X),
                          "steps": int(T - initial_step), "context_frames_read": context_frames},
                         **({"grid": list(traj.shape[2:])} if traj.ndim > 3 else {})),
        "conventions": conventions(domain_length=domain_length, batch_size=batch_size),
        "model": model, "persistence": persistence,
        "improvement_over_persistence": _ratio(persistence["nrmse"], model["nrmse"]),
    }
    if full_horizon:   # from the first frame at which the model has all its context frames (t = 0 when h = 1)
        h0 = context_frames - 1
        fm, fp, _ = score(rollout, traj, nu, dt, h0, batch_size=batch_size, corr_threshold=corr_threshold)
        results["full_horizon"] = {"start_frame": h0, "steps": int(T - 1 - h0), "model": fm, "persistence": fp,
                                   "improvement_over_persistence": _ratio(fp["nrmse"], fm["nrmse"])}
    samples = None
    if keep_samples and preds is not None:
        n = preds.shape[0]
        samples = {"true": traj[:n, start + 1:].astype(np.float32), "pred": preds.astype(np.float32),
                   "t": (np.arange(start + 1, T) * dt).astype(np.float32)}
    return results, samples


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("inf")


def write_report(results: dict, samples: dict | None, x: np.ndarray, outdir: str | Path,
                 y: np.ndarray | None = None) -> list[Path]:
    """Writes ``<split>.json``, ``<split>_samples.npz`` and PNGs (nRMSE vs step; per trajectory x–t maps in 1-D,
    vorticity snapshots true / predicted / error in 2-D, ``y`` = the y grid) into ``outdir``."""
    from ups_jax.eval import plots

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    split = results["split"]
    written = []
    written.append(write_json_atomic(outdir / f"{split}.json", results, indent=1))   # never a half-written file
    dt = results["protocol"]["dt"]
    written.append(Path(plots.plot_nrmse_curves(
        {"model": results["model"]["nrmse_per_step"], "persistence": results["persistence"]["nrmse_per_step"]},
        dt, outdir / f"{split}_nrmse_vs_step.png")))
    if samples is not None:
        with atomic_path(outdir / f"{split}_samples.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, x=x, **({"y": y} if y is not None else {}), **samples)   # savez would append .npz
        written.append(outdir / f"{split}_samples.npz")
        for i in range(samples["pred"].shape[0]):
            if samples["pred"].ndim == 4:            # 2-D: snapshots at chosen frames
                written.append(Path(plots.plot_snapshots_2d(
                    samples["true"][i], samples["pred"][i], x, y, samples["t"], outdir / f"{split}_snapshots_{i}.png",
                    f"{split} trajectory {i}")))
                continue
            written.append(Path(plots.plot_xt_maps(samples["true"][i], samples["pred"][i], x, samples["t"],
                                                   outdir / f"{split}_xt_{i}.png", f"{split} trajectory {i}")))
    return written
