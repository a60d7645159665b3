"""Stage checks: the stage order, what each stage trains and uses frozen, its hyper-parameters, the refiners' TTC
presets and the baseline config."""

from __future__ import annotations

import numpy as np

from ups_jax.checks.model import _submodules
from ups_jax.checks.report import Checks
from ups_jax.errors import UserError

from ups_jax.stage_kinds import CORE_LOSS_TERMS as LOSS_TERMS  # the weighted terms of a core stage's loss
from ups_jax.stage_kinds import OPTIMIZERS, SCHEDULES


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
    field = False
    if is_ups:
        from ups_jax.errors import ConfigError
        from ups_jax.models.field_corrector import corrector_kind

        try:
            field = corrector_kind(cfg.model) == "field"
        except ConfigError as e:
            c.add("architecture", "corrector kind", False, str(e), "set model.corrector.kind to 'latent' or 'field'")
        if field and "student" in order:   # one deterministic call per step: there is no sampler to distil
            c.add(S, "student with the field corrector", False,
                  "stage_order has 'student' but model.corrector.kind='field': the field corrector is one "
                  "deterministic network call per step, there is nothing to distil",
                  "remove student from stage_order (e.g. --config.stage_order=operator,corrector,steady), or use "
                  "model.corrector.kind='latent'")
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
        c.add(P, f"{name} ema", 0 <= s.ema_decay < 1, f"{k}.ema_decay={s.ema_decay}", "use 0 ≤ decay < 1 (0 = no EMA)")
        _check_optimizer(c, P, name, k, s)
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
        _check_pushforward(c, P, name, k, s, core=name in ("codec", "operator") and is_ups,
                           field_corrector=field)
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
            nx = int(np.prod(nx)) if isinstance(nx, tuple) else nx      # 2-D: the points of the grid
            c.add(P, f"{name} query points", 0 <= s.query_points <= nx,
                  f"{k}.query_points={s.query_points} of {nx} grid points", f"use 0 (all) .. {nx}",
                  passed=f"{k}.query_points={s.query_points}" + (f" (all {nx})" if s.query_points == 0 else
                                                                 f" of {nx} grid points"))
    missing = [m for m in ("encoder", "decoder") if m not in trained] if is_ups else []
    c.add(S, "codec trained", not missing, f"no stage trains the {' and '.join(missing)}",
          "train the encoder and decoder (codec stage)", passed=f"trained modules: {sorted(trained)}")


PUSHFORWARD_DEFAULTS = dict(pushforward_sampling="fixed", pushforward_curriculum=0, pushforward_grad_steps=0,
                            rollout_loss="mse", recon_windows="all")   # as training/losses.py (older configs lack them)


def _check_pushforward(c: Checks, P: str, name: str, k: str, s, *, core: bool, field_corrector: bool = False):
    """The pushforward depth options and the rollout loss of a stage (training/losses.py)."""
    o = {key: s.get(key, v) for key, v in PUSHFORWARD_DEFAULTS.items()}
    changed = sorted(key for key, v in PUSHFORWARD_DEFAULTS.items() if o[key] != v)
    if name == "corrector" and field_corrector:   # its loss reads rollout_loss (training/refiner_losses.py)
        c.add(P, f"{name} rollout loss", o["rollout_loss"] in ("mse", "rel_l2"),
              f"{k}.rollout_loss={o['rollout_loss']!r}", "choose 'mse' or 'rel_l2'")
        changed = [key for key in changed if key != "rollout_loss"]
    if not core:   # the FNO's loss is PDEBench's; the refiners draw p ~ U{0..P} themselves
        c.add(P, f"{name} pushforward options", not changed, f"{k}: {', '.join(changed)} set on a stage whose "
              f"loss does not use them", "leave them at their defaults (only the UPS codec/operator losses use them)",
              passed=f"{k}: pushforward options at their defaults")
        return
    G, C, p_steps = o["pushforward_grad_steps"], o["pushforward_curriculum"], s.pushforward_steps
    c.add(P, f"{name} pushforward sampling", o["pushforward_sampling"] in ("fixed", "uniform"),
          f"{k}.pushforward_sampling={o['pushforward_sampling']!r}", "choose 'fixed' or 'uniform'")
    c.add(P, f"{name} pushforward curriculum", isinstance(C, int) and C >= 0, f"{k}.pushforward_curriculum={C}",
          "use 0 (off) or the number of steps over which the max depth grows to pushforward_steps")
    c.add(P, f"{name} pushforward grad steps", isinstance(G, int) and 0 <= G <= max(p_steps, 0),
          f"{k}.pushforward_grad_steps={G} with pushforward_steps={p_steps}",
          "use 0 (no gradient through the pushforward) .. pushforward_steps")
    c.add(P, f"{name} rollout loss", o["rollout_loss"] in ("mse", "rel_l2"), f"{k}.rollout_loss={o['rollout_loss']!r}",
          "choose 'mse' or 'rel_l2'")
    c.add(P, f"{name} recon windows", o["recon_windows"] in ("all", "given"), f"{k}.recon_windows={o['recon_windows']!r}",
          "choose 'all' (every window encoded) or 'given' (the given frame's encoding only)")


def _check_optimizer(c: Checks, P: str, name: str, k: str, s) -> None:
    """``optimizer``/``schedule`` (training/optim.py); configs from before these keys existed have neither."""
    opt, sched = s.get("optimizer", "adamw"), s.get("schedule", "warmup_cosine")
    c.add(P, f"{name} optimizer", opt in OPTIMIZERS, f"{k}.optimizer={opt!r}",
          f"use one of {', '.join(repr(o) for o in OPTIMIZERS)}", passed=f"{k}.optimizer={opt!r}")
    if not c.add(P, f"{name} schedule", sched in SCHEDULES, f"{k}.schedule={sched!r}",
                 f"use one of {', '.join(repr(o) for o in SCHEDULES)}", passed=f"{k}.schedule={sched!r}"):
        return
    if sched == "step":
        c.add(P, f"{name} step schedule", s.lr_step_every >= 1 and 0 < s.lr_gamma <= 1,
              f"{k}.lr_step_every={s.lr_step_every}, lr_gamma={s.lr_gamma}",
              "use lr_step_every ≥ 1 (updates between decays) and 0 < lr_gamma ≤ 1")
        c.add(P, f"{name} step schedule warmup", s.warmup_steps == 0,
              f"{k}.warmup_steps={s.warmup_steps} with schedule='step' (StepLR has no warm-up)",
              f"set {k}.warmup_steps=0 or use schedule='warmup_cosine'")


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
    refine = str(cfg.eval.get("refine", "none") or "none")
    c.add(S, "eval.refine", refine in ("none", "corrector", "student"),
          f"eval.refine={refine!r}: the headline evaluation's refiner is 'none', 'corrector' or 'student'",
          "use eval.refine='none' (the operator alone), 'corrector' or 'student'", passed=f"eval.refine={refine!r}")
    if refine in ("corrector", "student") and refine not in cfg.stage_order:
        c.add(S, "eval.refine stage", False, f"eval.refine={refine!r} but stage '{refine}' is not in stage_order: "
              f"the headline evaluation is the operator alone", f"add {refine} to stage_order, or eval.refine=none",
              severity="info")
    preset = str(cfg.eval.get("ttc_preset", "") or "")
    if preset and "ttc" in cfg:
        from ups_jax.inference.ttc import make_plan, preset_names

        from ups_jax.inference.ttc import ttc_refiner
        from ups_jax.models.field_corrector import corrector_kind

        field = cfg.model.get("corrector") is not None and corrector_kind(cfg.model) == "field"
        refine = ttc_refiner(cfg) if cfg.model.get("corrector") is not None else str(cfg.ttc.refine)
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
                plan = (make_plan(cfg.ttc, name, 1, refine, kind="field",
                                  encode=str(m.field.state) == "encode") if field else
                        make_plan(cfg.ttc, name, calls, refine))
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
