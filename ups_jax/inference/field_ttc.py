"""Test-time compute over the field corrector's (z, û) state (``model.corrector.kind='field'``).

The field corrector is deterministic (one CNN call per step, no noise): its candidates are not samples but the
correction applied with N strengths, û_n = D(z') + α_n · C([û, D(z')], ν), α_n = 1 + (n − ⌊N/2⌋)/⌈N/2⌉
(N = 4: 0, ½, 1, 1½; α = 0 is the operator's own decoded step, α = 1 the trained corrector). They cost one operator
step, one decode and one CNN call per beam, whatever N; variant (a) (``state='encode'``) then encodes each
candidate. The search is otherwise the latent one's (inference/ttc.py): physics rewards of each candidate against
its parent beam's field, a greedy lookahead of H − 1 corrected steps (α = 1), the W best by cumulative reward +
lookahead, back-pointers at the end. Per step and trajectory the plan costs

    3·W + e·W·N + W·N·(H − 1)·(3 + e)      (e = 1 with state='encode', else 0)

evaluations, counted from the array shapes as the latent search does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ups_jax.inference.beams import follow_best_beam, take_beams
from ups_jax.inference.rewards import reward
from ups_jax.models.field_corrector import advance, decode_grid, field_step


def field_step_cost(candidates: int, beam_width: int, horizon: int, encode: bool) -> int:
    N, W, H, e = int(candidates), int(beam_width), int(horizon), int(bool(encode))
    return 3 * W + e * W * N + W * N * (H - 1) * (3 + e)


def correction_scales(n: int) -> np.ndarray:
    """α_n, n = 0..N−1: centred on 1 (the trained correction), spaced 1/⌈N/2⌉, starting at 0 for even N."""
    n = int(n)
    return (1.0 + (np.arange(n) - n // 2) / max(1, -(-n // 2))).astype(np.float32)


def field_beam_search(m, x01, u_ctx, dt, nu, *, steps: int, plan, weights, mean: float, std: float):
    """u_ctx: (B, h, *grid) normalised context → (û (B, steps, *grid) normalised along each sample's best beam,
    log as ``ttc.beam_search``'s)."""
    B, h, grid = u_ctx.shape[0], u_ctx.shape[1], tuple(u_ctx.shape[2:])
    N, W, H = plan.candidates, plan.beam_width, plan.horizon
    alphas = jnp.asarray(correction_scales(N)).reshape((1, N) + (1,) * len(grid))

    def rep(a, n):
        return jnp.repeat(a, n, axis=0)

    def per_sample(x) -> int:
        return x.shape[0] // B

    def phys(f):   # (n, *grid) normalised → (n, X) physical, flat
        return (f * std + mean).reshape(f.shape[0], -1)

    dt_w, nu_w, dt_c, nu_c = rep(dt, W), rep(nu, W), rep(dt, W * N), rep(nu, W * N)
    z0 = m.encode_frames(u_ctx, x01)
    T, D = z0.shape[1:]
    ref = jnp.mean(phys(u_ctx[:, -1]), axis=-1)[:, None, None]
    net = m.corrector

    def body(carry, _):
        zb, cb, score = carry                                   # (B, W, T, D), (B, W, h, *grid), (B, W)
        evals = 0
        zf, cf = zb.reshape(B * W, T, D), cb.reshape((B * W, h) + grid)
        z_pred = m.step(zf, dt_w, nu_w)
        d = decode_grid(m, z_pred, x01)
        corr = net.correction(cf[:, -1], d, nu_w)
        evals += 3 * per_sample(zf)                             # operator, decoder, CNN per beam
        u_c = (d[:, None] + alphas * corr[:, None]).reshape((B * W * N,) + grid)
        z_c, c_c = advance(m, rep(z_pred, N), rep(cf, N), x01, u_c)
        if net.state_update == "encode":
            evals += per_sample(u_c)
        f_c = phys(u_c)
        X = f_c.shape[-1]
        r = reward(f_c.reshape(B, W, N, X), phys(cf[:, -1]).reshape(B, W, 1, X), ref, weights)   # (B, W, N)
        value = jnp.zeros_like(r)
        zl, cl, fl = z_c, c_c, f_c
        for j in range(1, H):                                   # greedy lookahead with the trained correction
            zl, cl, ul = field_step(m, zl, cl, dt_c, nu_c, x01)
            evals += (3 + (net.state_update == "encode")) * per_sample(ul)
            f_new = phys(ul)
            value = value + plan.gamma ** j * reward(f_new.reshape(B, W, N, X), fl.reshape(B, W, N, X), ref,
                                                     weights)
            fl = f_new
        cum = (score[:, :, None] + r).reshape(B, W * N)
        _, idx = jax.lax.top_k(cum + value.reshape(B, W * N), W)

        def take(a):
            return take_beams(a, idx)

        zb_new = take(z_c.reshape(B, W * N, T, D))
        cb_new = take(c_c.reshape((B, W * N, h) + grid))
        out = {"u": cb_new[:, :, -1], "parent": idx // N, "reward": take(r.reshape(B, W * N)),
               "evaluations": jnp.int32(evals), "cand_mean": jnp.mean(r), "cand_best": jnp.mean(jnp.max(r, (1, 2)))}
        return (zb_new, cb_new, take(cum)), out

    init = (jnp.broadcast_to(z0[:, None], (B, W, T, D)), jnp.broadcast_to(u_ctx[:, None], (B, W, h) + grid),
            jnp.zeros((B, W), jnp.float32))
    (_, _, score), outs = jax.lax.scan(body, init, None, length=int(steps))
    return follow_best_beam(outs, score, "u")
