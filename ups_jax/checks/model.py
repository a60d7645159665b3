"""Architecture checks: the widths, heads and tokens the model needs, and building the abstract model."""

from __future__ import annotations

from ups_jax.checks.report import Checks
from ups_jax.errors import UserError

SUBMODULES = ("encoder", "operator", "decoder")
FNO_SUBMODULES = ("fc0", "spectral", "pointwise", "fc1", "fc2")
HYBRID_SUBMODULES = ("correction",)     # models/hybrid.py: the solver has no parameters


OPTIONAL_SUBMODULES = ("corrector", "student", "steady")   # built when cfg.model has the section


def _submodules(cfg) -> tuple[str, ...]:
    from ups_jax.models import model_kind

    if model_kind(cfg) == "fno":
        return FNO_SUBMODULES
    if model_kind(cfg) == "hybrid":
        return HYBRID_SUBMODULES
    optional = tuple(m for m in OPTIONAL_SUBMODULES if cfg.model.get(m) is not None
                     and (m != "student" or cfg.model.get("corrector") is not None))
    return SUBMODULES + optional


def _build_check(cfg, c: Checks, nx: int | None, fallback_nx: int):
    """Whatever the explicit rules missed, building the abstract model (no allocation) will catch."""
    A = "architecture"
    if any(not x.ok and x.severity == "error" and x.category == A for x in c.items):
        return   # building would only repeat the first error
    try:
        from flax import nnx

        from ups_jax.models import build_model

        nnx.eval_shape(lambda: build_model(cfg, num_points=nx or fallback_nx, rngs=nnx.Rngs(0)))
        c.add(A, "model builds", True, "abstract model builds from cfg.model")
    except (ValueError, TypeError, UserError) as e:
        c.add(A, "model builds", False, f"model does not build: {e}", "fix the model section")


def check_hybrid(cfg, c: Checks, nx: int | None):
    """The coarse solver + correction (models/hybrid.py): raw fields, a coarse grid dividing the data's, 1-D."""
    A, hy = "architecture", cfg.model.get("hybrid")
    if not c.add(A, "hybrid section", hy is not None, "model.kind='hybrid' but cfg.model has no 'hybrid' section",
                 "start from configs/hybrid_burgers.py", passed="model.hybrid present"):
        return
    c.add(A, "hybrid raw fields", cfg.model.get("normalize", True) is False,
          f"model.kind='hybrid' with model.normalize={cfg.model.get('normalize', True)!r}: its solver needs "
          f"physical values", "set model.normalize=False", passed="model.normalize=False (the solver's units)")
    c.add(A, "hybrid context", int(cfg.model.get("context_frames", 1)) == 1,
          f"model.context_frames={cfg.model.get('context_frames')}: the solver starts from one frame",
          "set model.context_frames=1", passed="the hybrid reads the last given frame")
    if isinstance(nx, tuple):
        c.add(A, "hybrid dims", False, f"model.kind='hybrid' is the 1-D Burgers solver; the data are {len(nx)}-D",
              "use model.kind='ups' or 'fno' for 2-D data")
        return
    cells = int(hy.get("cells", 0))
    if c.add(A, "hybrid cells", cells >= 2, f"model.hybrid.cells={cells}", "use ≥ 2 cells") and nx is not None:
        c.add(A, "hybrid cells vs grid", nx % cells == 0, f"model.hybrid.cells={cells} does not divide the data's "
              f"{nx} points", f"use a divisor of {nx} ({', '.join(str(d) for d in range(2, nx) if nx % d == 0)})",
              passed=f"{nx} points → {cells} cells of {nx // cells}")
    return _build_check(cfg, c, nx, 64)


def check_fno(cfg, c: Checks, nx: int | None):
    f, A = cfg.model.fno, "architecture"
    c.add(A, "fno widths", f.width >= 1 and f.num_layers >= 1 and f.head_width >= 1 and f.padding >= 0,
          f"model.fno width={f.width}, num_layers={f.num_layers}, head_width={f.head_width}, padding={f.padding}",
          "width, num_layers, head_width ≥ 1 and padding ≥ 0")
    if isinstance(nx, tuple):         # 2-D (FNO2d): rfft2 modes per axis
        if c.add(A, "fno modes", f.modes >= 1, f"model.fno.modes={f.modes}", "use ≥ 1"):
            most = min(n + f.padding for n in nx) // 2
            c.add(A, "fno modes vs grid", f.modes <= most, f"model.fno.modes={f.modes} exceeds the {most} Fourier "
                  f"modes per axis of the grid {nx}", "use fewer modes", severity="warning",
                  passed=f"model.fno.modes={f.modes} of {most} per axis")
        return _build_check(cfg, c, nx, 64)
    if c.add(A, "fno modes", f.modes >= 1, f"model.fno.modes={f.modes}", "use ≥ 1") and nx is not None:
        c.add(A, "fno modes vs grid", f.modes <= (nx + f.padding) // 2 + 1,
              f"model.fno.modes={f.modes} exceeds the {(nx + f.padding) // 2 + 1} Fourier modes of the padded grid",
              "use fewer modes", severity="warning", passed=f"model.fno.modes={f.modes} of {(nx + f.padding) // 2 + 1}")
    from ups_jax.models.fno import INITS, fno_options

    opts = fno_options(f)
    c.add(A, "fno init", opts["init"] in INITS, f"model.fno.init={opts['init']!r}",
          f"use one of {', '.join(repr(i) for i in INITS)}", passed=f"model.fno.init={opts['init']!r}")
    lo_hi = opts["grid_range"]
    c.add(A, "fno grid range", len(lo_hi) == 2 and float(lo_hi[0]) < float(lo_hi[1]),
          f"model.fno.grid_range={lo_hi}", "use (lo, hi) with lo < hi, e.g. the data's (x_min, x_max)",
          passed=f"model.fno.grid_range={lo_hi}")
    _build_check(cfg, c, nx, 64)


def check_architecture(cfg, c: Checks, nx: int | None):
    from ups_jax.models import context_frames, model_kind

    A = "architecture"
    try:
        kind, h = model_kind(cfg), context_frames(cfg)
    except UserError as e:
        c.add(A, "model kind", False, str(e), "fix model.kind / model.context_frames")
        return
    c.add(A, "context frames", h <= cfg.eval.initial_step,
          f"model.context_frames={h} but the evaluation gives only eval.initial_step={cfg.eval.initial_step} frames",
          f"use model.context_frames ≤ {cfg.eval.initial_step} or raise eval.initial_step",
          passed=f"the model reads the last {h} of the {cfg.eval.initial_step} given frames")
    normalize = cfg.model.get("normalize", True)
    c.add(A, "normalize", isinstance(normalize, bool), f"model.normalize={normalize!r}",
          "use True (z-scored fields) or False (raw values)", passed=f"model.normalize={normalize}")
    if kind == "fno":
        return check_fno(cfg, c, nx)
    if kind == "hybrid":
        return check_hybrid(cfg, c, nx)
    m, op, dec = cfg.model, cfg.model.operator, cfg.model.decoder
    c.add(A, "latent_dim", m.latent_dim >= 1, f"model.latent_dim={m.latent_dim}", "set model.latent_dim ≥ 1")
    c.add(A, "latent_tokens", m.latent_tokens >= 1, f"model.latent_tokens={m.latent_tokens}",
          "set model.latent_tokens ≥ 1")
    if c.add(A, "operator widths", op.hidden_dim >= 1 and op.group_size >= 1 and op.num_heads >= 1,
             f"model.operator hidden_dim={op.hidden_dim}, group_size={op.group_size}, num_heads={op.num_heads}",
             "all must be ≥ 1"):
        c.add(A, "hidden % group", op.hidden_dim % op.group_size == 0,
              f"model.operator.hidden_dim={op.hidden_dim} is not a multiple of group_size={op.group_size} "
              f"(remainder {op.hidden_dim % op.group_size})", "make hidden_dim a multiple of group_size",
              passed=f"model.operator.hidden_dim={op.hidden_dim} = {op.hidden_dim // op.group_size} groups of "
                     f"{op.group_size}")
        c.add(A, "group % heads", op.group_size % op.num_heads == 0,
              f"model.operator.group_size={op.group_size} is not a multiple of num_heads={op.num_heads} "
              f"(remainder {op.group_size % op.num_heads})", "make group_size a multiple of num_heads",
              passed=f"model.operator.group_size={op.group_size} = {op.num_heads} heads of "
                     f"{op.group_size // op.num_heads}")
    depths = tuple(op.depths)
    c.add(A, "depths", len(depths) >= 1 and all(d >= 0 for d in depths) and sum(depths) >= 1,
          f"model.operator.depths={depths}", "give ≥ 1 level and ≥ 1 layer, e.g. (1, 1, 1)")
    levels = max(len(depths) - 1, 0)
    if m.latent_tokens >= 1:
        c.add(A, "token downsampling", m.latent_tokens >= 2 ** levels,
              f"{m.latent_tokens} tokens halved {levels}× in the U-shape → {m.latent_tokens / 2 ** levels:g} at the "
              f"bottleneck", "use fewer depths levels or more model.latent_tokens", severity="warning")
    if dec.num_heads >= 1:
        c.add(A, "decoder heads", dec.hidden_dim % dec.num_heads == 0,
              f"model.decoder.hidden_dim={dec.hidden_dim} is not a multiple of num_heads={dec.num_heads} "
              f"(remainder {dec.hidden_dim % dec.num_heads})", "make model.decoder.hidden_dim a multiple of num_heads",
              passed=f"model.decoder.hidden_dim={dec.hidden_dim} = {dec.num_heads} heads of "
                     f"{dec.hidden_dim // dec.num_heads}")
    else:
        c.add(A, "decoder heads", False, f"model.decoder.num_heads={dec.num_heads}", "use ≥ 1")
    if isinstance(nx, tuple) and m.latent_tokens >= 1:     # 2-D: the token grid and the Nyquist limits per axis
        from ups_jax.checks.grid2d import check_tokens_2d

        check_tokens_2d(cfg, c, nx)
    elif nx is not None and m.latent_tokens >= 1:
        c.add(A, "tokens divide grid", nx % m.latent_tokens == 0,
              f"grid of {nx} cells (after data.reduced_resolution) is not divisible by model.latent_tokens="
              f"{m.latent_tokens}", "choose model.latent_tokens dividing the grid size (patches of equal width)",
              passed=f"grid of {nx} cells = {m.latent_tokens} tokens × {nx // m.latent_tokens} cells")
        lf = tuple(dec.local_freqs)
        if lf and nx % m.latent_tokens == 0:
            patch = nx // m.latent_tokens
            c.add(A, "local readout aliasing", 1 + 2 * len(lf) <= patch // 2 and max(lf) < patch / 4,
                  f"model.decoder.local_freqs={lf}: {1 + 2 * len(lf)} basis functions per patch of {patch} cells",
                  "use fewer/lower local_freqs (≤ patch/4) or () — otherwise values between grid points are "
                  "unconstrained")
        for key, freqs in (("model.encoder.fourier_freqs", m.encoder.fourier_freqs),
                           ("model.decoder.fourier_freqs", dec.fourier_freqs)):
            if len(freqs):
                c.add(A, f"{key.split('.')[1]} Nyquist", max(freqs) < nx / 2,
                      f"{key} max={max(freqs)} is at or above the grid's Nyquist frequency {nx / 2:g}",
                      "drop frequencies at or above half the grid size", severity="warning",
                      passed=f"{key} max={max(freqs)} < Nyquist {nx / 2:g}")
    _build_check(cfg, c, nx, m.latent_tokens * 8)
