"""Rollout metrics in physical space: PDEBench's ``metric_func`` set, Frobenius relative L2, correlation time.

All inputs are *physical-space* fields (de-normalised), numpy or jax arrays, of shape ``(B, T, X)`` or
``(B, T, X, C)`` where ``T`` counts **predicted steps only**: the caller slices the ``initial_step`` context
frames away first, as PDEBench does (``metric_func(pred[..., initial_step:, :], ...)``). Everything is
computed in numpy float64.

PDEBench semantics (``pdebench/models/metrics.py::metric_func``, 1D branch), per channel ``c`` and step ``t``:

* ``err_mean[b,t] = sqrt(mean_x (p-y)^2)``; **RMSE_t** ``= mean_b err_mean``.
* ``nrm[b,t] = sqrt(mean_x y^2)``; **nRMSE_t** ``= mean_b (err_mean / nrm)`` (per-sample, per-step relative
  L2; *not* the Frobenius norm over the space-time block, see ``rel_l2`` below). No epsilon: an identically
  zero target frame gives inf/nan, as in PDEBench.
* **cRMSE_t** ``= sqrt(mean_b (sum_x p - sum_x y)^2) / nx`` (RMS over samples of the error of the spatial mean).
* **max_error_t** ``= max_{b,x} |p-y|``. The reported scalar is the *mean over t* of these per-step maxima
  (``torch.mean(err_Max, dim=[0, -1])``), not the max over t.
* **bRMSE_t** ``= mean_b sqrt(((p[0]-y[0])^2 + (p[-1]-y[-1])^2) / 2)`` (first and last cell only).
* **fRMSE**: ``E[k,t] = sqrt(mean_b |rfft(p)-rfft(y)|_k^2) / nx * Lx`` (the square root is taken per mode,
  *before* band averaging); band value = mean of ``E`` over the band's modes: low ``[0, 4)``, mid ``[4, 12)``,
  high ``[12, nx//2+1)`` (the high band includes the Nyquist mode). An empty band (``nx < 24`` for high,
  ``nx < 8`` for mid) gives nan, as ``torch.mean`` of an empty slice does. ``Lx`` is **1.0** by convention
  (``ups_jax.eval.evaluate.FRMSE_LX``, the accumulator's default): PDEBench's training scripts call
  ``metric_func(..., Lx=1.0)`` (``fno/train.py``, ``unet/train.py``) whatever the domain, so fRMSE bands here
  are comparable with PDEBench's tables.
* With channels, every metric is averaged over ``c`` (per step) and the scalars over ``c`` and ``t``.

2-D fields (``dims=2``: ``(B, T, X, Y)`` or ``(B, T, X, Y, C)``), as ``metric_func``'s 2D branch: nRMSE, RMSE and
the max error over all X·Y points; **cRMSE** divides by ``nx·ny``; **bRMSE_t** ``= mean_b sqrt((Σ_y (d[0,y]² +
d[-1,y]²) + Σ_x (d[x,0]² + d[x,-1]²)) / (2nx + 2ny))`` (the four edges of the square); **fRMSE**: ``E[k,t] =
sqrt(mean_b Σ_{(i,j) in shell k} |fftn(p - y)|²_{ij}) / (nx·ny) · Lx·Ly`` with the shells
``k = ⌊√(i² + j²)⌋ < min(nx, ny)//2`` over ``0 ≤ i < nx//2, 0 ≤ j < ny//2`` only — PDEBench's loop visits the
quadrant of non-negative frequencies below Nyquist, so a mode ``(k, -l)`` (e.g. ``cos 2π(x − y)``) never enters
any band (kept as PDEBench has it, and tested). Bands as in 1-D: the mean of ``E`` over shells ``[0, 4)``,
``[4, 12)``, ``[12, …)``; ``Lx = Ly = 1`` by the same convention.

Headline values (:class:`MetricAccumulator`) are statistics of the **whole evaluated set**, in which every
trajectory weighs the same and which therefore do not depend on how the set was cut into batches: nRMSE, RMSE,
bRMSE, relative L2 and correlation are means over trajectories; cRMSE and fRMSE are the formulas above with
``mean_b`` taken over all trajectories; max_error is the maximum over all trajectories. PDEBench's own numbers
are per-batch values (``batch_size=50`` for Burgers) averaged over batches with equal weights, divided by
``itot = n_batches - 1`` (an ``n/(n-1)`` inflation); with an uneven last batch (51 = 50 + 1) one trajectory then
weighs as much as the other fifty. The accumulator also reports that batched value, clearly labelled
(``pdebench_batched``), with batches weighted by their size and divided by the number of trajectories. Weighted
so, the per-sample metrics (nRMSE, RMSE, bRMSE) equal the headline values; the batch statistics (cRMSE,
max_error, fRMSE) still depend on the batch size.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "PDEBENCH_KEYS",
    "MetricAccumulator",
    "gmean_nrmse",
    "pdebench_batch_metrics",
    "persistence_prediction",
]

# Scalar keys returned by pdebench_batch_metrics; the per-step arrays use the same names with a "_t" suffix.
PDEBENCH_KEYS = ("nrmse", "rmse", "crmse", "max_error", "brmse", "frmse_low", "frmse_mid", "frmse_high")


def _as_btxc(a: Any, name: str, dims: int = 1) -> np.ndarray:
    """Returns ``a`` as a float64 array of shape (B, T, *S, C); accepts (B, T, *S) or (B, T, *S, C), S = (X,) in
    1-D and (X, Y) in 2-D."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == dims + 2:
        arr = arr[..., None]
    if arr.ndim != dims + 3:
        grid = "X" if dims == 1 else "X, Y"
        raise ValueError(f"{name} must have shape (B, T, {grid}) or (B, T, {grid}, C), got {arr.shape}")
    return arr


def _pair(pred: Any, true: Any, dims: int = 1) -> tuple[np.ndarray, np.ndarray]:
    if dims not in (1, 2):
        raise ValueError(f"dims={dims}: the metrics are defined for 1-D and 2-D fields")
    p = _as_btxc(pred, "pred", dims)
    y = _as_btxc(true, "true", dims)
    if p.shape != y.shape:
        raise ValueError(f"pred and true shapes differ: {p.shape} vs {y.shape}")
    if 0 in p.shape[:-1]:
        raise ValueError(f"empty batch, time or space axis: {p.shape}")
    return p, y


def _space_axes(d: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, d.ndim - 1))          # (B, T, *S, C)


def _boundary_sq(d: np.ndarray) -> np.ndarray:
    """Mean squared error on the domain's boundary, (B, T, *S, C) → (B, T, C): the first and last cell in 1-D, the
    four edges in 2-D (metric_func's err_BD before its square root)."""
    if d.ndim == 4:
        return (d[:, :, 0, :] ** 2 + d[:, :, -1, :] ** 2) / 2.0
    nx, ny = d.shape[2:4]
    edge_x = np.sum(d[:, :, 0] ** 2 + d[:, :, -1] ** 2, axis=2)          # x = first/last, summed over y
    edge_y = np.sum(d[:, :, :, 0] ** 2 + d[:, :, :, -1] ** 2, axis=2)    # y = first/last, summed over x
    return (edge_x + edge_y) / (2 * nx + 2 * ny)


def _spectrum_sq(d: np.ndarray) -> np.ndarray:
    """|FFT(p − y)|² per mode (1-D: rfft modes 0..nx//2) or summed over PDEBench's radial shells (2-D, see the
    module docstring): (B, T, *S, C) → (B, T, K, C)."""
    if d.ndim == 4:
        return np.abs(np.fft.rfft(d, axis=2)) ** 2
    nx, ny = d.shape[2:4]
    power = np.abs(np.fft.fftn(d, axes=(2, 3))) ** 2
    k_max = min(nx // 2, ny // 2)
    i, j = np.meshgrid(np.arange(nx // 2), np.arange(ny // 2), indexing="ij")
    shell = np.floor(np.sqrt(i ** 2 + j ** 2)).astype(int)
    out = np.zeros(d.shape[:2] + (k_max, d.shape[-1]))
    for k in range(k_max):
        ii, jj = np.nonzero(shell == k)
        out[:, :, k] = power[:, :, ii, jj].sum(axis=2)
    return out


def _scale_spectrum(e: np.ndarray, space: tuple[int, ...], Lx: float) -> np.ndarray:
    """``e / nx · Lx`` in 1-D, ``e / (nx·ny) · Lx·Ly`` (Ly = Lx) in 2-D: metric_func's normalisation."""
    if len(space) == 1:
        return e / space[0] * float(Lx)
    return e / (space[0] * space[1]) * (float(Lx) * float(Lx))


def _band_mean(err_f: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    """Mean over the mode axis (1) of ``err_f[:, lo:hi, :]``; nan where the band is empty. Returns (T, C)."""
    band = err_f[:, lo:hi, :]
    if band.shape[1] == 0:
        return np.full((err_f.shape[0], err_f.shape[2]), np.nan)
    return band.mean(axis=1)


def per_sample_nrmse(pred: Any, true: Any, axis: int = -1) -> np.ndarray:
    """nRMSE of each sample over ``axis`` (the grid): RMS(pred − true) / RMS(true), PDEBench's nRMSE before any
    mean over samples or steps. The one definition the validators, the steady table and the benchmarks use."""
    pred, true = np.asarray(pred), np.asarray(true)
    return np.sqrt(np.mean((pred - true) ** 2, axis)) / np.sqrt(np.mean(true ** 2, axis))


def pdebench_batch_metrics(
    pred: Any, true: Any, *, Lx: float, i_low: int = 4, i_high: int = 12, dims: int = 1
) -> dict[str, Any]:
    """PDEBench ``metric_func`` for one batch of predicted steps.

    Args:
      pred, true: physical-space fields, (B, T, X[, C]) (``dims=1``) or (B, T, X, Y[, C]) (``dims=2``); T =
        predicted steps only.
      Lx: domain length (the fRMSE scale factor; PDEBench passes the x-extent of the data; Ly = Lx in 2-D).
      i_low, i_high: fRMSE band edges (PDEBench defaults 4 and 12).

    Returns:
      ``'<key>_t'``: np.ndarray (T,) float64 per-step values (averaged over channels), and ``'<key>'``: python
      float, their mean over t, for key in :data:`PDEBENCH_KEYS`.
    """
    p, y = _pair(pred, true, dims)
    space = p.shape[2:-1]
    sp = _space_axes(p)
    d = p - y  # (B, T, *S, C)

    err_mean = np.sqrt(np.mean(d**2, axis=sp))  # (B, T, C)
    nrm = np.sqrt(np.mean(y**2, axis=sp))
    with np.errstate(divide="ignore", invalid="ignore"):
        nrmse = np.mean(err_mean / nrm, axis=0)  # (T, C)
    rmse = np.mean(err_mean, axis=0)
    crmse = np.sqrt(np.mean((p.sum(axis=sp) - y.sum(axis=sp)) ** 2, axis=0)) / np.prod(space)
    max_error = np.max(np.abs(d), axis=(0,) + sp)
    brmse = np.mean(np.sqrt(_boundary_sq(d)), axis=0)

    # FFT is linear, so FFT(p) - FFT(y) == FFT(p - y)
    err_f = _scale_spectrum(np.sqrt(np.mean(_spectrum_sq(d), axis=0)), space, Lx)  # (T, K, C)
    frmse_low = _band_mean(err_f, 0, i_low)
    frmse_mid = _band_mean(err_f, i_low, i_high)
    frmse_high = _band_mean(err_f, i_high, None)

    per_tc = {
        "nrmse": nrmse,
        "rmse": rmse,
        "crmse": crmse,
        "max_error": max_error,
        "brmse": brmse,
        "frmse_low": frmse_low,
        "frmse_mid": frmse_mid,
        "frmse_high": frmse_high,
    }
    out: dict[str, Any] = {}
    for key in PDEBENCH_KEYS:
        per_t = per_tc[key].mean(axis=1)  # mean over channels -> (T,)
        out[f"{key}_t"] = per_t
        out[key] = float(per_t.mean())
    return out


def _pearson_per_step(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation over space (X and C flattened) per sample and step; (B, T, X, C) -> (B, T).

    A zero-variance pair is defined as 1.0 if the two frames are identical and 0.0 otherwise (instead of nan).
    """
    b, t = p.shape[:2]
    pf = p.reshape(b, t, -1)
    yf = y.reshape(b, t, -1)
    pc = pf - pf.mean(axis=2, keepdims=True)
    yc = yf - yf.mean(axis=2, keepdims=True)
    cov = np.sum(pc * yc, axis=2)
    den = np.sqrt(np.sum(pc**2, axis=2) * np.sum(yc**2, axis=2))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / den
    degenerate = den == 0.0
    if np.any(degenerate):
        same = np.all(pf == yf, axis=2)
        corr = np.where(degenerate, np.where(same, 1.0, 0.0), corr)
    return corr


def _leading_count(values: np.ndarray, threshold: float) -> int:
    """Number of leading entries >= threshold (nan counts as below)."""
    n = 0
    for v in values:
        if not (v >= threshold):
            break
        n += 1
    return n


def _to_jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [float(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


class MetricAccumulator:
    """Streams batches of (pred, true) rollouts; reports whole-set (per-trajectory) metrics, batch-size invariant.

    ``update(pred, true)`` takes one batch (B, T, X[, C]) of predicted steps in physical space; every batch must
    have the same T, X and C. ``result()`` returns a JSON-serialisable dict:

    * PDEBench scalars (keys of :data:`PDEBENCH_KEYS`) over the whole set (see the module docstring): nrmse,
      rmse, brmse are means over trajectories; crmse and frmse_* are root-mean-squares over all trajectories;
      max_error is the max over all trajectories (each averaged over steps). None depends on the batching.
    * ``'nrmse_per_step'``, ``'rmse_per_step'``: per-step means over trajectories.
    * ``'nrmse_per_trajectory'``: each trajectory's nRMSE (mean over steps), in the order given.
    * ``'rel_l2'``: mean over trajectories of ``||p-y||_F / ||y||_F`` over each one's whole space-time block.
    * ``'rel_l2_global'``: ``||P-Y||_F / ||Y||_F`` over the whole evaluated set.
    * ``'corr_per_step'``: mean over trajectories of the Pearson correlation between p and y over space.
    * ``'corr_time'``: number of leading steps whose mean correlation is >= ``corr_threshold`` (multiply by the
      step's dt for a time); ``'corr_threshold'`` echoes the threshold.
    * ``'pdebench_batched'``: PDEBench's per-batch scalars, averaged over batches **weighted by batch size**
      (PDEBench weights batches equally and divides by ``n_batches - 1``), plus ``'batch_sizes'``.
    * ``'n_trajectories'``, ``'n_batches'``.
    """

    def __init__(self, Lx: float = 1.0, corr_threshold: float = 0.8, *, i_low: int = 4, i_high: int = 12,
                 dims: int = 1):
        self.Lx = float(Lx)
        self.dims = int(dims)        # 1: batches (B, T, X[, C]); 2: (B, T, X, Y[, C])
        self.corr_threshold = float(corr_threshold)
        self.i_low = int(i_low)
        self.i_high = int(i_high)
        self.reset()

    def reset(self) -> None:
        self._batch_sizes: list[int] = []
        self._shape: tuple[int, ...] | None = None  # (T, *S, C)
        self._batched_sums = {k: 0.0 for k in PDEBENCH_KEYS}   # sum_batches n_b * batch scalar
        self._sums: dict[str, np.ndarray] = {}                  # per-step sums over trajectories
        self._max: np.ndarray | None = None                     # (T, C) running max |p - y|
        self._spec_sq: np.ndarray | None = None                 # (T, K, C) sum_b |rfft(p - y)|^2
        self._nrmse_traj: list[np.ndarray] = []
        self._rel_l2: list[np.ndarray] = []
        self._err_sq_sum = 0.0
        self._true_sq_sum = 0.0

    @property
    def n_trajectories(self) -> int:
        return int(sum(self._batch_sizes))

    def update(self, pred: Any, true: Any) -> dict[str, Any]:
        """Adds one batch; returns that batch's :func:`pdebench_batch_metrics` dict."""
        p, y = _pair(pred, true, self.dims)
        shape = tuple(p.shape[1:])
        if self._shape is None:
            self._shape = shape  # type: ignore[assignment]
            t, c = shape[0], shape[-1]
            self._sums = {k: np.zeros(t) for k in ("nrmse", "rmse", "brmse", "corr")}
            self._sums["csum_sq"] = np.zeros((t, c))
            self._max = np.zeros((t, c))
            self._spec_sq = np.zeros(_spectrum_sq(np.zeros((1,) + shape)).shape[1:])
        elif shape != self._shape:
            what = "(T, X, C)" if self.dims == 1 else "(T, X, Y, C)"
            raise ValueError(f"batch shape {what} = {shape} differs from earlier batches {self._shape}")

        b = p.shape[0]
        m = pdebench_batch_metrics(p, y, Lx=self.Lx, i_low=self.i_low, i_high=self.i_high, dims=self.dims)
        for k in PDEBENCH_KEYS:
            self._batched_sums[k] += b * m[k]

        d = p - y
        sp = _space_axes(d)
        err_mean = np.sqrt(np.mean(d**2, axis=sp))                # (B, T, C)
        with np.errstate(divide="ignore", invalid="ignore"):
            nrmse_btc = err_mean / np.sqrt(np.mean(y**2, axis=sp))
        self._sums["nrmse"] += nrmse_btc.mean(axis=2).sum(axis=0)
        self._sums["rmse"] += err_mean.mean(axis=2).sum(axis=0)
        self._sums["brmse"] += np.sqrt(_boundary_sq(d)).mean(axis=2).sum(axis=0)
        self._sums["csum_sq"] += np.sum(d.sum(axis=sp) ** 2, axis=0)
        self._max = np.maximum(self._max, np.max(np.abs(d), axis=(0,) + sp))
        self._spec_sq += np.sum(_spectrum_sq(d), axis=0)
        self._nrmse_traj.append(nrmse_btc.mean(axis=(1, 2)))

        err_sq = np.sum(d.reshape(b, -1) ** 2, axis=1)
        true_sq = np.sum(y.reshape(b, -1) ** 2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self._rel_l2.append(np.sqrt(err_sq) / np.sqrt(true_sq))
        self._err_sq_sum += float(err_sq.sum())
        self._true_sq_sum += float(true_sq.sum())
        self._sums["corr"] += _pearson_per_step(p, y).sum(axis=0)
        self._batch_sizes.append(b)
        return m

    def result(self) -> dict[str, Any]:
        if not self._batch_sizes:
            raise ValueError("MetricAccumulator.result() called before any update()")
        n = self.n_trajectories
        space = self._shape[1:-1]
        nx = int(np.prod(space))
        per_step = {k: self._sums[k] / n for k in ("nrmse", "rmse", "brmse")}
        per_step["crmse"] = (np.sqrt(self._sums["csum_sq"] / n) / nx).mean(axis=1)
        per_step["max_error"] = self._max.mean(axis=1)
        err_f = _scale_spectrum(np.sqrt(self._spec_sq / n), space, self.Lx)   # (T, K, C), as pdebench_batch_metrics
        for band, lo, hi in (("low", 0, self.i_low), ("mid", self.i_low, self.i_high), ("high", self.i_high, None)):
            per_step[f"frmse_{band}"] = _band_mean(err_f, lo, hi).mean(axis=1)
        out: dict[str, Any] = {k: float(per_step[k].mean()) for k in PDEBENCH_KEYS}
        corr = self._sums["corr"] / n
        rel_global = (math.sqrt(self._err_sq_sum) / math.sqrt(self._true_sq_sum)
                      if self._true_sq_sum > 0.0 else math.nan)
        batched: dict[str, Any] = {k: self._batched_sums[k] / n for k in PDEBENCH_KEYS}
        batched["batch_sizes"] = list(self._batch_sizes)
        out.update(
            {
                "nrmse_per_step": per_step["nrmse"],
                "rmse_per_step": per_step["rmse"],
                "nrmse_per_trajectory": np.concatenate(self._nrmse_traj),
                "rel_l2": float(np.mean(np.concatenate(self._rel_l2))),
                "rel_l2_global": rel_global,
                "corr_per_step": corr,
                "corr_time": _leading_count(corr, self.corr_threshold),
                "corr_threshold": self.corr_threshold,
                "n_trajectories": n,
                "n_batches": len(self._batch_sizes),
                "pdebench_batched": {k: _to_jsonable(v) for k, v in batched.items()},
            }
        )
        return {k: _to_jsonable(v) for k, v in out.items()}


def persistence_prediction(u0: Any, steps: int) -> np.ndarray:
    """The persistence baseline u(t) = u(t0): (B, *S[, C]) -> (B, steps, *S[, C]) float64 (1-D or 2-D)."""
    u = np.asarray(u0, dtype=np.float64)
    if u.ndim not in (2, 3, 4):
        raise ValueError(f"u0 must have shape (B, X) or (B, X, C), got {u.shape}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return np.repeat(u[:, None], int(steps), axis=1)


def gmean_nrmse(nrmse_per_step: Sequence[float] | np.ndarray, max_steps: int = 100) -> float:
    """APEBench-style summary: geometric mean of the per-step nRMSE over the first ``max_steps`` steps.

    (``apebench._utils.aggregate_gmean(..., up_to=100)``.) A zero entry gives 0.0.
    """
    v = np.asarray(nrmse_per_step, dtype=np.float64).reshape(-1)[: int(max_steps)]
    if v.size == 0:
        raise ValueError("gmean_nrmse needs at least one step")
    if np.any(v < 0):
        raise ValueError("gmean_nrmse needs non-negative values")
    if np.any(v == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(v))))
