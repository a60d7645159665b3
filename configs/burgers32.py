"""UPS on 1D Burgers (PDEBench layout): the 32-dim "production" config of the original, with its defects fixed.

Variants (big_vision style): ``--config configs/burgers32.py`` (full size, GPU), ``:cpu`` (its one stage trains
in ~9 min on 2 quiet CPU cores; ≤ 15 min with data generation and evaluation), ``:test`` (seconds; unit tests).
Override anything with ``--config.a.b=value``.

Every width comes from here; nothing in the models is hard-coded (ups-original.md §12 item 10).
"""

import ml_collections as mlc

from ups_jax.stage_kinds import REFINE_STAGES  # the stages on the frozen core, in training order

# Stage names in training order: the core (codec, operator), then the stages on the frozen core (_refine_stages).
STAGES = ("codec", "operator")


def _stage(**kw) -> mlc.ConfigDict:
    s = mlc.ConfigDict()
    s.steps = 2000                 # optimizer steps (after accumulation)
    s.batch_size = 32              # windows per step
    s.lr = 1e-3
    s.warmup_steps = 100
    s.end_lr_factor = 0.05         # cosine decays to lr * end_lr_factor
    s.weight_decay = 1e-4
    s.b1 = 0.9
    s.b2 = 0.999
    s.grad_clip = 1.0              # global-norm clipping
    s.accum_steps = 1              # micro-batches averaged per optimizer update (cadences count updates)
    s.ema_decay = 0.999            # EMA of params (optax.ema); evaluation uses EMA params; 0 = no EMA (raw params)
    s.optimizer = "adamw"          # or 'adam_l2': torch Adam's weight_decay (L2 added to the gradient)
    s.schedule = "warmup_cosine"   # or 'step': lr * lr_gamma^floor(update / lr_step_every) (torch StepLR)
    s.lr_step_every = 0            # 'step' schedule: updates between decays
    s.lr_gamma = 0.5               # 'step' schedule: factor per decay
    s.eval_every = 250             # validation + checkpoint every N steps (on the val split, never test)
    s.patience = 0                 # early stop after N evals without improvement (0 = never)
    s.log_every = 50
    s.trainable = ("encoder", "decoder", "operator")
    s.rollout_steps = 1            # K: window = h + P + K frames; K > 1 adds the unrolled loss (lax.scan)
    s.pushforward_steps = 0        # P: roll P steps without gradient first, train the K after (training/losses.py)
    s.pushforward_sampling = "fixed"  # depth p per window: 'fixed' (p = P) or 'uniform' (p ~ U{0..P}, 0 = clean)
    s.pushforward_curriculum = 0   # C > 0: the max depth grows as min(P, P·step // C) (MP-PDE); 0 = off
    s.pushforward_grad_steps = 0   # G: gradient through the last G of the p pushforward steps (0 = none, ≤ P)
    s.rollout_loss = "mse"         # one-step/rollout terms: 'mse' (normalised) or 'rel_l2' (per-frame, as nRMSE)
    s.recon_windows = "all"        # recon term over 'all' P+K+1 windows (each encoded) or 'given' (z0 only: no extra
                                   # encoder call; training/losses.py). On :cpu's operator (recon 0.1, 3 seeds)
                                   # 'given' left the codec floor level and the test rollout 7 % worse: not used
    s.input_noise = 0.0            # σ of Gaussian noise on the (normalised) context frames in training
    s.query_points = 0             # decoder queries per frame in training (0 = every grid point); UPT-style sampling
    s.losses = mlc.ConfigDict(dict(recon=1.0, one_step=1.0, latent=0.1, rollout=1.0))
    s.update(kw)
    return s


def get_config(arg=None):
    if arg not in (None, "", "cpu", "test"):
        raise ValueError(f"unknown variant {arg!r}; choose one of: (none), cpu, test")
    cfg = mlc.ConfigDict()
    cfg.seed = 0
    cfg.variant = arg or "full"

    # ---- data (PDEBench 1D Burgers layout) ----
    cfg.data = mlc.ConfigDict()
    # HDF5 files or directories; empty = the built-in default dataset (generated on first use into default_dir).
    cfg.data.paths = ()
    cfg.data.default_dir = "data/burgers_nu0.01"
    # u_t + a (u^2/2)_x = (nu/pi) u_xx on (x_min, x_max): a = 2 on (-1, 1) is PDEBench's released files (their
    # generator before commit fd12554); a = 1 on (0, 1) is PDEBench's current code (ups_jax.data.generate)
    cfg.data.generate = mlc.ConfigDict(dict(nu=0.01, samples=512, nx=1024, seed=2022, x_min=-1.0, x_max=1.0,
                                            advective_scale=2.0))
    cfg.data.reduced_resolution = 4      # 1024 -> 256 cells (PDEBench Burgers protocol)
    cfg.data.reduced_resolution_t = 5    # 201 -> 41 frames, dt = 0.05
    cfg.data.test_fraction = 0.1         # first 10 % of each file = test (as PDEBench)
    cfg.data.val_fraction = 0.1          # next 10 % = validation (model selection; PDEBench has none)
    cfg.data.prefetch = 2

    # ---- model ----
    cfg.model = mlc.ConfigDict()
    cfg.model.kind = "ups"               # 'ups' (this file) or 'fno' (configs/fno_burgers.py, the baseline)
    cfg.model.context_frames = 1         # h: the encoder reads the last h given frames (as channels)
    cfg.model.latent_dim = 32            # D
    cfg.model.latent_tokens = 32         # T
    # per-sample amplitude: the codec sees u / RMS(u) and carries log RMS as the last latent dim (models/encoder.py)
    cfg.model.scale_norm = False
    cfg.model.encoder = mlc.ConfigDict(dict(width=64, kernel_size=5, num_conv=2, fourier_freqs=(1, 2, 4, 8),
                                            final_norm=True, raw_skip=False))
    cfg.model.operator = mlc.ConfigDict(dict(
        hidden_dim=96, group_size=12, num_heads=6, depths=(1, 1, 1), mlp_ratio=2.0,
        cond_dim=64,                     # width of the (dt, nu) conditioning embedding (AdaLN)
        pos_embed=True,                  # learned token positions (the original had none; see models/operator.py)
        advance_scale=True,              # with model.scale_norm: the operator also steps log s (False: kept fixed)
    ))
    cfg.model.decoder = mlc.ConfigDict(dict(
        hidden_dim=96, num_heads=4, num_layers=2, mlp_hidden=128, fourier_freqs=(1, 2, 4, 8, 16, 32),
        local_freqs=(),                  # optional sub-patch readout basis (models/decoder.py); off by default
        local_mlp=0, local_neighbors=1,
    ))

    # ---- training stages ----
    cfg.stage_order = STAGES
    cfg.stages = mlc.ConfigDict()
    cfg.stages.codec = _stage(steps=1000, lr=2e-3, trainable=("encoder", "decoder"), rollout_steps=1,
                              losses=mlc.ConfigDict(dict(recon=1.0, one_step=0.0, latent=0.0, rollout=0.0)))
    # The operator stage trains the operator on the codec's frozen latent space (losses: latent one-step against
    # the encoder's next state, decoded one-step and K-step rollout through the frozen decoder). Training the
    # codec jointly here degraded reconstruction (recon MSE 5e-4 -> 5e-3) and left the one-step error at the
    # persistence level on the :cpu budget (val nRMSE 0.53 at step 500); see docs/benchmarks.md.
    cfg.stages.operator = _stage(steps=6000, lr=1e-3, rollout_steps=4, trainable=("operator",),
                                 losses=mlc.ConfigDict(dict(recon=0.0, one_step=1.0, latent=1.0, rollout=1.0)))

    # ---- evaluation (PDEBench Burgers protocol, physical space) ----
    cfg.eval = mlc.ConfigDict()
    cfg.eval.split = "test"
    cfg.eval.initial_step = 10           # given frames; metrics over the predicted ones
    cfg.eval.batch_size = 50           # PDEBench evaluates Burgers in batches of 50 (cRMSE/max/fRMSE are per batch)
    cfg.eval.max_trajectories = 0        # 0 = all in the split
    cfg.eval.plot_trajectories = 3
    cfg.eval.corr_threshold = 0.8        # correlation time threshold
    cfg.eval.rollout_mode = "latent"     # 'latent' (encode once) or 'reencode' (decode/encode every step)
    # the refiner of the headline evaluation (eval/<split>.json, `python -m ups_jax.evaluate`): 'none' (the operator
    # alone), 'corrector' or 'student' -- the rollout the default pipeline stands for; the comparison table
    # (eval/table.json) has every finished refiner's row either way
    cfg.eval.refine = "none"
    cfg.eval.val_max_trajectories = 64   # validation during training: this many val trajectories

    # ---- checkpoints / logging ----
    # resume points: at every validation, plus every_steps optimizer updates / every_minutes of wall clock (0 = off)
    cfg.checkpoint = mlc.ConfigDict(dict(keep_latest=2, keep_best=2, every_steps=0, every_minutes=10.0))
    # runtime (ups_jax/training/loop.py): data_parallel = 'auto' (the most local devices dividing every batch
    # size), 'off' or a device count; compute_dtype = 'float32' or 'bfloat16' (forward/backward in bf16 with
    # float32 params and optimizer state; for GPUs); a non-finite step is skipped, max_nonfinite_steps in a row stop;
    # steps_per_dispatch = optimizer updates per compiled call ('auto': the largest N <= 32 dividing the stage's
    # steps, log_every, eval_every and checkpoint.every_steps — training/step.py); compilation_cache = the persistent
    # XLA cache ('auto' = ~/.cache/ups_jax/jax, a directory, or '' = off; ups_jax/compilation.py)
    cfg.runtime = mlc.ConfigDict(dict(data_parallel="auto", compute_dtype="float32", max_nonfinite_steps=20,
                                      steps_per_dispatch="auto", compilation_cache="auto"))
    cfg.logging = mlc.ConfigDict(dict(wandb_project="ups_jax", wandb_mode="auto", progress=True))

    # ---- cost estimation (driver dry-run) ----
    cfg.cost = mlc.ConfigDict()
    cfg.cost.price_per_hour = mlc.ConfigDict(dict(H100=2.89, A100=1.89, H200=2.59))
    cfg.cost.efficiency = 0.2            # assumed fraction of peak TF32 FLOP/s a small model reaches (not measured)
    cfg.cost.min_step_s = 5e-4           # assumed floor per jitted step on a GPU (dispatch/launch latency)

    if arg == "cpu":
        # <= 10 min of training on 2 CPU cores. What the measurements in docs/benchmarks.md ("Accuracy levers") kept:
        # - raw skip: the first patch dims of each token are the newest frame's grid values, the decoder starts as
        #   their interpolation (no reconstruction floor), and no LayerNorm on the encoder output (it removed the
        #   per-token amplitude);
        # - one joint stage: encoder, operator and decoder trained together on the one-step + K-step rollout +
        #   latent losses (a separately trained, frozen codec was worse at the same wall time);
        # - operator attention over all 96 channels in one group (4 heads): ~3x cheaper on CPU than 8 groups of 12;
        # - decoder: the local MLP readout of the query's token and its neighbours, no cross-attention (3-4x
        #   cheaper, and the raw path already carries the grid values);
        # - UPT-style query sampling (64 of 256 points per frame) in training;
        # - pushforward P = 2 (Brandstetter et al. 2022): the K = 4 trained steps start from the model's own 2-step
        #   prediction (first measured without gradient through it), so it learns to correct its own drift: test
        #   nRMSE 0.167 -> 0.130 (seed 0) for 20 % more stage time; P = 1 was as good on test, worse on val and
        #   over the full horizon;
        # - the depth drawn per window, p ~ U{0..2} (0 = a clean one-step start), the per-frame relative-L2
        #   rollout loss (what nRMSE measures) instead of the MSE, and the gradient through the last of the p
        #   pushforward steps (issue 19, docs/benchmarks.md "Pushforward depth and the loss"; seed 0, 1500
        #   updates, against fixed P = 2 with MSE): best val nRMSE 0.1887 -> 0.1302, test 0.1340 -> 0.1053, full
        #   horizon 0.2213 -> 0.2036, step 1 0.107 -> 0.064. A curriculum on the max depth was worse on val.
        # - 3000 updates (was 1500): the whole <= 10-minute budget. Measured on the quiet 2-core box (2026-12-05,
        #   benchmarks/step_cost.py): 0.152 s per update, so 1500 updates used ~4 of its 10 minutes; with 3000 the
        #   stage takes ~8 min (docs/benchmarks.md "The :cpu budget, measured quiet"). Cadences and warm-up scale
        #   with it (validation every 600, log every 100, warm-up 200: what benchmarks/accuracy.py --budgets 2 ran).
        cfg.model.encoder.update(dict(width=32, raw_skip=True, final_norm=False))
        cfg.model.operator.update(dict(group_size=96, num_heads=4))
        cfg.model.decoder.update(dict(mlp_hidden=96, num_layers=0, local_mlp=64))
        for name in STAGES:
            cfg.stages[name].query_points = 64
        cfg.stage_order = ("operator",)
        cfg.stages.codec.update(dict(steps=1200, batch_size=32, eval_every=400, warmup_steps=50, lr=3e-3))
        cfg.stages.operator.update(dict(steps=3000, batch_size=16, eval_every=600, log_every=100, warmup_steps=200,
                                        lr=1e-3, rollout_steps=4,
                                        pushforward_steps=2, pushforward_sampling="uniform", rollout_loss="rel_l2",
                                        pushforward_grad_steps=1, trainable=("encoder", "operator", "decoder")))
    elif arg == "test":
        cfg.data.default_dir = "data/burgers_test"
        cfg.data.generate = mlc.ConfigDict(dict(nu=0.01, samples=20, nx=256, seed=7, x_min=-1.0, x_max=1.0,
                                                advective_scale=2.0))
        cfg.data.reduced_resolution = 4   # 256 -> 64 cells
        cfg.data.test_fraction = 0.2
        cfg.data.val_fraction = 0.2
        cfg.model.latent_dim = 8
        cfg.model.latent_tokens = 8
        cfg.model.encoder.width = 8
        cfg.model.operator.update(dict(hidden_dim=16, group_size=8, num_heads=2, cond_dim=8))
        cfg.model.decoder.update(dict(hidden_dim=16, num_heads=2, num_layers=1, mlp_hidden=16,
                                      fourier_freqs=(1, 2, 4, 8)))   # 64-cell grid: stay below Nyquist
        for name in STAGES:
            cfg.stages[name].update(dict(steps=6, batch_size=4, warmup_steps=1, eval_every=3, log_every=2))
        cfg.stages.operator.rollout_steps = 2
        cfg.eval.batch_size = 8
        cfg.eval.plot_trajectories = 1
        cfg.eval.val_max_trajectories = 4
        cfg.logging.progress = False
        cfg.logging.wandb_mode = "disabled"
    _refine_stages(cfg, arg)
    return cfg


def _refine_stages(cfg, arg):
    """Diffusion residual corrector, its distilled student and the steady prior (models/corrector.py,
    models/steady.py, training/refiner_losses.py), test-time compute presets (inference/ttc.py) and the FNO
    baseline trained by the same command for the comparison table (training/comparison.py)."""
    refiner = dict(hidden_dim=64, group_size=8, num_heads=2, depths=(1, 1, 1), mlp_ratio=2.0, cond_dim=32)
    cfg.model.corrector = mlc.ConfigDict(dict(
        refiner,
        # 'latent': the diffusion residual corrector on z (models/corrector.py; measured on :cpu: +16.7 ± 4.2 %
        # worse than the operator alone, docs/benchmarks.md); 'field': the periodic CNN on the decoded field, rollout
        # state (z, û) (models/field_corrector.py, issue 19 item 2; it has no student: refuse the student stage)
        kind="latent",
        # the field corrector's network (models/field_cnn.py) and its state update: 'encode' (z = E(û), variant a)
        # or 'carry' (z stays the operator's, û is fed beside it, variant b)
        field=mlc.ConfigDict(dict(width=64, kernel=5, depth=5, state="carry")),
        refine_steps=3,          # K: refinement levels after the level-0 prediction (K + 1 calls per step)
        min_noise_std=1e-2,      # σ_K; levels σ_k = min_noise_std^(k/K) (PDE-Refiner uses 4e-7 on KS fields)
        residual_scale=0.1,      # unit of the latent residual z* − F(z) (logged as diag/residual_rms_scaled)
    ))
    cfg.model.student = mlc.ConfigDict(dict(steps=1))   # refiner calls per step (1 or 2); the corrector's architecture
    cfg.model.steady = mlc.ConfigDict(dict(refiner, iterations=4))
    # After the variant's core stages. Issue 19's rule: a refine stage stays in the default pipeline only if it
    # improves the operator's 31-step nRMSE by >= 10 % and by more than twice the seed spread. Measured on :cpu
    # (docs/benchmarks.md): the latent corrector +16.7 ± 4.2 % (worse), its student +14 %, the field corrector
    # (state 'encode', 3000 updates) -39.0 ± 8.9 % -- so :cpu trains the field corrector (below), and the full
    # config, where none is measured, leaves corrector and student out (add them with
    # --config.stage_order=codec,operator,corrector,student,steady); the steady prior is a predictor of the final
    # state (12 % better than the rollout there), not a rollout refiner, and stays. :test keeps every stage so
    # that each is tested.
    cfg.stage_order = tuple(cfg.stage_order) + (REFINE_STAGES if arg == "test" else ("steady",))

    def stage(**kw):
        s = _stage(**kw)
        del s.losses              # these stages have one objective each (training/refiner_losses.py)
        return s

    # pushforward_steps P: the corrector/student train on the operator's own p-step states, p ~ U{0..P}
    # rollout_loss ('mse' or 'rel_l2', as the operator's): read by the field corrector only (the latent one's loss
    # is denoising; the checks refuse a non-default value with it)
    cfg.stages.corrector = stage(steps=3000, lr=1e-3, trainable=("corrector",), pushforward_steps=4)
    cfg.stages.student = stage(steps=1500, lr=5e-4, trainable=("student",), pushforward_steps=4)
    cfg.stages.steady = stage(steps=1500, lr=1e-3, batch_size=16, trainable=("steady",))
    cfg.stages.steady.latent_weight = 0.1

    cfg.ttc = mlc.ConfigDict()
    # candidates from 'student' (S calls each) or 'corrector' (K + 1); with model.corrector.kind='field' (no student)
    # the TTC always uses the field corrector (inference/ttc.py: candidates are scaled corrections)
    cfg.ttc.refine = "student"
    cfg.ttc.gamma = 1.0                      # discount of lookahead rewards
    cfg.ttc.weights = mlc.ConfigDict(dict(mass=1.0, energy=1.0, tv=1.0))   # inference/rewards.py
    # The original's tiers (candidates / beam / budget; horizon 2 as its shipped TTC eval config). Budget = model
    # evaluations per rollout step and trajectory (operator steps, refiner calls, decoder calls), a hard limit.
    cfg.ttc.presets = mlc.ConfigDict(dict(
        default=mlc.ConfigDict(dict(candidates=4, beam_width=3, horizon=2, budget=100)),
        enhanced=mlc.ConfigDict(dict(candidates=8, beam_width=3, horizon=2, budget=150)),
        aggressive=mlc.ConfigDict(dict(candidates=16, beam_width=5, horizon=2, budget=300)),
        # issue 19's TTC bar: at most 8x the operator's 2 evaluations per step (16 with the row's initial decode);
        # the plan shrinks horizon, then beams, then candidates to fit the budget (inference/ttc.py make_plan)
        light=mlc.ConfigDict(dict(candidates=4, beam_width=2, horizon=1, budget=15)),
    ))
    cfg.eval.ttc_preset = "default"          # the TTC row of the comparison table ('' = none)

    # The FNO baseline, trained into WORKDIR/baselines/fno (or baseline.workdir, relative to WORKDIR) by the same
    # command on the same data and protocol; '' = no FNO row. Off in :cpu: PDEBench's FNO at the :cpu budget would
    # double the demo's wall time (turn it on with --config.baseline.config=configs/fno_burgers.py:cpu).
    cfg.baseline = mlc.ConfigDict(dict(config="configs/fno_burgers.py", workdir=""))

    if arg == "cpu":
        # :cpu trains the joint operator stage (~8.5 min quiet) and then the one refine stage that paid on it, the
        # field corrector with z = E(û) (issue 19 item 2; docs/benchmarks.md "The field corrector on the 3000-update
        # :cpu operator"): 3000 updates of 16 windows, P = 2, the per-frame relative-L2 loss, ~3 min quiet. Test
        # nRMSE of the 31-step rollout -39.0 ± 8.9 % against the operator alone (3 seeds; 0.0424 ± 0.0055), full
        # horizon -32.6 ± 6.3 % (benchmarks/stage_table.py). Chosen on val (seed 0) over state='carry' (-23.2 ± 2.0 %, 3 seeds), P = 4 and
        # 1500 updates (-27.5 %, 95 s). The latent corrector and its student stay configured, on request:
        #   --config.model.corrector.kind=latent --config.stage_order=operator,corrector,student,steady
        cfg.stage_order = tuple(s for s in cfg.stage_order if s not in REFINE_STAGES) + ("corrector",)
        cfg.model.corrector.kind = "field"
        cfg.model.corrector.field.state = "encode"
        cfg.eval.refine = "corrector"
        # the TTC row at <= 8x the operator's evaluations per step (15 of 16; 'default' is 70, ~4x the wall time of
        # the demo's whole evaluation); measured over the corrected rollout: -0.1 % (31-step), -1.4 % (full), 3 seeds
        cfg.eval.ttc_preset = "light"
        cfg.stages.corrector.update(dict(steps=3000, batch_size=16, eval_every=250, log_every=50, warmup_steps=100,
                                         pushforward_steps=2, rollout_loss="rel_l2"))
        cfg.stages.student.update(dict(steps=400, batch_size=32, eval_every=200, warmup_steps=20))
        cfg.stages.steady.update(dict(steps=400, eval_every=200, warmup_steps=20))
        cfg.baseline.config = ""
    elif arg == "test":
        for name in REFINE_STAGES:
            cfg.stages[name].update(dict(steps=6, batch_size=4, warmup_steps=1, eval_every=3, log_every=2))
        cfg.stages.corrector.pushforward_steps = 1
        cfg.stages.student.pushforward_steps = 1
        small = dict(hidden_dim=16, group_size=8, num_heads=2, cond_dim=8, depths=(1,))   # one layer: fast compiles
        cfg.model.corrector.update(dict(small, refine_steps=2))
        cfg.model.corrector.field.update(dict(width=8, kernel=3, depth=2))
        cfg.model.steady.update(dict(small, iterations=2))
        cfg.baseline.config = "configs/fno_burgers.py:test"
        # one-step TTC horizon in :test: the lookahead doubles the beam search's compile time (tests/test_ttc.py
        # tests the lookahead on a constructed case)
        cfg.ttc.presets.default.update(dict(beam_width=2, horizon=1))
