"""The data the dry run trains on: the run's own (``RunData``), or synthetic fields with the config's grid, splits
and batch shapes when no data file is to be read."""

from __future__ import annotations

import numpy as np


class _SyntheticDataset:
    """The reader interface WindowLoader needs (nt, nx, nu, dt, read), over in-memory fields."""

    def __init__(self, traj: np.ndarray, nu: np.ndarray, dt: float):
        self._traj = traj
        self.nu = nu
        self.dt = dt
        self.num_trajectories, self.nt, self.nx = traj.shape[:3]
        if traj.ndim == 4:                         # 2-D: (N, T, X, Y)
            self.spatial_shape = traj.shape[2:]
        self.trajectories_per_file = [self.num_trajectories]

    def read(self, indices) -> np.ndarray:
        return self._traj[np.asarray(indices, np.int64)]


class SyntheticData:
    """Stand-in for ``RunData`` with the config's grid, splits and batch shapes (--skip-data, or the default
    data is not generated yet): the same programs compile and run, only the values differ."""

    synthetic = True

    def __init__(self, cfg, *, use_files: bool = False, max_per_file: int = 0):
        from ups_jax.checks import grid
        from ups_jax.data.pdebench import make_splits

        nx, nt, counts = grid(cfg, use_files=use_files)
        if max_per_file:          # shapes only (validate --compile): a few trajectories per file suffice
            counts = [min(int(c), max_per_file) for c in counts]
        n = int(sum(counts))
        rng = np.random.default_rng(0)
        grid = nx if isinstance(nx, tuple) else (nx,)       # a 2-D config's grid is (X, Y) (checks.grid)
        nx = grid[0]
        x = (np.arange(nx) + 0.5) / nx
        k = rng.integers(1, 4, size=(n, 1, 1))
        t = np.arange(nt)[None, :, None] * 0.05
        traj = (np.sin(2 * np.pi * k * (x[None, None] - 0.1 * t)) * np.exp(-t)).astype(np.float32)
        if len(grid) == 2:                                   # the same waves, travelling along x, on every y
            traj = np.repeat(traj[..., None], grid[1], axis=-1)
        self.dataset = _SyntheticDataset(traj, np.full((n,), cfg.data.generate.nu, np.float32), 0.05)
        self.splits = make_splits(counts, test_fraction=cfg.data.test_fraction, val_fraction=cfg.data.val_fraction)
        self.norm = {"mean": float(traj[self.splits["train"]].mean()), "std": float(traj[self.splits["train"]].std())}
        self.x = (x * 2 - 1).astype(np.float32)
        self.x01 = x.astype(np.float32)
        self.grid, self.dims, self.y = grid, len(grid), None
        if len(grid) == 2:
            from ups_jax.data.grids import mesh01

            self.x01, self.y = mesh01(grid), ((np.arange(grid[1]) + 0.5) / grid[1]).astype(np.float32)
        self.Lx = 2.0
        self.paths = []

    def trajectories(self, split, limit=0):
        idx = np.asarray(self.splits[split])
        idx = idx[:limit] if limit else idx
        return self.dataset.read(idx), self.dataset.nu[idx]

    def prepare_batch(self, batch):
        from ups_jax.training.run_data import RunData

        return RunData.prepare_batch(self, batch)


def load_data(cfg, skip_data: bool, notes: list):
    if skip_data:
        notes.append("--skip-data: synthetic fields with the grid of data.generate (no data file read; data "
                     "loading and validate-data are not in the estimate)")
        return SyntheticData(cfg)
    if not cfg.data.paths:
        from ups_jax.data.default import default_data_path

        if not default_data_path(cfg).exists():
            notes.append(f"default data not generated yet ({default_data_path(cfg)}): train will generate it first "
                         "(not in the estimate; see docs/benchmarks.md); timing on synthetic fields with the same "
                         "grid")
            return SyntheticData(cfg)
    from ups_jax.training.run_data import RunData

    data = RunData(cfg)
    data.synthetic = False
    return data
