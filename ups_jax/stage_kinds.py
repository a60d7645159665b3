"""What each stage is, without the training code: the known stage names, the submodules each stage's loss
evaluates (so which ones it needs frozen, trained by an earlier stage), and its training window in frames.

This sits below ``ups_jax.training`` and ``ups_jax.driver``: the config checks (``ups_jax.checks``) read it
before any compute, and ``training.stages`` attaches each stage's loss builder and validator to the same names.
"""

from __future__ import annotations

from typing import Callable

from ups_jax.errors import ConfigError

CORE_LOSS_TERMS = ("recon", "one_step", "latent", "rollout")
# The stages that train on the frozen core (codec, operator), in training order.
REFINE_STAGES = ("corrector", "student", "steady")
# A stage's optimizer and learning-rate schedule (training/optim.py builds them; the config checks read these).
OPTIMIZERS = ("adamw", "adam_l2")
SCHEDULES = ("warmup_cosine", "step")


def context_frames_of(cfg) -> int:
    from ups_jax.models import context_frames

    return context_frames(cfg)


def core_uses(cfg, sc) -> set[str]:
    """codec / operator / fno / hybrid: the submodules the weighted loss terms evaluate."""
    from ups_jax.models import model_kind

    if model_kind(cfg) != "ups":                   # a baseline trains its whole model
        return set(sc.trainable)
    w = {t: float(sc.losses[t]) for t in CORE_LOSS_TERMS}
    uses = set()
    if any(v > 0 for v in w.values()):
        uses.add("encoder")
    if w["recon"] > 0 or w["one_step"] > 0 or w["rollout"] > 0:
        uses.add("decoder")
    if w["one_step"] > 0 or w["rollout"] > 0 or w["latent"] > 0:
        uses.add("operator")
    return uses


def core_window(cfg, sc, nt) -> int:
    """Frames per training window of a core stage: context h + pushforward P + rollout K."""
    return context_frames_of(cfg) + int(sc.pushforward_steps) + int(sc.rollout_steps)


def pair_window(cfg, sc, nt) -> int:
    """Refiners train on (state after p operator steps, next state) pairs: h + P + 1 frames."""
    return context_frames_of(cfg) + int(sc.pushforward_steps) + 1


def corrector_uses(cfg, sc) -> set[str]:
    """The latent corrector reads the encoder's latents; the field corrector also decodes the operator's step."""
    c = cfg.model.get("corrector")
    field = c is not None and str(c.get("kind", "latent")) == "field"
    return {"encoder", "operator", "corrector"} | ({"decoder"} if field else set())


# name -> (uses(cfg, stage_cfg) -> set of submodules, window(cfg, stage_cfg, frames per trajectory) -> frames)
STAGES: dict[str, tuple[Callable, Callable]] = {
    "codec": (core_uses, core_window),
    "operator": (core_uses, core_window),
    "fno": (core_uses, core_window),
    "hybrid": (core_uses, core_window),
    "corrector": (corrector_uses, pair_window),
    "student": (lambda cfg, sc: {"encoder", "operator", "corrector", "student"}, pair_window),
    "steady": (lambda cfg, sc: {"encoder", "decoder", "steady"}, lambda cfg, sc, nt: int(nt)),
}


def check_known(name: str) -> None:
    if name not in STAGES:
        raise ConfigError(f"stage_order names unknown stage {name!r}; known stages: {', '.join(STAGES)}")


def uses(cfg, name: str) -> set[str]:
    check_known(name)
    return STAGES[name][0](cfg, cfg.stages[name])


def window(cfg, name: str, nt: int) -> int:
    check_known(name)
    return STAGES[name][1](cfg, cfg.stages[name], nt)


def teachers(cfg, name: str) -> set[str]:
    """Submodules stage ``name`` uses frozen: they must have been trained by an earlier stage."""
    return uses(cfg, name) - set(cfg.stages[name].trainable)
