"""UPS on 2-D incompressible Navier–Stokes (vorticity on the unit torus, the FNO paper's benchmark; issue 20).

The data are made on first use by the built-in pseudo-spectral generator (``ups_jax.data.ns2d``, docs/data.md,
"2-D Navier–Stokes") into ``data.default_dir``: ν = 1e-3, forcing 0.1 (sin 2π(x+y) + cos 2π(x+y)), ω₀ from the
FNO paper's Gaussian random field, one frame per time unit. Protocol as the paper: the first 10 frames are given,
the rest predicted autoregressively; the comparison table has the FNO-2D baseline (configs/fno_ns2d.py: 12 modes,
width 20, per-step autoregressive over the 10 given frames) and persistence beside UPS.

Variants:

* (full): the FNO paper's setting (1200 trajectories: 960 train, 120 val, 120 test; t = 0..50, 51 frames; solved at
  256², stored at 64²): a GPU run, not run here.
* ``:cpu`` (target: generation + training of UPS and FNO-2D + evaluation within ~20 min on 2 CPU cores; measured
  under heavy load the training took 2740 s, and ~15 min is estimated from process CPU time, docs/benchmarks.md;
  generation 113 s): **smaller than the paper**: 128 trajectories of t = 0..20 (21 frames: 10 given, 11
  predicted), solved at 128² and stored at **32²** (every 4th point), 400 UPS updates and 135 FNO-2D updates (the
  same training wall time: configs/fno_ns2d.py).
* ``:test`` (seconds; the unit tests): 24 trajectories of 8 frames at 16² (solved at 32²), 3 given frames.

The model is the one UPS code path of configs/burgers32.py (``data.dims = 2`` makes the encoder patchify the 2-D
grid into the same T latent tokens, √T x √T patches, and the decoder read 2-D points with 2-D Fourier features;
the latent operator is unchanged). Only the core stage is configured: the refine stages (corrector, student,
steady, TTC) are not wired for 2-D (docs/models.md).
"""

from pathlib import Path

import ml_collections as mlc

from ups_jax.config import import_user_file


def _burgers32(arg):
    module = import_user_file(str(Path(__file__).with_name("burgers32.py")), "config", example="configs/burgers32.py")
    return module, module.get_config(arg)


def get_config(arg=None):
    if arg not in (None, "", "cpu", "test"):
        raise ValueError(f"unknown variant {arg!r}; choose one of: (none), cpu, test")
    base, cfg = _burgers32(arg)           # runtime, checkpoint, logging and cost sections as the 1-D config

    # ---- data: 2-D Navier–Stokes, generated on first use (data/default_ns2d.py) ----
    cfg.data.dims = 2
    cfg.data.default_dir = "data/ns2d"
    # max_dt 0 = the generator's default (1e-2 · 256 / solve_grid); frames at t = 0, 1, ..., frames - 1
    cfg.data.generate = mlc.ConfigDict(dict(nu=1e-3, samples=1200, frames=51, solve_grid=256, grid=64, max_dt=0.0,
                                            forcing_amplitude=0.1, seed=0))
    cfg.data.reduced_resolution = 1
    cfg.data.reduced_resolution_t = 1
    cfg.data.test_fraction = 0.1
    cfg.data.val_fraction = 0.1

    # ---- model: the UPS of burgers32, tokens of 2-D patches ----
    for name in ("corrector", "student", "steady"):     # refine stages: not wired for 2-D
        del cfg.model[name]
        del cfg.stages[name]
    del cfg.ttc
    cfg.eval.ttc_preset = ""
    cfg.eval.refine = "none"              # the headline evaluation: this model alone (no refine stage)
    cfg.model.context_frames = 1          # vorticity is the whole state: one frame determines the next
    cfg.model.latent_tokens = 64          # an 8 x 8 token grid: 8 x 8 patches of the 64² grid
    cfg.model.latent_dim = 96             # with raw_skip: 64 raw patch values + 32 learned features
    # raw skip (the patch's grid values pass through) + a LayerNorm on the learned dims only: without it the
    # latent term's scale was free and the :cpu run diverged after warmup (latent loss 6e-3 → 2e2 → 3e4 in 100
    # steps, docs/benchmarks.md); the raw dims keep each token's amplitude
    cfg.model.encoder = mlc.ConfigDict(dict(width=32, kernel_size=3, num_conv=2, fourier_freqs=(1, 2, 4),
                                            final_norm=True, raw_skip=True))
    cfg.model.operator.update(dict(group_size=96, num_heads=4))
    cfg.model.decoder = mlc.ConfigDict(dict(hidden_dim=64, num_heads=4, num_layers=0, mlp_hidden=64,
                                            fourier_freqs=(1, 2, 4, 8), local_freqs=(), local_mlp=64,
                                            local_neighbors=1))
    cfg.stage_order = ("operator",)
    cfg.stages.operator.update(dict(steps=20000, batch_size=32, lr=1e-3, warmup_steps=200, eval_every=1000,
                                    rollout_steps=4, pushforward_steps=0, query_points=1024,
                                    # not burgers32.py:cpu's pushforward/rel-L2 choices (measured on 1-D only)
                                    pushforward_sampling="fixed", pushforward_grad_steps=0, rollout_loss="mse",
                                    trainable=("encoder", "operator", "decoder"),
                                    losses=mlc.ConfigDict(dict(recon=0.0, one_step=1.0, latent=1.0, rollout=1.0))))
    del cfg.stages.codec

    # ---- evaluation: the FNO paper's protocol (10 given frames, relative L2 per trajectory) ----
    cfg.eval.initial_step = 10
    cfg.eval.batch_size = 20
    cfg.eval.val_max_trajectories = 32
    cfg.baseline = mlc.ConfigDict(dict(config="configs/fno_ns2d.py", workdir=""))

    if arg == "cpu":
        cfg.data.default_dir = "data/ns2d_cpu"
        cfg.data.generate.update(dict(samples=128, frames=21, solve_grid=128, grid=32))
        # 4 x 4 tokens of 8 x 8 points on the 32² grid: the operator's cost grows with T (64 tokens were 4x
        # slower per step on 2 cores), the raw skip carries the 64 grid values of a patch, 32 learned dims besides
        cfg.model.latent_tokens = 16
        cfg.model.latent_dim = 96
        cfg.stages.operator.update(dict(steps=400, batch_size=16, warmup_steps=50, eval_every=100, log_every=25,
                                        query_points=256))
        cfg.eval.val_max_trajectories = 13
        cfg.baseline.config = "configs/fno_ns2d.py:cpu"
    elif arg == "test":
        cfg.data.default_dir = "data/ns2d_test"
        cfg.data.generate.update(dict(samples=24, frames=8, solve_grid=32, grid=16, seed=3))
        cfg.data.test_fraction = 0.25
        cfg.data.val_fraction = 0.25
        cfg.model.latent_tokens = 16      # 4 x 4 tokens of 4 x 4 points
        cfg.model.latent_dim = 24
        cfg.model.encoder.update(dict(width=8, fourier_freqs=(1, 2)))
        cfg.model.operator.update(dict(hidden_dim=16, group_size=16, num_heads=2, cond_dim=8, depths=(1, 1, 1)))
        cfg.model.decoder.update(dict(hidden_dim=16, num_heads=2, mlp_hidden=16, fourier_freqs=(1, 2),
                                      local_mlp=16))
        cfg.stages.operator.update(dict(steps=60, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=30,
                                        log_every=10, rollout_steps=2, query_points=0))
        cfg.eval.initial_step = 3
        cfg.eval.batch_size = 8
        cfg.eval.plot_trajectories = 1
        cfg.eval.val_max_trajectories = 6
        cfg.baseline.config = "configs/fno_ns2d.py:test"
    return cfg
