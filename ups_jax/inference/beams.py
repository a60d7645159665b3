"""What both beam searches (inference/ttc.py over latent states, inference/field_ttc.py over corrected fields)
share: choosing the kept beams among the candidates, and following the best beam's back-pointers at the end."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def take_beams(a: jax.Array, idx: jax.Array) -> jax.Array:
    """(B, W·N, ...) candidates → the W chosen by ``idx`` (B, W): (B, W, ...)."""
    b, w = idx.shape
    return jnp.take_along_axis(a, idx.reshape((b, w) + (1,) * (a.ndim - 2)), axis=1)


def follow_best_beam(outs: dict, score: jax.Array, state: str):
    """After a beam search's scan: follow the back-pointers of the best-scoring beam; returns its states
    ``outs[state]`` per step (B, steps, ...) and the log (evaluations, chosen and candidate rewards)."""
    rows = jnp.arange(score.shape[0])

    def back(beam, o):
        return o["parent"][rows, beam], (o[state][rows, beam], o["reward"][rows, beam])

    _, (xs, rs) = jax.lax.scan(back, jnp.argmax(score, axis=1),
                               {k: outs[k] for k in (state, "parent", "reward")}, reverse=True)
    log = {"evaluations": outs["evaluations"], "chosen_reward": jnp.swapaxes(rs, 0, 1),
           "candidate_reward_mean": outs["cand_mean"], "candidate_reward_best": outs["cand_best"]}
    return jnp.swapaxes(xs, 0, 1), log
