"""Data checks: the files (validate-data), the grid after reduction, the splits and the evaluation protocol."""

from __future__ import annotations

from pathlib import Path

from ups_jax.checks.report import Checks
from ups_jax.errors import DataError, UserError


def _cells(nx) -> str:
    return "x".join(map(str, nx)) if isinstance(nx, tuple) else str(nx)


def _default_file(cfg) -> Path:
    from ups_jax.data.default import default_data_path

    return default_data_path(cfg)


def grid(cfg, *, use_files: bool = True):
    """(nx, nt, trajectories per file) after the reader's reductions: from the data files (``data.paths``, else
    the default dataset if it was generated already), else from the generator config. For a 2-D config
    (``data.dims = 2``) nx is the grid (X, Y), read by the 2-D reader (a file of the other dimension is a
    ``DataError`` naming it)."""
    from ups_jax.data.grids import config_dims

    paths = list(cfg.data.paths)
    if use_files and not paths and _default_file(cfg).exists():
        paths = [str(_default_file(cfg))]
    if config_dims(cfg) == 2:
        return _grid_2d(cfg, paths if use_files else [])
    if use_files and paths:
        from ups_jax.data.grids import open_run_dataset

        d = open_run_dataset(cfg, paths)     # PDEBenchDataset; a 2-D file is named as such (data.dims)
        try:
            return d.nx, d.nt, list(d.trajectories_per_file)
        finally:
            d.close()
    g = cfg.data.generate
    rr, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    return -(-g.nx // rr), -(-201 // rt), [g.samples]


def _grid_2d(cfg, paths):
    if paths:
        from ups_jax.data.grids import open_run_dataset, spatial_shape

        d = open_run_dataset(cfg, paths)
        try:
            return spatial_shape(d), d.nt, list(d.trajectories_per_file)
        finally:
            d.close()
    g = cfg.data.generate
    rr, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    return (-(-g.grid // rr),) * 2, -(-g.frames // rt), [g.samples]


def _generator_rows(cfg, c: Checks, default) -> None:
    """The default dataset's info and generator-grid rows (1-D: data.generate.nx; 2-D: data.generate.grid)."""
    from ups_jax.data.grids import config_dims

    D, g, rr = "data", cfg.data.generate, cfg.data.reduced_resolution
    two = config_dims(cfg) == 2
    n, key = (g.grid, "grid") if two else (g.nx, "nx")
    c.add(D, "default data", True, f"default dataset {'present' if default.exists() else 'will be generated'}"
          f": {default} (ν={g.nu}, {g.samples} samples, {key}={n})", severity="info")
    c.add(D, "generator grid", n % rr == 0 and g.samples >= 1 and n >= 1,
          f"data.generate.{key}={n} is not a multiple of data.reduced_resolution={rr}"
          if n % rr else f"data.generate.samples={g.samples}, {key}={n}",
          f"make {key} ≥ 1 a multiple of reduced_resolution, samples ≥ 1",
          passed=f"data.generate.{key}={n} / data.reduced_resolution={rr} = {n // max(rr, 1)} cells"
                 + (" per axis" if two else ""))


def check_data(cfg, c: Checks, *, skip_data: bool = False):
    """Returns (nx, nt, trajectories per file) or (None, None, None) when the data cannot be used."""
    D = "data"
    paths = list(cfg.data.paths)
    default = _default_file(cfg)
    g = cfg.data.generate
    c.add(D, "reduction", cfg.data.reduced_resolution >= 1 and cfg.data.reduced_resolution_t >= 1,
          f"data.reduced_resolution={cfg.data.reduced_resolution}, reduced_resolution_t="
          f"{cfg.data.reduced_resolution_t}", "use ≥ 1")
    c.add(D, "prefetch", cfg.data.prefetch >= 0, f"data.prefetch={cfg.data.prefetch}", "use ≥ 0 (0 = no thread)")
    if not all(x.ok for x in c.items[-2:]):
        return None, None, None
    if skip_data:
        c.add(D, "data files", True, "skipped (--skip-data): grid from data.generate", severity="info")
    elif paths:
        missing = [p for p in paths if not Path(p).exists()]
        if not c.add(D, "files exist", not missing, f"data.paths not found: {', '.join(missing)}",
                     "fix data.paths or generate data with python -m ups_jax.data.generate",
                     passed=f"{len(paths)} path(s) exist"):
            return None, None, None
        from ups_jax.data.validation import validate_files

        try:
            rows = validate_files(paths)
        except DataError as e:       # e.g. a directory without HDF5 files
            c.add(D, "validate-data", False, str(e), "fix data.paths")
            return None, None, None
        fails = [r for r in rows if r.get("status") == "FAIL"]
        warns = [r for r in rows if r.get("status") == "WARN"]
        fmt = lambda rs: "; ".join(f"{Path(r['file']).name}: {r['check']}: {r['detail']}" for r in rs[:3]) + (
            f" (+{len(rs) - 3} more)" if len(rs) > 3 else "")
        c.add(D, "validate-data", not fails, fmt(fails),
              "run python -m ups_jax.driver validate-data PATH for details",
              passed=f"{len({r['file'] for r in rows})} file(s) pass validate-data (NaN/Inf scan of every sample)")
        if warns:
            c.add(D, "validate-data warnings", False, fmt(warns), "see python -m ups_jax.driver validate-data PATH",
                  severity="warning")
        if fails:
            return None, None, None
    else:
        _generator_rows(cfg, c, default)
    from ups_jax.data.grids import GridMismatch

    try:
        nx, nt, counts = grid(cfg, use_files=not skip_data)
    except GridMismatch as e:           # the files' dimension or grid does not fit the config (data.dims, patches)
        c.add(D, "grid", False, e.problem, e.fix)
        return None, None, None
    except (UserError, OSError, ValueError) as e:
        c.add(D, "grid", False, f"cannot read the grid: {e}", "run python -m ups_jax.driver validate-data on the files")
        return None, None, None
    if not skip_data and not paths and default.exists():
        from ups_jax.data.default import default_data_mismatch

        problem = default_data_mismatch(cfg, default)
        c.add(D, "default data matches", problem is None, problem or "",
              "move the file aside to regenerate it, or set data.generate to the file's parameters",
              passed=f"{default}: {sum(counts)} samples, {_cells(nx)} cells × {nt} frames after reduction, made as "
                     f"data.generate asks")
    tf, vf = cfg.data.test_fraction, cfg.data.val_fraction
    ok_fracs = 0 < tf < 1 and 0 < vf < 1 and tf + vf < 1
    c.add(D, "split fractions", ok_fracs, f"data.test_fraction={tf}, val_fraction={vf}",
          "use 0 < test_fraction, val_fraction and test + val < 1")
    n_train = None
    if ok_fracs:
        from ups_jax.data.pdebench import make_splits

        try:
            s = make_splits(counts, test_fraction=tf, val_fraction=vf)
            n_train = len(s["train"])
            c.add(D, "splits non-empty", True, f"{sum(counts)} trajectories → train {n_train}, val {len(s['val'])}, "
                  f"test {len(s['test'])}")
        except UserError as e:
            c.add(D, "splits non-empty", False, str(e), "use more trajectories or larger fractions")
    e = cfg.eval
    c.add(D, "eval.split", e.split in ("train", "val", "test"), f"eval.split={e.split!r}",
          "choose train, val or test")
    c.add(D, "eval.initial_step", 0 < e.initial_step < nt,
          f"eval.initial_step={e.initial_step} with {nt} frames per trajectory (after reduced_resolution_t)",
          f"use 1..{nt - 1}")
    c.add(D, "eval sizes", e.batch_size >= 1 and e.max_trajectories >= 0 and e.val_max_trajectories >= 0
          and e.plot_trajectories >= 0, f"eval.batch_size={e.batch_size}, max_trajectories={e.max_trajectories}, "
          f"val_max_trajectories={e.val_max_trajectories}, plot_trajectories={e.plot_trajectories}",
          "batch_size ≥ 1, the others ≥ 0 (0 = all / none)")
    c.add(D, "eval.rollout_mode", e.rollout_mode in ("latent", "reencode"), f"eval.rollout_mode={e.rollout_mode!r}",
          "choose latent or reencode")
    c.add(D, "eval.corr_threshold", 0 < e.corr_threshold < 1, f"eval.corr_threshold={e.corr_threshold}",
          "use a value in (0, 1), e.g. 0.8")
    if e.split == "train":
        c.add(D, "eval split held out", False, "eval.split='train' measures training data",
              "evaluate on test (or val)", severity="warning")
    return nx, nt, n_train
