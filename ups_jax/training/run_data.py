"""``RunData``: a run's dataset with its splits, train-only normalisation and coordinates, as one object — what
training, evaluation and loading a finished run (training/restore.py) share."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ups_jax.data.default import ensure_default_data
from ups_jax.data.grids import grid_size, mesh01, open_run_dataset, spatial_shape
from ups_jax.data.pdebench import compute_normalization, make_splits
from ups_jax.errors import ConfigError


def normalize_fields(cfg) -> bool:
    """``model.normalize`` (default True): train on train-split z-scored fields; False = raw values."""
    value = cfg.get("model", {}).get("normalize", True)
    if not isinstance(value, bool):
        raise ConfigError(f"model.normalize={value!r}: use True (z-score the fields) or False (raw values)")
    return value


class RunData:
    """The dataset with its splits, train-only normalisation and coordinates, as one object."""

    def __init__(self, cfg, paths=None):
        paths = list(paths) if paths else ensure_default_data(cfg)
        self.paths = paths
        self.dataset = open_run_dataset(cfg, paths)      # the reader of the files' dimension, checked (data/grids.py)
        self.splits = make_splits(self.dataset, test_fraction=cfg.data.test_fraction,
                                  val_fraction=cfg.data.val_fraction)
        # model.normalize=False: the model sees raw fields (PDEBench's FNO recipe); the identity "normalisation"
        # then flows through every batch, validation, rollout and run_meta.json like real statistics do
        self.norm = (compute_normalization(self.dataset, self.splits["train"]) if normalize_fields(cfg)
                     else {"mean": 0.0, "std": 1.0})
        d = self.dataset
        self.Lx = float(d.x_max - d.x_min)
        self.x = np.asarray(d.x, np.float32)
        self.grid = spatial_shape(d)                     # (X,) or (X, Y)
        self.dims = len(self.grid)
        self.y = np.asarray(d.y, np.float32) if self.dims == 2 else None
        self.x01 = ((self.x - d.x_min) / self.Lx).astype(np.float32) if self.dims == 1 else mesh01(self.grid)

    @property
    def model_grid(self):
        """What ``build_model`` takes: X (1-D) or (X, Y) (2-D)."""
        return grid_size(self.grid)

    def trajectories(self, split: str, limit: int = 0):
        idx = np.asarray(self.splits[split])
        if limit:
            idx = idx[:limit]
        return self.dataset.read(idx), np.asarray(self.dataset.nu)[idx].astype(np.float32)

    def fingerprint(self) -> dict:
        return self.dataset.fingerprint()

    def prepare_batch(self, batch: dict) -> dict:
        u = (np.asarray(batch["u"], np.float32) - self.norm["mean"]) / self.norm["std"]
        return {"u": jnp.asarray(u), "dt": jnp.asarray(batch["dt"], jnp.float32),
                "nu": jnp.asarray(batch["nu"], jnp.float32)}
