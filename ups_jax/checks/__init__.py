"""Config checks run before any compute: by ``train`` (``training.pipeline.preflight``, refuses to start on an
error), by ``driver validate`` (which adds the workdir and compiled-memory checks) and by ``driver dry-run``.

This package sits below both ``ups_jax.training`` and ``ups_jax.driver`` and imports neither (the import graph has
no cycle; tests/test_reliability.py checks it). Each check has a category, a severity (error / warning / info),
a one-line message (the value it checked, whether it passed or not) and the fix.

Coverage of the original's 29 checks (ups-original.md §8.1) — kept, corrected, dropped:
  A1 latent dim set ............ kept (model.latent_dim ≥ 1)
  A2 pdet.input_dim == latent .. dropped: the operator's input width *is* model.latent_dim (no second key)
  A3 pdet.hidden_dim defined ... kept, plus hidden % group and group % heads (what the model really needs)
  A4/A5 diffusion dims ......... added with the diffusion stages (not in this config); A5's coupling
                                 diffusion.hidden == operator.hidden was arbitrary and is not reintroduced
  A6/A7 TTC decoder dims ....... dropped: TTC uses the model's own trained decoder (shared by construction)
  D1 task / D2 split / D3 root . kept as: files exist and pass validate-data, eval.split valid, splits non-empty
                                 (computed exactly as the trainer splits, per file)
  D4 parallel encoding ......... dropped: no worker processes (one prefetch thread)
  H1 batch-size heuristic ...... replaced by XLA's measured memory of the compiled step (--compile / dry-run)
  H2 compile+rollout ........... dropped: always passed; no such hazard under jax.jit
  P1-P5 lr/wd/epochs/clip ...... kept per stage with corrected ranges; out of range is a warning, impossible
                                 values (lr ≤ 0, negative clip) are errors; grad_clip=0 means off (no crash)
  P6 time stride 1-4 ........... kept as data.reduced_resolution_t and the window fitting in the trajectory
  C1 checkpoint dir exists ..... dropped: failed on every fresh machine; replaced by --workdir shape checks
  C2/C3 checkpoints found ...... kept (info), plus every parameter shape vs this config and data fingerprint
  W1 W&B enabled ............... kept as info/warning (never fails: W&B is optional)
  W2 project / W3 entity ....... W2 kept (warning); W3 dropped (entity is optional in W&B)
  S1 operator epochs > 0 ....... kept as: stage_order non-empty, known stages, steps ≥ 1
  S2/S3 ........................ kept as: loss weights, trainable modules exist, a module a stage uses but does
                                 not train was trained by an earlier stage (no random frozen teacher)
  E1 evaluation enabled ........ dropped: evaluation always runs
Added: token/grid divisibility, Nyquist of Fourier features, window vs frames, batch vs available windows,
split fractions, EMA decay, warm-up vs steps, accumulation, query sampling, logging cadence, retention
settings, eval protocol vs frames, rollout mode, an existing default dataset that differs from data.generate,
checkpoint cadence, the runtime section (data-parallel devices vs batch sizes, compute dtype, NaN guard).
"""

from __future__ import annotations

# the names callers import from ups_jax.checks (the package was one module)
from ups_jax.checks.data import check_data, grid
from ups_jax.checks.model import FNO_SUBMODULES, OPTIONAL_SUBMODULES, SUBMODULES, check_architecture, check_fno
from ups_jax.checks.report import CATEGORIES, SEVERITIES, Check, Checks, errors, format_table, sort_checks
from ups_jax.checks.runtime import (COMPUTE_DTYPES, WANDB_MODES, check_logging, check_runtime, data_parallel_size,
                                    resolve_wandb_mode)
from ups_jax.checks.stages import LOSS_TERMS, baseline_spec, check_stages, check_ttc_and_baseline


def run_checks(cfg, *, skip_data: bool = False) -> tuple[list[Check], int | None]:
    """The checks ``train`` runs before it starts, grouped by category; also returns the grid size (cells after
    reduction; None when the data cannot be read). ``skip_data``: do not open any data file."""
    c = Checks()
    nx, nt, n_train = check_data(cfg, c, skip_data=skip_data)
    check_architecture(cfg, c, nx)
    check_stages(cfg, c, nx, nt, n_train)
    check_ttc_and_baseline(cfg, c)
    check_logging(cfg, c)
    check_runtime(cfg, c)
    return c.items, nx
