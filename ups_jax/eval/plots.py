"""Evaluation and training figures (PNG; never opens a window).

Every function writes one PNG, creates the parent folder if needed and returns the path as a ``str``. Figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas directly: no pyplot, so importing this module
neither selects a backend nor registers figures (no global state changes; the caller's matplotlib is untouched).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ups_jax.files import atomic_path

__all__ = ["plot_loss_curves", "plot_nrmse_curves", "plot_series", "plot_snapshots_2d", "plot_xt_maps", "snapshot_frames"]

_DPI = 120


def _figure(**kwargs) -> Figure:
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)     # the PNG renderer, attached to this figure only
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    with atomic_path(path) as tmp:     # a failed or interrupted save never leaves half a PNG in place of the old one
        fig.savefig(tmp, dpi=_DPI, format="png")
    return path


def _finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def plot_xt_maps(
    true: Any,
    pred: Any,
    x: Any,
    t: Any,
    path: str | os.PathLike,
    title: str = "",
) -> str:
    """Three x-t panels: truth, prediction (shared colour scale) and |prediction - truth|.

    Args:
      true, pred: (T, X) fields of one trajectory.
      x: (X,) cell coordinates; t: (T,) times of the frames.
      path: output PNG; title: figure title.
    """
    y = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"true and pred must both be (T, X); got {y.shape} and {p.shape}")
    if y.shape != (ts.size, xs.size):
        raise ValueError(f"fields are {y.shape} but len(t)={ts.size}, len(x)={xs.size}")

    err = np.abs(p - y)
    vmin, vmax = _finite_range(y, p)
    _, emax = _finite_range(err)
    # pcolormesh with nearest shading centres each cell on its coordinate (works for a single frame too).
    fig = _figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    panels = [
        (y, "truth", "viridis", vmin, vmax),
        (p, "prediction", "viridis", vmin, vmax),
        (err, "|prediction - truth|", "magma", 0.0, max(emax, 1e-300)),
    ]
    for ax, (field, name, cmap, lo, hi) in zip(axes, panels):
        mesh = ax.pcolormesh(xs, ts, field, shading="nearest", cmap=cmap, vmin=lo, vmax=hi)
        fig.colorbar(mesh, ax=ax, label="u" if cmap == "viridis" else "|error|")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.set_ylabel("t")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def snapshot_frames(steps: int, count: int = 4) -> list[int]:
    """``count`` frame indices spread over ``steps`` predicted frames: the first, the last and evenly between."""
    return sorted({int(round(k)) for k in np.linspace(0, steps - 1, min(count, steps))})


def plot_snapshots_2d(
    true: Any,
    pred: Any,
    x: Any,
    y: Any,
    t: Any,
    path: str | os.PathLike,
    title: str = "",
    frames: Sequence[int] | None = None,
) -> str:
    """Vorticity snapshots of one 2-D trajectory: rows truth, prediction (shared colour scale) and |prediction −
    truth|, one column per chosen frame (default :func:`snapshot_frames`: first, last and two between).

    Args:
      true, pred: (T, X, Y) fields; x: (X,), y: (Y,) grid points; t: (T,) times of the frames.
    """
    yv = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    xs, ys = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (x, y))
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    if yv.ndim != 3 or yv.shape != p.shape:
        raise ValueError(f"true and pred must both be (T, X, Y); got {yv.shape} and {p.shape}")
    if yv.shape != (ts.size, xs.size, ys.size):
        raise ValueError(f"fields are {yv.shape} but len(t)={ts.size}, len(x)={xs.size}, len(y)={ys.size}")
    frames = list(frames) if frames is not None else snapshot_frames(ts.size)
    err = np.abs(p - yv)
    vmin, vmax = _finite_range(yv[frames], p[frames])
    _, emax = _finite_range(err[frames])
    fig = _figure(figsize=(3.2 * len(frames) + 1.5, 8.4))
    axes = np.asarray(fig.subplots(3, len(frames), sharex=True, sharey=True, squeeze=False))
    rows = [(yv, "truth", "RdBu_r", vmin, vmax), (p, "prediction", "RdBu_r", vmin, vmax),
            (err, "|error|", "magma", 0.0, max(emax, 1e-300))]
    for r, (field, name, cmap, lo, hi) in enumerate(rows):
        for c, k in enumerate(frames):
            ax = axes[r, c]
            # field[k] is (X, Y): transpose so that x runs horizontally
            mesh = ax.pcolormesh(xs, ys, field[k].T, shading="nearest", cmap=cmap, vmin=lo, vmax=hi)
            ax.set_aspect("equal")
            ax.set_title(f"{name}, t = {ts[k]:g}", fontsize=9)
            if r == 2:
                ax.set_xlabel("x")
            if c == 0:
                ax.set_ylabel("y")
        fig.colorbar(mesh, ax=list(axes[r]), label="vorticity" if r < 2 else "|error|")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_series(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    ylabel: str,
    *,
    xlabel: str = "step",
    logy: bool = False,
    title: str = "",
) -> str:
    """Generic line plot of named (x, y) series, e.g. gradient norms or the learning rate.

    With ``logy`` the non-positive values are dropped (they cannot be drawn on a log axis).
    """
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drew = False
    for name, (xs, ys) in series.items():
        xa = np.asarray(xs, dtype=np.float64).reshape(-1)
        ya = np.asarray(ys, dtype=np.float64).reshape(-1)
        if xa.shape != ya.shape:
            raise ValueError(f"series {name!r}: x has {xa.size} points, y has {ya.size}")
        keep = np.isfinite(ya) & np.isfinite(xa)
        if logy:
            keep &= ya > 0
        if np.any(keep):
            ax.plot(xa[keep], ya[keep], label=str(name), lw=1.4)
            drew = True
    if logy and drew:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if drew:
        ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_loss_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    ylabel: str = "loss",
    logy: bool = True,
    *,
    title: str = "",
) -> str:
    """Training/validation loss curves: ``series`` maps a name to (steps, values)."""
    return plot_series(series, path, ylabel, xlabel="training step", logy=logy, title=title)


def plot_nrmse_curves(
    curves: Mapping[str, Sequence[float]],
    dt: float | None,
    path: str | os.PathLike,
    *,
    title: str = "nRMSE vs rollout time",
) -> str:
    """Per-step nRMSE curves (e.g. model and persistence) on a log y axis.

    ``curves[name][k]`` is the nRMSE after ``k + 1`` predicted steps; the x axis is ``(k + 1) * dt`` (rollout
    time) or the step number when ``dt`` is None.
    """
    series = {}
    for name, vals in curves.items():
        v = np.asarray(vals, dtype=np.float64).reshape(-1)
        steps = np.arange(1, v.size + 1, dtype=np.float64)
        series[name] = (steps * dt if dt is not None else steps, v)
    xlabel = f"rollout time (step x dt, dt = {dt:g})" if dt is not None else "rollout step"
    return plot_series(series, path, "nRMSE", xlabel=xlabel, logy=True, title=title)
