"""Issue 18, defect 5: the evaluation's outputs (``<split>.json``, ``<split>_samples.npz``, the PNGs) are written
atomically under a temporary name of their own: a failed write leaves the previous file whole, and another
evaluation's temporary file is never touched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ups_jax.eval.evaluate import write_report


def _report(value: float):
    steps, nx, n = 3, 8, 1
    results = {"split": "test", "protocol": {"dt": 0.05},
               "model": {"nrmse": value, "nrmse_per_step": [value] * steps},
               "persistence": {"nrmse": 1.0, "nrmse_per_step": [1.0] * steps}}
    samples = {"true": np.full((n, steps, nx), value), "pred": np.zeros((n, steps, nx)),
               "t": np.arange(steps) * 0.05}
    return results, samples, np.linspace(-1, 1, nx)


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_a_failed_write_leaves_every_previous_output_whole(tmp_path, monkeypatch):
    written = write_report(*_report(0.5), tmp_path)
    assert sorted(p.name for p in written) == ["test.json", "test_nrmse_vs_step.png", "test_samples.npz",
                                               "test_xt_0.png"]
    before = _files(tmp_path)

    def half_written(f, **arrays):     # a full disk half-way through the archive
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_written)
    with pytest.raises(OSError, match="No space left"):
        write_report(*_report(0.25), tmp_path)
    after = _files(tmp_path)
    assert after.pop("test.json") != before.pop("test.json")       # the JSON and the curve were replaced whole
    assert json.loads((tmp_path / "test.json").read_text())["model"]["nrmse"] == 0.25
    after.pop("test_nrmse_vs_step.png"), before.pop("test_nrmse_vs_step.png")
    assert after == before                                          # the npz and the x-t map: the old ones, whole
    np.testing.assert_array_equal(np.load(tmp_path / "test_samples.npz")["true"], np.full((1, 3, 8), 0.5))

    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("renderer failed")

    monkeypatch.undo()
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer failed"):
        write_report(*_report(0.125), tmp_path)
    assert (tmp_path / "test_nrmse_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"   # still a whole PNG
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]   # no temporary file left


def test_another_evaluations_temporary_file_is_left_alone(tmp_path):
    """Two evaluations of one run: the old fixed ``test.json.tmp`` of one was renamed away by the other."""
    other = tmp_path / "test.json.tmp"
    tmp_path.mkdir(exist_ok=True)
    other.write_text('{"another evaluation": "in flight"}')
    write_report(*_report(0.5), tmp_path)
    assert other.read_text() == '{"another evaluation": "in flight"}'
    assert json.loads((tmp_path / "test.json").read_text())["model"]["nrmse"] == 0.5
