"""The hybrid baseline on 1D Burgers: the built-in solver on a coarse grid with a learned correction ("solver in the
loop", Um et al. 2020), trained by the same stage loop and evaluated by the same evaluation as UPS (issue 19 item 4).

Variants: ``--config configs/hybrid_burgers.py`` (32 cells), ``:cpu`` (the 2-core budget), ``:test`` (seconds).
``--config.model.hybrid.cells=16`` for the 16-cell hybrid. Data, splits, evaluation protocol and checkpoints are
those of ``configs/burgers32.py``: the model reads the last given frame (t = 0.45), restricts it to ``cells`` cell
averages, and rolls the coarse solver + correction over the 31 predicted frames (models/hybrid.py).

Why it is here: on 1-D Burgers a 16–32-cell finite-volume solve is more accurate than every surrogate trained on
2 cores (docs/benchmarks.md, "The solver at coarser resolutions"); a learned correction on top of that solver is the
strongest honest baseline and the one place McGreivy & Hakim's re-runs found a learned model beating a classical
solver at equal resolution. Its untrained form *is* the coarse solver (the correction starts at zero).

Training: the FNO baseline's autoregressive loss (per-step MSE summed over K = 8 rolled-out steps, gradients
through the solver) on windows of 9 frames from anywhere in the trajectory; AdamW with a warm-up/cosine schedule
sized to the stage (the schedule ends with the stage), no EMA (a short run: EMA 0.999 would still remember the
first updates), gradient clipping at 1 (the unrolled solver's gradient can spike at shocks).
"""

from pathlib import Path

import ml_collections as mlc

from ups_jax.config import import_user_file


def get_config(arg=None):
    if arg not in (None, "", "cpu", "test"):
        raise ValueError(f"unknown variant {arg!r}; choose one of: (none), cpu, test")
    base = import_user_file(str(Path(__file__).with_name("burgers32.py")), "config", example="configs/burgers32.py")
    cfg = base.get_config(arg)
    del cfg.model
    cfg.baseline.config = ""               # this is a baseline
    cfg.eval.ttc_preset = ""               # no refiner to draw TTC candidates from
    cfg.eval.refine = "none"              # the headline evaluation: this model alone (no refine stage)
    g = cfg.data.generate
    cfg.model = mlc.ConfigDict()
    cfg.model.kind = "hybrid"
    cfg.model.context_frames = 1
    cfg.model.normalize = False            # the solver works in physical units
    cfg.model.hybrid = mlc.ConfigDict(dict(
        cells=32,                          # the coarse grid (must divide the protocol's 256 points)
        domain=(g.x_min, g.x_max),         # the data's domain (cell width = length / cells)
        advective_scale=g.advective_scale,  # the data's flux (2 = PDEBench's released files)
        cfl=0.25,                          # PDEBench's Courant number
        max_substeps=16,                   # solver steps per frame step (32 cells, |u| <= 2.5, dt 0.05 need ~10)
        width=64, kernel=5, depth=5,       # the correction CNN (~63 k parameters), as the physical-residual probe
    ))
    cfg.stage_order = ("hybrid",)
    del cfg.stages
    cfg.stages = mlc.ConfigDict()
    cfg.stages.hybrid = base._stage(
        steps=4000, batch_size=32, lr=1e-3, warmup_steps=100, weight_decay=1e-4, grad_clip=1.0, ema_decay=0.0,
        eval_every=500, log_every=50, trainable=("correction",), rollout_steps=8, query_points=0,
        losses=mlc.ConfigDict(dict(recon=0.0, one_step=0.0, latent=0.0, rollout=1.0)))
    if arg == "cpu":
        cfg.stages.hybrid.update(dict(steps=1000, warmup_steps=50, eval_every=250, log_every=50))
    elif arg == "test":
        cfg.model.hybrid.update(dict(cells=8, width=8, depth=3, kernel=3, max_substeps=8))
        cfg.stages.hybrid.update(dict(steps=6, batch_size=4, warmup_steps=1, eval_every=3, log_every=2,
                                      rollout_steps=2))
    return cfg
