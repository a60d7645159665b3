"""ups_jax.eval.plots writes valid PNG files and closes its figures."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ups_jax.eval.plots import plot_loss_curves, plot_nrmse_curves, plot_series, plot_xt_maps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert os.path.isfile(path)
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_plot_xt_maps_writes_png(tmp_path):
    x = np.linspace(0, 1, 64, endpoint=False)
    t = np.arange(11) * 0.05
    true = np.sin(2 * np.pi * (x[None, :] - 0.3 * t[:, None]))
    pred = true + 0.05 * np.cos(6 * np.pi * x)[None, :]
    out = plot_xt_maps(true, pred, x, t, tmp_path / "sub" / "xt.png", "Burgers sample 0")
    assert out == os.fspath(tmp_path / "sub" / "xt.png")
    _assert_png(out)
    assert plt.get_fignums() == []  # figure closed


def test_plot_xt_maps_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError):
        plot_xt_maps(np.zeros((3, 4)), np.zeros((3, 5)), np.arange(4), np.arange(3), tmp_path / "bad.png", "")
    with pytest.raises(ValueError):
        plot_xt_maps(np.zeros((3, 4)), np.zeros((3, 4)), np.arange(5), np.arange(3), tmp_path / "bad.png", "")


def test_curve_plots_write_png(tmp_path):
    steps = np.arange(1, 32)
    curves = {"model": list(1e-3 * np.exp(0.05 * steps)), "persistence": list(0.05 * np.sqrt(steps))}
    _assert_png(plot_nrmse_curves(curves, 0.05, tmp_path / "nrmse.png"))
    _assert_png(plot_nrmse_curves(curves, None, tmp_path / "nrmse_steps.png"))
    series = {"train": (np.arange(100), 1.0 / (1 + np.arange(100))), "val": ([0, 50, 99], [1.0, 0.05, 0.02])}
    _assert_png(plot_loss_curves(series, tmp_path / "loss.png", "MSE"))
    _assert_png(plot_series({"lr": (np.arange(10), np.linspace(0, 1e-3, 10))}, tmp_path / "lr.png", "lr"))
    # zeros cannot be drawn on a log axis: dropped, no exception
    _assert_png(plot_loss_curves({"a": ([0, 1, 2], [0.0, 1.0, 0.5])}, tmp_path / "zeros.png", "loss"))
    assert plt.get_fignums() == []
