"""``python -m ups_jax.driver validate --config FILE[:arg] [--config.x=y ...] [--workdir DIR] [--compile] [--json]``

Checks a config before any compute is spent. Each check has a category, a severity (error / warning / info),
a one-line message and the fix. Exit 0 when no check fails with severity error. ``train`` runs the same
checks first and refuses to start on an error.

Coverage of the original's 29 checks (ups-original.md §8.1) — kept, corrected, dropped:
  A1 latent dim set ............ kept (model.latent_dim ≥ 1)
  A2 pdet.input_dim == latent .. dropped: the operator's input width *is* model.latent_dim (no second key)
  A3 pdet.hidden_dim defined ... kept, plus hidden % group and group % heads (what the model really needs)
  A4/A5 diffusion dims ......... added with the diffusion stages (not in this config); A5's coupling
                                 diffusion.hidden == operator.hidden was arbitrary and is not reintroduced
  A6/A7 TTC decoder dims ....... dropped: TTC uses the model's own trained decoder (shared by construction)
  D1 task / D2 split / D3 root . kept as: files exist and pass validate-data, eval.split valid, splits non-empty
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
  S2/S3 ........................ kept as: loss weights, trainable modules exist, decoder trained before use
  E1 evaluation enabled ........ dropped: evaluation always runs
Added: token/grid divisibility, Nyquist of Fourier features, window vs frames, split fractions, EMA decay,
warm-up vs steps, accumulation, query sampling, retention settings, eval protocol vs frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ups_jax.config import load_config, split_config_args
from ups_jax.errors import ConfigError

SUBMODULES = ("encoder", "operator", "decoder")
LOSS_TERMS = ("recon", "one_step", "latent", "rollout")


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


class _Checks:
    def __init__(self):
        self.items: list[Check] = []

    def add(self, category, name, ok, message, fix="", severity="error"):
        self.items.append(Check(category, name, bool(ok), severity, message, fix))
        return ok


def _grid(cfg):
    """(nx, nt) after the reader's reductions, from the data files if present else from the generator config."""
    paths = list(cfg.data.paths)
    if paths:
        from ups_jax.data.pdebench import PDEBenchDataset

        d = PDEBenchDataset(paths, reduced_resolution=cfg.data.reduced_resolution,
                            reduced_resolution_t=cfg.data.reduced_resolution_t)
        return d.nx, d.nt, d.num_trajectories
    g = cfg.data.generate
    rr, rt = cfg.data.reduced_resolution, cfg.data.reduced_resolution_t
    return -(-g.nx // rr), -(-201 // rt), g.samples


def check_architecture(cfg, c: _Checks, nx: int | None):
    m, op, dec = cfg.model, cfg.model.operator, cfg.model.decoder
    A = "architecture"
    c.add(A, "latent_dim", m.latent_dim >= 1, f"model.latent_dim={m.latent_dim}", "set model.latent_dim ≥ 1")
    c.add(A, "latent_tokens", m.latent_tokens >= 1, f"model.latent_tokens={m.latent_tokens}",
          "set model.latent_tokens ≥ 1")
    if c.add(A, "operator.hidden_dim", op.hidden_dim >= 1 and op.group_size >= 1 and op.num_heads >= 1,
             f"model.operator hidden_dim={op.hidden_dim}, group_size={op.group_size}, num_heads={op.num_heads}",
             "all must be ≥ 1"):
        c.add(A, "hidden % group", op.hidden_dim % op.group_size == 0,
              f"model.operator.hidden_dim={op.hidden_dim} % group_size={op.group_size} = "
              f"{op.hidden_dim % op.group_size}", "make hidden_dim a multiple of group_size")
        c.add(A, "group % heads", op.group_size % op.num_heads == 0,
              f"model.operator.group_size={op.group_size} % num_heads={op.num_heads} = "
              f"{op.group_size % op.num_heads}", "make group_size a multiple of num_heads")
    depths = tuple(op.depths)
    c.add(A, "depths", len(depths) >= 1 and all(d >= 0 for d in depths) and sum(depths) >= 1,
          f"model.operator.depths={depths}", "give ≥ 1 level and ≥ 1 layer, e.g. (1, 1, 1)")
    levels = len(depths) - 1
    c.add(A, "token downsampling", m.latent_tokens >= 2 ** levels,
          f"{m.latent_tokens} tokens halved {levels}× in the U-shape → {m.latent_tokens / 2 ** levels:g} at the "
          f"bottleneck", "use fewer depths levels or more model.latent_tokens", severity="warning")
    c.add(A, "decoder heads", dec.hidden_dim % dec.num_heads == 0,
          f"model.decoder.hidden_dim={dec.hidden_dim} % num_heads={dec.num_heads} = {dec.hidden_dim % dec.num_heads}",
          "make model.decoder.hidden_dim a multiple of num_heads")
    if nx is not None:
        c.add(A, "tokens divide grid", nx % m.latent_tokens == 0,
              f"grid of {nx} cells (after data.reduced_resolution) / model.latent_tokens={m.latent_tokens}",
              "choose model.latent_tokens dividing the grid size (patches of equal width)")
        for key, freqs in (("model.encoder.fourier_freqs", m.encoder.fourier_freqs),
                           ("model.decoder.fourier_freqs", dec.fourier_freqs)):
            c.add(A, f"{key} Nyquist", max(freqs) < nx / 2, f"{key} max={max(freqs)} vs Nyquist {nx / 2:g}",
                  "drop frequencies at or above half the grid size", severity="warning")
    try:  # whatever the explicit rules missed, building the abstract model (no allocation) will catch
        from flax import nnx

        from ups_jax.models import build_model

        nnx.eval_shape(lambda: build_model(cfg, num_points=nx or m.latent_tokens * 8, rngs=nnx.Rngs(0)))
        c.add(A, "model builds", True, "abstract model builds from cfg.model")
    except (ValueError, TypeError) as e:
        c.add(A, "model builds", False, f"model does not build: {e}", "fix the model section")


def check_data(cfg, c: _Checks):
    D = "data"
    paths = list(cfg.data.paths)
    nx = None
    if paths:
        missing = [p for p in paths if not Path(p).exists()]
        if not c.add(D, "files exist", not missing, f"missing: {', '.join(missing)}" if missing else
                     f"{len(paths)} path(s) exist", "fix data.paths or generate data with ups_jax.data.generate"):
            return None, None, None
        from ups_jax.data.validation import validate_files

        rows = validate_files(paths)
        fails = [r for r in rows if r.get("status") == "FAIL"]
        c.add(D, "validate-data", not fails,
              "; ".join(f"{r.get('file')}: {r.get('check')}: {r.get('detail')}" for r in fails[:3]) or
              "all files pass validate-data", "run python -m ups_jax.driver validate-data PATH for details")
        if fails:
            return None, None, None
    else:
        default = Path(cfg.data.default_dir)
        g = cfg.data.generate
        c.add(D, "default data", True, f"default dataset {'present' if default.exists() else 'will be generated'} "
              f"in {default} (ν={g.nu}, {g.samples} samples, nx={g.nx})", severity="info")
        c.add(D, "generator grid", g.nx % cfg.data.reduced_resolution == 0,
              f"data.generate.nx={g.nx} % data.reduced_resolution={cfg.data.reduced_resolution}",
              "make nx a multiple of reduced_resolution")
    try:
        nx, nt, n = _grid(cfg)
    except Exception as e:  # noqa: BLE001 — reported as a failed check with its message
        c.add(D, "grid", False, f"cannot read the grid: {e}", "run validate-data on the files")
        return None, None, None
    tf, vf = cfg.data.test_fraction, cfg.data.val_fraction
    c.add(D, "split fractions", 0 < tf and 0 < vf and tf + vf < 1, f"test {tf}, val {vf}",
          "use 0 < test_fraction, val_fraction and test + val < 1")
    n_test, n_val = int(n * tf), int(n * vf)
    c.add(D, "splits non-empty", n_test >= 1 and n_val >= 1 and n - n_test - n_val >= 1,
          f"{n} trajectories → train {n - n_test - n_val}, val {n_val}, test {n_test}",
          "use more trajectories or larger fractions")
    c.add(D, "eval.split", cfg.eval.split in ("train", "val", "test"), f"eval.split={cfg.eval.split!r}",
          "choose train, val or test")
    c.add(D, "eval protocol", 0 < cfg.eval.initial_step < nt,
          f"eval.initial_step={cfg.eval.initial_step} with {nt} frames", f"use 1..{nt - 1}")
    if cfg.eval.split == "train":
        c.add(D, "eval split held out", False, "eval.split='train' measures training data",
              "evaluate on test (or val)", severity="warning")
    return nx, nt, n


def check_stages(cfg, c: _Checks, nx, nt):
    S, P = "stages", "hyper-parameters"
    order = list(cfg.stage_order)
    if not c.add(S, "stage_order", len(order) >= 1, f"stage_order={order}", "list at least one stage"):
        return
    trained: set[str] = set()
    for name in order:
        if not c.add(S, f"{name} defined", name in cfg.stages, f"stage '{name}' in stages",
                     f"add a stages.{name} section or remove it from stage_order"):
            continue
        s = cfg.stages[name]
        k = f"stages.{name}"
        bad = [t for t in s.trainable if t not in SUBMODULES]
        c.add(S, f"{name} trainable", s.trainable and not bad, f"{k}.trainable={tuple(s.trainable)}",
              f"choose from {SUBMODULES}")
        w = {t: s.losses[t] for t in LOSS_TERMS}
        c.add(S, f"{name} losses", all(v >= 0 for v in w.values()) and any(v > 0 for v in w.values()),
              f"{k}.losses={w}", "weights ≥ 0 with at least one > 0")
        uses_decoder = w["recon"] > 0 or w["one_step"] > 0 or w["rollout"] > 0
        uses_operator = w["one_step"] > 0 or w["rollout"] > 0 or w["latent"] > 0
        if uses_operator and "operator" not in s.trainable:
            c.add(S, f"{name} teacher", "operator" in trained, f"{name} uses a frozen operator",
                  "train the operator in an earlier stage", severity="error")
        if uses_decoder and "decoder" not in s.trainable:
            c.add(S, f"{name} teacher", "decoder" in trained, f"{name} decodes with a frozen decoder",
                  "train the decoder in an earlier stage (codec)", severity="error")
        trained |= set(s.trainable)
        c.add(P, f"{name} steps", s.steps >= 1, f"{k}.steps={s.steps}", "use ≥ 1")
        c.add(P, f"{name} batch", s.batch_size >= 1 and s.accum_steps >= 1,
              f"{k}.batch_size={s.batch_size}, accum_steps={s.accum_steps}", "use ≥ 1")
        if c.add(P, f"{name} lr > 0", s.lr > 0, f"{k}.lr={s.lr}", "use a positive learning rate"):
            c.add(P, f"{name} lr range", 1e-5 <= s.lr <= 1e-2, f"{k}.lr={s.lr:g} outside [1e-5, 1e-2]",
                  "typical adamw rates are 1e-4..3e-3", severity="warning")
        c.add(P, f"{name} weight decay", s.weight_decay >= 0, f"{k}.weight_decay={s.weight_decay}", "use ≥ 0")
        c.add(P, f"{name} weight decay range", s.weight_decay <= 0.1, f"{k}.weight_decay={s.weight_decay:g} > 0.1",
              "use ≤ 0.1", severity="warning")
        if c.add(P, f"{name} grad clip", s.grad_clip >= 0, f"{k}.grad_clip={s.grad_clip}",
                 "use 0 (off) or a positive norm"):
            c.add(P, f"{name} grad clip range", s.grad_clip == 0 or 0.1 <= s.grad_clip <= 10,
                  f"{k}.grad_clip={s.grad_clip:g} outside [0.1, 10]", "typical: 1.0", severity="warning")
        c.add(P, f"{name} ema", 0 <= s.ema_decay < 1, f"{k}.ema_decay={s.ema_decay}", "use 0 ≤ decay < 1")
        c.add(P, f"{name} warmup", s.warmup_steps < max(s.steps, 2), f"{k}.warmup_steps={s.warmup_steps} vs "
              f"steps={s.steps}", "make warm-up shorter than the stage", severity="warning")
        c.add(P, f"{name} eval cadence", 1 <= s.eval_every, f"{k}.eval_every={s.eval_every}", "use ≥ 1")
        c.add(P, f"{name} evals", s.eval_every <= s.steps * s.accum_steps,
              f"{k}.eval_every={s.eval_every} > steps: validated only at the end",
              "lower eval_every for best-checkpoint selection", severity="info")
        c.add(P, f"{name} patience", s.patience >= 0, f"{k}.patience={s.patience}", "use ≥ 0 (0 = never stop)")
        c.add(P, f"{name} rollout", s.rollout_steps >= 1, f"{k}.rollout_steps={s.rollout_steps}", "use ≥ 1")
        if nt is not None:
            c.add(P, f"{name} window", s.rollout_steps + 1 <= nt,
                  f"window of {s.rollout_steps + 1} frames with {nt} frames per trajectory",
                  f"use {k}.rollout_steps ≤ {nt - 1}")
        if nx is not None:
            c.add(P, f"{name} query points", 0 <= s.query_points <= nx, f"{k}.query_points={s.query_points} "
                  f"of {nx} grid points", f"use 0 (all) .. {nx}")
    c.add(S, "decoder trained", "decoder" in trained and "encoder" in trained,
          f"trained modules: {sorted(trained)}", "train the encoder and decoder (codec stage)")


def check_logging(cfg, c: _Checks):
    import os

    L = "logging"
    mode = cfg.logging.wandb_mode
    if not c.add(L, "wandb mode", mode in ("auto", "online", "offline", "disabled"), f"logging.wandb_mode={mode!r}",
                 "choose auto, online, offline or disabled"):
        return
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if mode == "online" and not has_key:
        c.add(L, "wandb key", False, "wandb_mode=online but WANDB_API_KEY is not set",
              "export WANDB_API_KEY or use wandb_mode=offline/auto; metrics.jsonl is always written",
              severity="warning")
    else:
        c.add(L, "wandb", True, "W&B " + ("online" if has_key and mode in ("auto", "online") else
                                          f"{mode} (no key: JSONL only)" if mode == "auto" else mode) +
              "; metrics.jsonl is always written", severity="info")
    c.add(L, "wandb project", bool(cfg.logging.wandb_project), "logging.wandb_project is empty",
          "set a project name", severity="warning")
    c.add(L, "retention", cfg.checkpoint.keep_latest >= 1 and cfg.checkpoint.keep_best >= 1,
          f"checkpoint.keep_latest={cfg.checkpoint.keep_latest}, keep_best={cfg.checkpoint.keep_best}",
          "keep ≥ 1 latest (resume) and ≥ 1 best")


def check_workdir(cfg, c: _Checks, workdir, nx):
    C = "checkpoints"
    wd = Path(workdir)
    if not wd.exists():
        c.add(C, "workdir", True, f"{wd} does not exist yet (a fresh run)", severity="info")
        return
    meta_path = wd / "run_meta.json"
    if not meta_path.exists():
        c.add(C, "workdir", True, f"{wd} holds no run yet", severity="info")
        return
    from flax import nnx

    from ups_jax.models import build_model, config_key_for, param_shapes
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.errors import CheckpointError

    meta = json.loads(meta_path.read_text())
    if nx is not None and meta.get("nx") not in (None, nx):
        c.add(C, "grid", False, f"{wd} was trained on {meta['nx']} cells; this config gives {nx}",
              "use the run's data.reduced_resolution or another --workdir")
    shapes = param_shapes(nnx.eval_shape(lambda: build_model(cfg, num_points=meta.get("nx", nx),
                                                             rngs=nnx.Rngs(0))))
    for stage in ckpt.finished_stages(wd):
        mngr = ckpt.open_manager(wd, stage, read_only=True)
        step = mngr.latest_step()
        mngr.close()
        if step is None:
            continue
        try:
            ckpt.check_param_shapes(ckpt.checkpoint_param_shapes(wd, stage, step), shapes,
                                    where=f"{wd}/checkpoints/{stage}/{step}", config_key_for=config_key_for)
            c.add(C, f"{stage} shapes", True, f"checkpoint {stage}/{step}: every parameter shape matches",
                  severity="info")
        except CheckpointError as e:
            c.add(C, f"{stage} shapes", False, str(e), "use the matching config, another --workdir, or --fresh")


def check_memory(cfg, c: _Checks):
    from ups_jax.driver.dry_run import compiled_stage_memory, device_memory_bytes

    H = "hardware"
    limit = device_memory_bytes()
    for stage, mem in compiled_stage_memory(cfg).items():
        c.add(H, f"{stage} memory", mem["peak_bytes"] < 0.9 * limit,
              f"compiled {stage} step needs {mem['peak_bytes'] / 2**20:.1f} MiB of {limit / 2**30:.1f} GiB",
              f"lower stages.{stage}.batch_size or use accum_steps")


def run_checks(cfg, *, workdir=None, compile: bool = False) -> list[Check]:
    c = _Checks()
    nx, nt, _ = check_data(cfg, c)
    check_architecture(cfg, c, nx)
    check_stages(cfg, c, nx, nt)
    check_logging(cfg, c)
    if workdir is not None:
        check_workdir(cfg, c, workdir, nx)
    if compile and not any(not x.ok and x.severity == "error" for x in c.items):
        check_memory(cfg, c)
    else:
        c.add("hardware", "memory", True, "compiled-memory check skipped (use --compile, or driver dry-run)",
              severity="info")
    return c.items


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


def main(argv) -> int:
    spec, overrides, rest = split_config_args(argv)
    parser = argparse.ArgumentParser(prog="python -m ups_jax.driver validate")
    parser.add_argument("--workdir")
    parser.add_argument("--compile", action="store_true", help="also compile each stage's step (memory check)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(rest)
    if spec is None:
        raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
    cfg = load_config(spec, overrides)
    checks = run_checks(cfg, workdir=args.workdir, compile=args.compile)
    if args.json:
        print(json.dumps([dataclasses.asdict(x) | {"status": x.status} for x in checks], indent=1))
    else:
        print(format_table(checks))
    return 1 if errors(checks) else 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
