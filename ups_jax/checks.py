"""Config checks run before any compute: by ``train`` (``training.pipeline.preflight``, refuses to start on an
error), by ``driver validate`` (which adds the workdir and compiled-memory checks) and by ``driver dry-run``.

This module sits below both ``ups_jax.training`` and ``ups_jax.driver`` and imports neither (the import graph has
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

import dataclasses
import os
import re
from pathlib import Path

from ups_jax.errors import ConfigError, DataError, UserError

SUBMODULES = ("encoder", "operator", "decoder")
FNO_SUBMODULES = ("fc0", "spectral", "pointwise", "fc1", "fc2")
LOSS_TERMS = ("recon", "one_step", "latent", "rollout")
CATEGORIES = ("architecture", "data", "stages", "hyper-parameters", "logging", "checkpoints", "hardware")
SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass
class Check:
    category: str
    name: str
    ok: bool
    severity: str          # severity if it fails: error | warning | info
    message: str
    fix: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.ok else self.severity.upper()


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(text)).strip()


class Checks:
    def __init__(self):
        self.items: list[Check] = []

    def add(self, category, name, ok, message, fix="", severity="error", passed: str | None = None):
        """``message`` describes a failure; ``passed`` (default: ``message``) is shown when the check passes,
        so that a PASS row states the value instead of the problem."""
        assert category in CATEGORIES and severity in SEVERITIES, (category, severity)
        ok = bool(ok)
        text = passed if ok and passed is not None else message
        self.items.append(Check(category, name, ok, severity, _one_line(text), _one_line(fix)))
        return ok


def _default_file(cfg) -> Path:
    from ups_jax.data.default import default_data_path

    return default_data_path(cfg)


def grid(cfg, *, use_files: bool = True):
    """(nx, nt, trajectories per file) after the reader's reductions: from the data files (``data.paths``, else
    the default dataset if it was generated already), else from the generator config."""
    paths = list(cfg.data.paths)
    if use_files and not paths and _default_file(cfg).exists():
        paths = [str(_default_file(cfg))]
    if use_files and paths:
        from ups_jax.data.pdebench import PDEBenchDataset

        d = PDEBenchDataset(paths, reduced_resolution=cfg.data.reduced_resolution,
                            reduced_resolution_t=cfg.data.reduced_resolution_t)
        try:
            return d.nx, d.nt, list(d.trajectories_per_file)
        finally:
            d.close()
    g = cfg.data.generate
    rr, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    return -(-g.nx // rr), -(-201 // rt), [g.samples]


OPTIONAL_SUBMODULES = ("corrector", "student", "steady")   # built when cfg.model has the section


def _submodules(cfg) -> tuple[str, ...]:
    from ups_jax.models import model_kind

    if model_kind(cfg) == "fno":
        return FNO_SUBMODULES
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


def check_fno(cfg, c: Checks, nx: int | None):
    f, A = cfg.model.fno, "architecture"
    c.add(A, "fno widths", f.width >= 1 and f.num_layers >= 1 and f.head_width >= 1 and f.padding >= 0,
          f"model.fno width={f.width}, num_layers={f.num_layers}, head_width={f.head_width}, padding={f.padding}",
          "width, num_layers, head_width ≥ 1 and padding ≥ 0")
    if c.add(A, "fno modes", f.modes >= 1, f"model.fno.modes={f.modes}", "use ≥ 1") and nx is not None:
        c.add(A, "fno modes vs grid", f.modes <= (nx + f.padding) // 2 + 1,
              f"model.fno.modes={f.modes} exceeds the {(nx + f.padding) // 2 + 1} Fourier modes of the padded grid",
              "use fewer modes", severity="warning", passed=f"model.fno.modes={f.modes} of {(nx + f.padding) // 2 + 1}")
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
    if kind == "fno":
        return check_fno(cfg, c, nx)
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
    if nx is not None and m.latent_tokens >= 1:
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
        c.add(D, "default data", True, f"default dataset {'present' if default.exists() else 'will be generated'}"
              f": {default} (ν={g.nu}, {g.samples} samples, nx={g.nx})", severity="info")
        c.add(D, "generator grid", g.nx % cfg.data.reduced_resolution == 0 and g.samples >= 1 and g.nx >= 1,
              f"data.generate.nx={g.nx} is not a multiple of data.reduced_resolution={cfg.data.reduced_resolution}"
              if g.nx % cfg.data.reduced_resolution else f"data.generate.samples={g.samples}, nx={g.nx}",
              "make nx ≥ 1 a multiple of reduced_resolution, samples ≥ 1",
              passed=f"data.generate.nx={g.nx} / data.reduced_resolution={cfg.data.reduced_resolution} = "
                     f"{g.nx // max(cfg.data.reduced_resolution, 1)} cells")
    try:
        nx, nt, counts = grid(cfg, use_files=not skip_data)
    except (UserError, OSError, ValueError) as e:
        c.add(D, "grid", False, f"cannot read the grid: {e}", "run python -m ups_jax.driver validate-data on the files")
        return None, None, None
    if not skip_data and not paths and default.exists():
        from ups_jax.data.default import default_data_mismatch

        problem = default_data_mismatch(cfg, default)
        c.add(D, "default data matches", problem is None, problem or "",
              "move the file aside to regenerate it, or set data.generate to the file's parameters",
              passed=f"{default}: {sum(counts)} samples, {nx} cells × {nt} frames after reduction, made as "
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


def check_stages(cfg, c: Checks, nx, nt, n_train=None):
    S, P = "stages", "hyper-parameters"
    order = list(cfg.stage_order)
    if not c.add(S, "stage_order", len(order) >= 1 and len(set(order)) == len(order), f"stage_order={order}",
                 "list each stage once, at least one", passed=f"stage_order={order}"):
        return
    trained: dict[str, str] = {}     # module -> first stage that trains it
    submodules = _submodules(cfg)
    from ups_jax.models import context_frames, model_kind
    from ups_jax import stage_kinds
    from ups_jax.stage_kinds import teachers

    is_ups = model_kind(cfg) == "ups"
    h = context_frames(cfg)
    for name in order:
        if not c.add(S, f"{name} defined", name in cfg.stages,
                     f"stage_order names '{name}' but stages has no such section (known: "
                     f"{', '.join(cfg.stages.keys())})",
                     f"add a stages.{name} section or remove it from stage_order",
                     passed=f"stages.{name} present"):
            continue
        if not c.add(S, f"{name} kind", name in stage_kinds.STAGES, f"'{name}' is not a known stage",
                     f"name stages after what they train: {', '.join(stage_kinds.STAGES)}",
                     passed=f"{name}: known stage"):
            continue
        s = cfg.stages[name]
        k = f"stages.{name}"
        bad = [t for t in s.trainable if t not in submodules]
        c.add(S, f"{name} trainable", len(s.trainable) > 0 and not bad,
              f"{k}.trainable={tuple(s.trainable)}" + (f": unknown {bad}" if bad else ": selects nothing"),
              f"choose from {submodules}" + ("; configure model.<name> for corrector/student/steady" if is_ups else ""),
              passed=f"{k}.trainable={tuple(s.trainable)}")
        if "losses" in s:
            w = {t: s.losses[t] for t in LOSS_TERMS}
            c.add(S, f"{name} losses", all(v >= 0 for v in w.values()) and any(v > 0 for v in w.values()),
                  f"{k}.losses={w}", "weights ≥ 0 with at least one > 0")
        for module in sorted(teachers(cfg, name)) if is_ups else ():  # used frozen: a trained teacher, never random
            c.add(S, f"{name} frozen {module}", module in trained,
                  f"{name} uses the {module} frozen but no earlier stage trains it (a random teacher)",
                  f"train the {module} in an earlier stage (e.g. codec) or add it to {k}.trainable",
                  passed=f"frozen {module} was trained by stage '{trained.get(module)}'")
        for module in s.trainable:
            trained.setdefault(module, name)
        c.add(P, f"{name} steps", s.steps >= 1, f"{k}.steps={s.steps}", "use ≥ 1")
        c.add(P, f"{name} batch", s.batch_size >= 1 and s.accum_steps >= 1,
              f"{k}.batch_size={s.batch_size}, accum_steps={s.accum_steps}", "use ≥ 1")
        if c.add(P, f"{name} lr > 0", s.lr > 0, f"{k}.lr={s.lr}", "use a positive learning rate"):
            c.add(P, f"{name} lr range", 1e-5 <= s.lr <= 1e-2, f"{k}.lr={s.lr:g} outside [1e-5, 1e-2]",
                  "typical adamw rates are 1e-4..3e-3", severity="warning",
                  passed=f"{k}.lr={s.lr:g} in [1e-5, 1e-2]")
        c.add(P, f"{name} lr decay", 0 <= s.end_lr_factor <= 1, f"{k}.end_lr_factor={s.end_lr_factor}",
              "use 0..1 (the cosine ends at lr × end_lr_factor)")
        c.add(P, f"{name} adam betas", 0 <= s.b1 < 1 and 0 <= s.b2 < 1, f"{k}.b1={s.b1}, b2={s.b2}",
              "use 0 ≤ b < 1 (typical 0.9, 0.999)")
        if c.add(P, f"{name} weight decay", s.weight_decay >= 0, f"{k}.weight_decay={s.weight_decay}", "use ≥ 0"):
            c.add(P, f"{name} weight decay range", s.weight_decay <= 0.1, f"{k}.weight_decay={s.weight_decay:g} > 0.1",
                  "use ≤ 0.1", severity="warning", passed=f"{k}.weight_decay={s.weight_decay:g} ≤ 0.1")
        if c.add(P, f"{name} grad clip", s.grad_clip >= 0, f"{k}.grad_clip={s.grad_clip}",
                 "use 0 (off) or a positive norm"):
            c.add(P, f"{name} grad clip range", s.grad_clip == 0 or 0.1 <= s.grad_clip <= 10,
                  f"{k}.grad_clip={s.grad_clip:g} outside [0.1, 10]", "typical: 1.0", severity="warning",
                  passed=f"{k}.grad_clip={s.grad_clip:g}" + (" (off)" if s.grad_clip == 0 else " in [0.1, 10]"))
        c.add(P, f"{name} ema", 0 <= s.ema_decay < 1, f"{k}.ema_decay={s.ema_decay}", "use 0 ≤ decay < 1")
        if c.add(P, f"{name} warmup", s.warmup_steps >= 0, f"{k}.warmup_steps={s.warmup_steps}", "use ≥ 0"):
            c.add(P, f"{name} warmup length", s.warmup_steps < max(s.steps, 2),
                  f"{k}.warmup_steps={s.warmup_steps} ≥ steps={s.steps}: the learning rate never reaches its peak",
                  "make warm-up shorter than the stage", severity="warning",
                  passed=f"{k}.warmup_steps={s.warmup_steps} < steps={s.steps}")
        c.add(P, f"{name} cadence", s.eval_every >= 1 and s.log_every >= 1,
              f"{k}.eval_every={s.eval_every}, log_every={s.log_every}", "use ≥ 1")
        if s.eval_every >= 1 and s.steps >= 1:   # every cadence counts optimizer updates (accumulation included)
            c.add(P, f"{name} evals", s.eval_every <= s.steps,
                  f"{k}.eval_every={s.eval_every} > steps={s.steps}: validated only at the end",
                  "lower eval_every for best-checkpoint selection", severity="info",
                  passed=f"{k}.eval_every={s.eval_every}: {-(-s.steps // s.eval_every)} validation(s) + "
                         f"checkpoint(s)")
        c.add(P, f"{name} patience", s.patience >= 0, f"{k}.patience={s.patience}", "use ≥ 0 (0 = never stop)")
        c.add(P, f"{name} rollout", s.rollout_steps >= 1 and s.pushforward_steps >= 0 and s.input_noise >= 0,
              f"{k}.rollout_steps={s.rollout_steps}, pushforward_steps={s.pushforward_steps}, input_noise="
              f"{s.input_noise}", "use rollout_steps ≥ 1, pushforward_steps ≥ 0, input_noise ≥ 0")
        if nt is not None and s.rollout_steps >= 1:
            win = stage_kinds.window(cfg, name, nt)
            if c.add(P, f"{name} window", win <= nt,
                     f"window of {win} frames (model.context_frames={h} + {k}.pushforward_steps="
                     f"{s.pushforward_steps} + {k}.rollout_steps={s.rollout_steps}) does not fit in {nt} frames per "
                     f"trajectory", f"use context + pushforward + rollout ≤ {nt}",
                     passed=f"window of {win} frames in {nt} frames per trajectory") \
                    and n_train and s.batch_size >= 1:
                windows = n_train * (nt - win + 1)
                c.add(P, f"{name} batch vs windows", s.batch_size <= windows,
                      f"{k}.batch_size={s.batch_size} exceeds the {windows} training windows",
                      "lower the batch size or use more data",
                      passed=f"{k}.batch_size={s.batch_size} of {windows} training windows per epoch")
        if nx is not None:
            c.add(P, f"{name} query points", 0 <= s.query_points <= nx,
                  f"{k}.query_points={s.query_points} of {nx} grid points", f"use 0 (all) .. {nx}",
                  passed=f"{k}.query_points={s.query_points}" + (f" (all {nx})" if s.query_points == 0 else
                                                                 f" of {nx} grid points"))
    missing = [m for m in ("encoder", "decoder") if m not in trained] if is_ups else []
    c.add(S, "codec trained", not missing, f"no stage trains the {' and '.join(missing)}",
          "train the encoder and decoder (codec stage)", passed=f"trained modules: {sorted(trained)}")


WANDB_MODES = ("auto", "online", "offline", "disabled")


def resolve_wandb_mode(mode: str) -> str:
    """``logging.wandb_mode`` → the mode W&B runs in. W&B is never required: without a key we log offline only
    if asked (WANDB_MODE), else not at all."""
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "")
        if env in WANDB_MODES[1:]:
            return env
        return "online" if os.environ.get("WANDB_API_KEY") else "disabled"
    if mode not in WANDB_MODES:
        raise ConfigError(f"logging.wandb_mode={mode!r}: choose auto, online, offline or disabled")
    return mode


def baseline_spec(cfg) -> str:
    """``baseline.config`` ('' when the config has no baseline section or it is off)."""
    return str(cfg.get("baseline", {}).get("config", "") or "")


def check_ttc_and_baseline(cfg, c: Checks):
    """The student's cost, the TTC row's preset and every preset's budget (inference/ttc.py), and the baseline
    config file."""
    S = "stages"
    if "student" in cfg.stage_order and cfg.model.get("student") is not None:
        steps = int(cfg.model.student.steps)
        c.add("architecture", "student steps", 1 <= steps <= 2, f"model.student.steps={steps}",
              "use 1 or 2: the student does the corrector's K+1 refiner calls in one or two",
              passed=f"model.student.steps={steps} refiner call(s) per step")
    refiners = [n for n in ("corrector", "student") if n in cfg.stage_order]
    if refiners:
        c.add(S, "refined rollout mode", cfg.eval.rollout_mode == "latent",
              f"stages {refiners} refine latent rollouts but eval.rollout_mode={cfg.eval.rollout_mode!r}",
              "use eval.rollout_mode='latent'", passed="refiners run in the latent rollout")
    preset = str(cfg.eval.get("ttc_preset", "") or "")
    if preset and "ttc" in cfg:
        from ups_jax.inference.ttc import make_plan, preset_names

        refine = str(cfg.ttc.refine)
        c.add(S, "ttc.refine", refine in ("student", "corrector"),
              f"ttc.refine={refine!r}: the TTC candidates come from the 'student' or the 'corrector'",
              "use ttc.refine='student' or 'corrector', or eval.ttc_preset=''", passed=f"ttc.refine={refine!r}")
        if refine not in cfg.stage_order:
            c.add(S, "ttc row", False, f"eval.ttc_preset={preset!r} but stage '{refine}' (ttc.refine) is not in "
                  f"stage_order: the table has no TTC row", f"add {refine} to stage_order for a TTC row",
                  severity="info")
        c.add(S, "eval.ttc_preset", preset in cfg.ttc.presets, f"eval.ttc_preset={preset!r} is not one of "
              f"{preset_names(cfg.ttc)}", "name a preset of ttc.presets, or '' for no TTC row",
              passed=f"eval.ttc_preset={preset!r}")
        m = cfg.model.get("corrector")
        calls = (int(m.refine_steps) + 1 if refine == "corrector" else int(cfg.model.student.steps)) if m else 1
        for name in preset_names(cfg.ttc):
            try:
                plan = make_plan(cfg.ttc, name, calls, refine)
                c.add(S, f"ttc.presets.{name}", True, plan.describe(), severity="info")
            except UserError as e:
                c.add(S, f"ttc.presets.{name}", False, str(e), "raise the budget or lower candidates")
    spec = baseline_spec(cfg)
    if spec:
        from ups_jax.paths import find_file

        c.add(S, "baseline.config", find_file(spec.partition(":")[0]).is_file(),
              f"baseline.config={spec!r}: no such config file",
              "give a config path (e.g. configs/fno_burgers.py:cpu) or '' for no FNO row",
              passed=f"baseline.config={spec!r} → WORKDIR/baselines/fno")


def check_logging(cfg, c: Checks):
    L = "logging"
    mode = cfg.logging.wandb_mode
    if c.add(L, "wandb mode", mode in WANDB_MODES, f"logging.wandb_mode={mode!r}",
             "choose auto, online, offline or disabled"):
        has_key = bool(os.environ.get("WANDB_API_KEY"))
        effective = resolve_wandb_mode(mode)
        if effective == "online" and not has_key:   # W&B is optional: never an error
            c.add(L, "wandb key", False, f"W&B online (wandb_mode={mode}) but WANDB_API_KEY is not set",
                  "export WANDB_API_KEY or use wandb_mode=offline/auto; metrics.jsonl is always written",
                  severity="warning")
        else:
            c.add(L, "wandb", True, f"W&B {effective}" + (" (no WANDB_API_KEY)" if mode == "auto" and not has_key
                                                          else "") + "; metrics.jsonl is always written",
                  severity="info")
        c.add(L, "wandb project", bool(cfg.logging.wandb_project) or effective == "disabled",
              "logging.wandb_project is empty", "set a project name", severity="warning",
              passed=f"logging.wandb_project={cfg.logging.wandb_project!r}")
    c.add(L, "retention", cfg.checkpoint.keep_latest >= 1 and cfg.checkpoint.keep_best >= 1,
          f"checkpoint.keep_latest={cfg.checkpoint.keep_latest}, keep_best={cfg.checkpoint.keep_best}",
          "keep ≥ 1 latest (resume) and ≥ 1 best")
    ck = cfg.checkpoint
    c.add("checkpoints", "cadence", ck.every_steps >= 0 and ck.every_minutes >= 0,
          f"checkpoint.every_steps={ck.every_steps}, every_minutes={ck.every_minutes}",
          "use ≥ 0 (0 = off; a checkpoint is also written at every validation)",
          passed=f"resume points: every validation" + (f", every {ck.every_steps} steps" if ck.every_steps else "")
                 + (f", every {ck.every_minutes:g} min" if ck.every_minutes else "") + " and on SIGTERM")


COMPUTE_DTYPES = ("float32", "bfloat16")


def data_parallel_size(setting, batch_sizes, n_devices: int) -> tuple[int, str | None]:
    """``runtime.data_parallel`` → (number of devices the batch is split over, problem or None).

    'off' = 1; 'auto' = the most local devices that divide every stage's batch size; a number N = exactly N
    (a problem when N exceeds the devices or does not divide a batch size)."""
    setting = str(setting).strip().lower()
    sizes = [int(b) for b in batch_sizes]
    if setting in ("off", "1", "none"):
        return 1, None
    if setting == "auto":
        return max(n for n in range(1, max(n_devices, 1) + 1) if all(b % n == 0 for b in sizes)), None
    try:
        n = int(setting)
    except ValueError:
        return 1, f"runtime.data_parallel={setting!r}: choose auto, off or a device count"
    if n < 1 or n > n_devices:
        return 1, f"runtime.data_parallel={n} but this machine has {n_devices} local device(s)"
    bad = [b for b in sizes if b % n]
    if bad:
        return 1, f"runtime.data_parallel={n} does not divide the batch size {bad[0]} (each device gets an equal share)"
    return n, None


def check_runtime(cfg, c: Checks):
    H, P = "hardware", "hyper-parameters"
    r = cfg.runtime
    order = [n for n in cfg.stage_order if n in cfg.stages]
    sizes = [cfg.stages[n].batch_size for n in order if cfg.stages[n].batch_size >= 1]
    import jax   # the local device count (initialises the backend; every check that builds a model does too)

    devices = jax.local_device_count()
    n, problem = data_parallel_size(r.data_parallel, sizes, devices)
    c.add(H, "data parallel", problem is None, problem or "",
          "use a device count that divides every stages.<name>.batch_size, or auto / off",
          passed=f"runtime.data_parallel={r.data_parallel}: batch split over {n} of {devices} "
                 f"{jax.devices()[0].platform} device(s)" + (" (parameters replicated)" if n > 1 else ""))
    if c.add(H, "compute dtype", r.compute_dtype in COMPUTE_DTYPES, f"runtime.compute_dtype={r.compute_dtype!r}",
             f"choose one of {', '.join(COMPUTE_DTYPES)}"):
        if r.compute_dtype == "bfloat16" and jax.devices()[0].platform == "cpu":
            c.add(H, "bf16 on CPU", False, "runtime.compute_dtype=bfloat16 on a CPU: no faster than float32 "
                  "there and less accurate", "use float32 on CPUs; bfloat16 is for GPUs", severity="warning")
    from ups_jax.dispatch import resolve_steps_per_dispatch, steps_per_dispatch_problem

    spd = r.get("steps_per_dispatch", "auto")
    every = int(cfg.checkpoint.every_steps)
    problems = [p for p in (steps_per_dispatch_problem(spd, n, cfg.stages[n], every) for n in order) if p]
    c.add(H, "steps per dispatch", not problems, problems[0] if problems else "",
          "use 'auto' or a count that divides every stage's steps, log_every, eval_every and checkpoint.every_steps",
          passed="updates per dispatch: " + ", ".join(
              f"{n} {resolve_steps_per_dispatch(spd, cfg.stages[n], every)}" for n in order))
    c.add(P, "nan guard", r.max_nonfinite_steps >= 1, f"runtime.max_nonfinite_steps={r.max_nonfinite_steps}",
          "use ≥ 1 (consecutive skipped non-finite steps before the run stops)",
          passed=f"a non-finite step is skipped; the run stops after {r.max_nonfinite_steps} in a row")


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


def sort_checks(items: list[Check]) -> list[Check]:
    order = {k: i for i, k in enumerate(CATEGORIES)}
    return sorted(items, key=lambda x: order[x.category])   # stable: keeps the order within a category


def errors(checks) -> list[Check]:
    return [x for x in checks if not x.ok and x.severity == "error"]


def format_table(checks) -> str:
    lines, cat = [], None
    for x in checks:
        if x.category != cat:
            cat = x.category
            lines.append(f"\n[{cat}]")
        fix = f"  → {x.fix}" if not x.ok and x.fix else ""
        lines.append(f"  {x.status:7s} {x.name:28s} {x.message}{fix}")
    n_err = len(errors(checks))
    n_warn = sum(not x.ok and x.severity == "warning" for x in checks)
    lines.append(f"\n{len(checks)} checks: {n_err} error(s), {n_warn} warning(s)")
    return "\n".join(lines).lstrip("\n")


