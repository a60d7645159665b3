"""The corrector in physical space (issue 19 item 2; ``model.corrector.kind = 'field'``).

The latent corrector (models/corrector.py) explains none of the latent residual it is trained on; a small periodic
CNN fitted to the *physical* one-step residual explains 57–60 % of it, but only when the corrected field is carried
in the rollout state (docs/benchmarks.md, "What would help"). So the rollout state is (z, û):

    z' = F(z)                 the operator's latent step
    d  = D(z')                decoded on the training grid
    û' = d + C([û, d], log ν)   the field corrector (models/field_cnn.py, zero at init: û' = d untrained)

and the next latent state is, by ``model.corrector.field.state``:

* ``'encode'`` (variant a): z'' = E(û') — the corrected field re-enters the latent rollout;
* ``'carry'``  (variant b): z'' = z' — the latent rollout is the operator's own; û' is only fed to the next
  corrector call beside D(z'').

The state's field part is the last h corrected frames (h = ``model.context_frames``; the encoder of variant (a)
reads h frames), starting from the given ones; the rollout's output is û. One network call per step, deterministic:
there is no sampler, so nothing for a student to distil (the config checks refuse the student stage with this kind).
Output is on the training grid only; the correction is not defined between grid points (``check_grid_output``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ups_jax.data.grids import grid_points
from ups_jax.models.field_cnn import FieldCNN

KINDS = ("latent", "field")
STATE_UPDATES = ("encode", "carry")


def corrector_kind(cfg_model) -> str:
    """``model.corrector.kind`` ('latent' when absent: configs saved before the field corrector existed)."""
    c = cfg_model.get("corrector") if cfg_model is not None else None
    kind = "latent" if c is None else str(c.get("kind", "latent"))
    if kind not in KINDS:
        from ups_jax.errors import ConfigError

        raise ConfigError(f"model.corrector.kind={kind!r}: choose 'latent' (diffusion corrector on the latent state) "
                          f"or 'field' (periodic CNN on the decoded field)")
    return kind


class FieldCorrector(nnx.Module):
    """û' = d + C([û_prev, d], ν) on the grid; ``state`` 'encode' | 'carry' says what the next latent state is."""

    kind = "field"

    def __init__(self, *, dims: int, width: int, kernel: int, depth: int, state: str, rngs: nnx.Rngs):
        if state not in STATE_UPDATES:
            raise ValueError(f"model.corrector.field.state={state!r}: choose 'encode' (z = E(û), variant a) or "
                             f"'carry' (keep the operator's z, feed û beside it, variant b)")
        self.state_update = state
        self.cnn = FieldCNN(num_inputs=2, width=width, kernel=kernel, depth=depth, dims=dims, rngs=rngs)

    @property
    def calls(self) -> int:
        """Network evaluations per rollout step (the CNN; the decoder call is counted with the operator's)."""
        return 1

    def correction(self, u_prev: jax.Array, decoded: jax.Array, nu) -> jax.Array:
        """(B, *grid) each, normalised → the correction (B, *grid)."""
        return self.cnn(jnp.stack([u_prev, decoded], axis=-1), nu)

    def __call__(self, u_prev: jax.Array, decoded: jax.Array, nu) -> jax.Array:
        return decoded + self.correction(u_prev, decoded, nu)


def decode_grid(model, z: jax.Array, x01: jax.Array) -> jax.Array:
    """D(z) on the grid ``x01``: (B, T, D) → (B, *grid)."""
    grid = x01.shape[:-1] if x01.ndim > 1 else x01.shape
    return model.decode(z, grid_points(x01))[..., 0].reshape((z.shape[0],) + tuple(grid))


def advance(model, z, ctx, x01, u_new):
    """The next state after the corrected frame ``u_new``: the context window slides; z by the state update."""
    ctx = jnp.concatenate([ctx[:, 1:], u_new[:, None]], axis=1)
    z = model.encode_frames(ctx, x01) if model.corrector.state_update == "encode" else z
    return z, ctx


def field_step(model, z, ctx, dt, nu, x01):
    """One corrected step from the state (z (B, T, D), ctx (B, h, *grid) normalised) → (z'', ctx'', û')."""
    z_pred = model.step(z, dt, nu)
    u_new = model.corrector(ctx[:, -1], decode_grid(model, z_pred, x01), nu)
    z_next, ctx_next = advance(model, z_pred, ctx, x01, u_new)
    return z_next, ctx_next, u_new


def field_states(model, u_ctx, dt, nu, x01, steps: int):
    """The (z, ctx) states after 0..steps corrected steps from the given frames, and the predicted frames:
    (z (B, steps+1, T, D), ctx (B, steps+1, h, *grid), û (B, steps, *grid))."""
    z0 = model.encode_frames(u_ctx, x01)

    def body(carry, _):
        z, ctx, u = field_step(model, *carry, dt, nu, x01)
        return (z, ctx), (z, ctx, u)

    _, (zs, ctxs, us) = jax.lax.scan(body, (z0, u_ctx), None, length=int(steps))
    first = lambda a0, a: jnp.concatenate([a0[:, None], jnp.swapaxes(a, 0, 1)], axis=1)
    return first(z0, zs), first(u_ctx, ctxs), jnp.swapaxes(us, 0, 1)


def field_rollout(model, u_ctx, dt, nu, x01, steps: int) -> jax.Array:
    """The corrected rollout: context frames (B, h, *grid) normalised → û (B, steps, *grid)."""
    z0 = model.encode_frames(u_ctx, x01)

    def body(carry, _):
        z, ctx, u = field_step(model, *carry, dt, nu, x01)
        return (z, ctx), u

    _, us = jax.lax.scan(body, (z0, u_ctx), None, length=int(steps))
    return jnp.swapaxes(us, 0, 1)


def is_field(model, refine: str) -> bool:
    """True when ``refine`` names the model's field corrector."""
    return refine == "corrector" and getattr(getattr(model, "corrector", None), "kind", "latent") == "field"


GRID_ONLY = ("the field corrector (model.corrector.kind='field') predicts on the training grid only; drop "
             "--x-query/--nx-out (or out_x01), or use --refine none")


def build_field_corrector(c, *, dims: int, rngs: nnx.Rngs) -> FieldCorrector:
    f = c.get("field")
    if f is None:
        raise ValueError("model.corrector.kind='field' needs a model.corrector.field section (width, kernel, depth, "
                         "state)")
    return FieldCorrector(dims=dims, width=int(f.width), kernel=int(f.kernel), depth=int(f.depth),
                          state=str(f.state), rngs=rngs)
