"""Stage losses. Every stage runs through the same loop (``loop.run_stage``); stages differ only here.

A batch is ``{'u': (B, h+K, X) or (B, h+K, X, Y), 'dt': (B,), 'nu': (B,)}`` (2-D fields are compared on the
flattened grid, queries are the grid's points, ``data/grids.py``): ``h`` context frames (``model.context_frames``) then
``K`` target frames (``stages.<name>.rollout_steps``). All losses work on *normalised* fields (train-split
z-score) and are averaged MSEs. For UPS, with W_k = frames k..k+h-1 (the window ending at frame k+h-1):

- recon:    ‖D(E(W_k)) − u_{k+h-1}‖², k = 0..K       (codec: the encoder/decoder are trained, not random)
- one_step: ‖D(F(E(W_0))) − u_h‖²                    (decoded one-step prediction, physical space)
- latent:   ‖F(E(W_0)) − sg(E(W_1))‖²                (latent consistency with the encoder's next state)
- rollout:  mean_k ‖D(F^k(E(W_0))) − u_{h+k-1}‖², k=1..K (unrolled with lax.scan, gradients through the chain)

For the FNO baseline (PDEBench ``fno/train.py``, autoregressive training): the sum over the K rolled-out
steps of the per-step MSE, gradients through the whole rollout.

Two stabilisers for long rollouts (Brandstetter, Worrall & Welling 2022), per stage, off by default:
``input_noise`` σ adds N(0, σ²) (normalised units) to the context frames, so that the model learns to correct
perturbed inputs as it meets them at test time; ``pushforward_steps`` P first rolls the model P steps forward
*without* gradient and trains the K steps after that, so that it learns from its own outputs' distribution
(the window is then h + P + K frames and every target shifts by P).

How the pushforward depth is drawn (issue 19; per stage, defaults = the fixed depth above):

- ``pushforward_sampling`` 'fixed': every window starts at depth p = P (today's behaviour, bit for bit);
  'uniform': p ~ U{0..P} drawn *per window* (as the corrector's pairs in refiner_losses.py), so every batch mixes
  clean one-step starts (p = 0: exactly the loss without pushforward) with drifted ones. Per window rather than
  per batch: the gradient does not swing between the clean and the drifted regime from one update to the next,
  and the shapes stay static (all P steps are computed, the start state and targets are selected per window).
- ``pushforward_curriculum`` C > 0: the max depth grows with the optimizer step s as min(P, ⌊P·s/C⌋) (MP-PDE's
  training: depth 0 first); 'fixed' then uses that max for every window. s comes from the compiled step
  (training/step.py passes it), so the curriculum needs no recompilation.
- ``pushforward_grad_steps`` G: gradients flow through the last G of the p pushforward steps (the input of
  step p−G+1 is held constant; with p < G through all p steps and the encoder); 0 = none, as before.
- ``rollout_loss`` 'mse' (normalised units) or 'rel_l2': the per-frame relative L2 error in *physical* units,
  ‖û − u‖₂ / ‖u‖₂ over the (queried) grid points, averaged over frames and windows — what nRMSE measures.
  It needs the train split's normalisation (``norm``). It replaces the MSE of the one-step and rollout terms;
  the latent and reconstruction terms stay MSEs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ups_jax.data.grids import grid_points
from ups_jax.errors import ConfigError

PUSHFORWARD_SAMPLING = ("fixed", "uniform")
ROLLOUT_LOSSES = ("mse", "rel_l2")


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def _noisy(u_ctx, sigma: float, rng):
    return u_ctx + sigma * jax.random.normal(rng, u_ctx.shape, u_ctx.dtype) if sigma > 0 else u_ctx


def pushforward_max_depth(step, pushforward_steps: int, curriculum_steps: int = 0):
    """The max depth at optimizer step ``step``: min(P, ⌊P·step/C⌋), or P when C = 0 or ``step`` is None."""
    P, C = int(pushforward_steps), int(curriculum_steps)
    if C <= 0 or step is None:
        return jnp.int32(P)
    return jnp.minimum(P, (P * jnp.asarray(step, jnp.int32)) // C).astype(jnp.int32)


def pushforward_depths(rng, batch_size: int, step, *, pushforward_steps: int, sampling: str = "fixed",
                       curriculum_steps: int = 0):
    """The depth p of each window, (B,) int32: the max depth ('fixed') or U{0..max depth} ('uniform')."""
    p_max = pushforward_max_depth(step, pushforward_steps, curriculum_steps)
    if sampling == "uniform":
        return jax.random.randint(rng, (batch_size,), 0, p_max + 1, dtype=jnp.int32)
    return jnp.full((batch_size,), p_max, jnp.int32)


def check_pushforward_options(*, pushforward_steps: int, sampling: str, curriculum_steps: int, grad_steps: int,
                              rollout_loss: str, where: str = "stage"):
    """One-line ConfigError on a bad value (``where`` names the config section, e.g. 'stages.operator')."""
    P, G = int(pushforward_steps), int(grad_steps)
    if sampling not in PUSHFORWARD_SAMPLING:
        raise ConfigError(f"{where}.pushforward_sampling={sampling!r}: choose 'fixed' or 'uniform'")
    if int(curriculum_steps) < 0:
        raise ConfigError(f"{where}.pushforward_curriculum={curriculum_steps}: use 0 (off) or a number of steps")
    if not 0 <= G <= P:
        raise ConfigError(f"{where}.pushforward_grad_steps={G}: use 0 .. pushforward_steps={P}")
    if rollout_loss not in ROLLOUT_LOSSES:
        raise ConfigError(f"{where}.rollout_loss={rollout_loss!r}: choose 'mse' or 'rel_l2'")


def _pushforward_start(model, z0, dt, nu, p, P: int, G: int):
    """The start state of the K trained steps: the model's own p-step state from z0 (per window), gradients
    through its last G steps only (the input of step j is constant for j ≤ p − G + 1)."""
    B = z0.shape[0]
    if G == 0:
        states = jnp.concatenate([z0[:, None], jax.lax.stop_gradient(model.rollout(z0, dt, nu, P))], axis=1)
    else:
        z, states = z0, [z0]
        for j in range(1, P + 1):
            cut = (j <= p - G + 1)[:, None, None]
            z = model.step(jnp.where(cut, jax.lax.stop_gradient(z), z), dt, nu)
            states.append(z)
        states = jnp.stack(states, axis=1)                                      # (B, P+1, T, D)
    return states[jnp.arange(B), p]


def make_ups_loss(weights, *, x01: jax.Array, rollout_steps: int, query_points: int = 0, context_frames: int = 1,
                  pushforward_steps: int = 0, input_noise: float = 0.0, pushforward_sampling: str = "fixed",
                  pushforward_curriculum: int = 0, pushforward_grad_steps: int = 0, rollout_loss: str = "mse",
                  recon_windows: str = "all", norm: dict | None = None):
    """Returns ``loss_fn(model, batch, rng, step=None) -> (loss, terms)`` for batch {'u': (B,h+P+K,X), 'dt': (B,),
    'nu': (B,)}; ``step`` is the optimizer step (the curriculum; None = finished). ``recon_windows``: the recon
    term over 'all' P + K + 1 windows (each encoded: the codec stage) or over 'given', the given frame's encoding
    z0 that the dynamics terms compute anyway (one decode more, no encoder call more: issue 19 item 3)."""
    if recon_windows not in ("all", "given"):
        raise ConfigError(f"recon_windows={recon_windows!r}: choose 'all' or 'given'")
    w = {k: float(weights[k]) for k in ("recon", "one_step", "latent", "rollout")}
    need_dynamics = w["one_step"] > 0 or w["latent"] > 0 or w["rollout"] > 0
    K, h, P = int(rollout_steps), int(context_frames), int(pushforward_steps)
    pts = grid_points(x01)           # the grid as query points: (X,) in 1-D, (X·Y, 2) in 2-D
    X = int(pts.shape[0])            # grid points (X·Y in 2-D); targets are compared on the flattened grid
    Q = int(query_points) if 0 < int(query_points) < X else X
    sigma = float(input_noise)
    G, C = int(pushforward_grad_steps), int(pushforward_curriculum)
    check_pushforward_options(pushforward_steps=P, sampling=pushforward_sampling, curriculum_steps=C,
                              grad_steps=G, rollout_loss=rollout_loss)
    # today's fixed-depth path (slices, one stop-gradient rollout) unless a per-window depth is asked for
    per_window = P > 0 and (pushforward_sampling == "uniform" or C > 0 or G > 0)
    if rollout_loss == "rel_l2":
        if norm is None:
            raise ConfigError("rollout_loss='rel_l2' needs the train split's normalisation (norm={'mean', 'std'})")
        offset = float(norm["mean"]) / float(norm["std"])    # physical u ∝ normalised u + mean/std

        def frame_loss(pred, true):   # (B, K, Q) normalised -> (K,) mean relative L2 per frame
            err = jnp.sqrt(jnp.sum(jnp.square(pred - true), axis=-1) + 1e-12)
            return jnp.mean(err / jnp.sqrt(jnp.sum(jnp.square(true + offset), axis=-1) + 1e-12), axis=0)
    else:
        def frame_loss(pred, true):
            return jnp.mean(jnp.square(pred - true), axis=(0, 2))

    def loss_fn(model, batch, rng, step=None):
        u = batch["u"]
        B, grid = u.shape[0], u.shape[2:]
        uf = u.reshape(u.shape[:2] + (X,))                                   # (B, W, points)
        if per_window:
            q_rng, n_rng, p_rng = jax.random.split(rng, 3)
            p = pushforward_depths(p_rng, B, step, pushforward_steps=P, sampling=pushforward_sampling,
                                   curriculum_steps=C)
            rows = jnp.arange(B)
        else:
            q_rng, n_rng = jax.random.split(rng)
        if Q < X:  # random query subset shared by the batch: any-point decoder, cheaper training
            idx = jnp.sort(jax.random.choice(q_rng, X, (Q,), replace=False))
        else:
            idx = jnp.arange(X)
        xq = pts[idx]
        terms = {}
        z_next = None   # sg(E(W_{P+1})): the latent term's target
        if w["recon"] > 0 and recon_windows == "all":   # the encoder's view of the windows W_0 .. W_{P+K}
            n_enc = P + K + 1
            windows = jnp.stack([u[:, k:k + h] for k in range(n_enc)], axis=1)  # (B, n_enc, h, *grid)
            z_all = model.encode_frames(windows.reshape((B * n_enc, h) + grid), x01)
            T, D = z_all.shape[-2:]
            rec = model.decode(z_all, xq)[..., 0]
            terms["recon"] = _mse(rec, uf[:, h - 1:h - 1 + n_enc][:, :, idx].reshape(B * n_enc, -1))
            z_all = z_all.reshape(B, n_enc, T, D)
            z_next = z_all[rows, p + 1] if per_window else z_all[:, P + 1]
        elif w["latent"] > 0:   # only the window the latent term compares with (not all P + K + 1)
            if per_window:
                z_next = model.encode_frames(u[rows[:, None], (p + 1)[:, None] + jnp.arange(h)], x01)
            else:
                z_next = model.encode_frames(u[:, P + 1:P + 1 + h], x01)
        if need_dynamics or recon_windows == "given":
            z0 = model.encode_frames(_noisy(u[:, :h], sigma, n_rng), x01)
            T, D = z0.shape[-2:]
        if w["recon"] > 0 and recon_windows == "given":     # the given frame back from z0 = E(given frames)
            terms["recon"] = _mse(model.decode(z0, xq)[..., 0], uf[:, h - 1][:, idx])
        if need_dynamics:
            if per_window:   # each window starts at its own depth p
                z0 = _pushforward_start(model, z0, batch["dt"], batch["nu"], p, P, G)
                targets = uf[rows[:, None], h + p[:, None] + jnp.arange(K)]          # (B, K, points)
            else:
                if P:   # pushforward: start from the model's own P-step prediction, no gradient through it
                    z0 = jax.lax.stop_gradient(model.rollout(z0, batch["dt"], batch["nu"], P)[:, -1])
                targets = uf[:, h + P:h + P + K]
            zs = model.rollout(z0, batch["dt"], batch["nu"], K)                 # (B,K,T,D)
            if w["one_step"] > 0 or w["rollout"] > 0:
                dec = model.decode(zs.reshape(B * K, T, D), xq)[..., 0].reshape(B, K, -1)
                per_step = frame_loss(dec, targets[:, :, idx])                  # (K,)
                terms["one_step"] = per_step[0]
                terms["rollout"] = jnp.mean(per_step)
            if w["latent"] > 0:
                terms["latent"] = _mse(zs[:, 0], jax.lax.stop_gradient(z_next))
        loss = sum(w[k] * v for k, v in terms.items() if w[k] > 0)
        out = {f"loss/{k}": v for k, v in terms.items() if w[k] > 0}
        if per_window:
            out["diag/pushforward_depth"] = jnp.mean(p.astype(jnp.float32))
        return loss, out

    loss_fn.takes_step = True      # training/step.py passes the optimizer step
    return loss_fn


def make_fno_loss(*, x01: jax.Array, rollout_steps: int, context_frames: int, pushforward_steps: int = 0,
                  input_noise: float = 0.0):
    """PDEBench's autoregressive FNO loss: Σ_k MSE(pred_k, u_{h+P+k-1}) over the K rolled-out steps."""
    K, h, P, sigma = int(rollout_steps), int(context_frames), int(pushforward_steps), float(input_noise)

    def loss_fn(model, batch, rng):
        u = batch["u"]
        dt, nu = batch["dt"], batch["nu"]
        ctx = _noisy(u[:, :h], sigma, rng)
        if P:
            ctx = jax.lax.stop_gradient(
                jnp.concatenate([ctx, model.rollout_fields(ctx, dt, nu, x01, P)], axis=1)[:, -h:])
        pred = model.rollout_fields(ctx, dt, nu, x01, K)                          # (B, K, *grid)
        err = jnp.square(pred - u[:, h + P:h + P + K])
        per_step = jnp.mean(err.reshape(err.shape[:2] + (-1,)), axis=(0, 2))
        return jnp.sum(per_step), {"loss/one_step": per_step[0], "loss/rollout": jnp.mean(per_step)}

    return loss_fn


BASELINE_NAMES = {"fno": "FNO", "hybrid": "hybrid"}
PUSHFORWARD_DEFAULTS = dict(pushforward_sampling="fixed", pushforward_curriculum=0, pushforward_grad_steps=0,
                            rollout_loss="mse", recon_windows="all")


def make_stage_loss(cfg, stage_cfg, *, x01: jax.Array, norm: dict | None = None):
    """The loss of one stage of ``cfg`` (dispatch on ``model.kind``); ``norm`` the train split's mean/std
    (needed by ``rollout_loss='rel_l2'``). Configs saved before issue 19 lack the pushforward keys: defaults."""
    from ups_jax.models import context_frames, model_kind

    common = dict(x01=x01, rollout_steps=stage_cfg.rollout_steps, context_frames=context_frames(cfg),
                  pushforward_steps=stage_cfg.pushforward_steps, input_noise=stage_cfg.input_noise)
    options = {k: stage_cfg.get(k, v) for k, v in PUSHFORWARD_DEFAULTS.items()}
    if model_kind(cfg) != "ups":                 # the FNO and hybrid baselines: PDEBench's autoregressive loss
        if options != PUSHFORWARD_DEFAULTS:
            raise ConfigError(f"{sorted(k for k in options if options[k] != PUSHFORWARD_DEFAULTS[k])}: the "
                              f"{BASELINE_NAMES[model_kind(cfg)]} baseline's loss is PDEBench's (fixed depth, MSE); leave these at "
                              f"their defaults")
        return make_fno_loss(**common)
    return make_ups_loss(stage_cfg.losses, query_points=stage_cfg.query_points, norm=norm, **options, **common)

