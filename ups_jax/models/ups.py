"""UPS: encoder + latent operator + any-point decoder, built only from ``cfg.model`` (+ the data grid size).

Also the helpers the training / checkpoint code needs: parameter counts, an allocation-free abstract model, flat
``'/'``-joined parameter shapes and a mapping from a parameter path to the config key that sets its dimensions, so
a checkpoint/config mismatch can be reported as e.g. ``operator/input_proj/kernel: checkpoint (32, 96) vs config
(32, 64) — set by model.latent_dim / model.operator.hidden_dim``.

Usable in the functional "pattern B" style::

    graphdef, state = nnx.split(model)
    @jax.jit
    def f(state, z, dt, nu):
        return nnx.merge(graphdef, state).step(z, dt, nu)
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ups_jax.config import flatten
from ups_jax.data.grids import grid_points
from ups_jax.errors import ConfigError
from ups_jax.models.decoder import AnyPointDecoder
from ups_jax.models.encoder import GridEncoder
from ups_jax.models.operator import LatentOperator


class ModelConfigError(ConfigError, ValueError):
    """A ``cfg.model`` value is inconsistent (e.g. a divisibility rule); a one-line UserError and a ValueError."""


class UPS(nnx.Module):
    """``context_frames`` (h): the encoder reads the last h frames as channels (oldest first); the latent state
    z_t = E(u_{t-h+1..t}) is stepped by the operator to z_{t+1} ≈ E(u_{t-h+2..t+1}); the decoder reads out the
    newest frame u_{t+1} at any point."""

    def __init__(self, *, encoder: GridEncoder, operator: LatentOperator, decoder: AnyPointDecoder,
                 context_frames: int = 1, corrector=None, student=None, steady=None):
        self.encoder = encoder
        self.operator = operator
        self.decoder = decoder
        self.context_frames = int(context_frames)
        # optional later stages (models/corrector.py, models/steady.py); None when not configured
        self.corrector = corrector
        self.student = student
        self.steady = steady

    def encode(self, u: jax.Array, x01: jax.Array) -> jax.Array:
        """u: (B, X, h·C) — the h context frames as channels, oldest first —, x01: (X,) or (B, X) in [0, 1)
        → z: (B, T, D)."""
        return self.encoder(u, x01)

    def encode_frames(self, u_ctx: jax.Array, x01: jax.Array) -> jax.Array:
        """u_ctx: (B, h, X) or (B, h, X, Y) context frames (oldest first, one channel) → z: (B, T, D)."""
        return self.encode(jnp.moveaxis(u_ctx, 1, -1), x01)

    def step(self, z: jax.Array, dt: jax.Array, nu: jax.Array) -> jax.Array:
        """z: (B, T, D), dt, ν: (B,) or scalars (> 0) → z': (B, T, D)."""
        return self.operator(z, dt, nu)

    def decode(self, z: jax.Array, xq01: jax.Array) -> jax.Array:
        """z: (B, T, D), xq01: (Q,) or (B, Q) in [0, 1) → (B, Q, C)."""
        return self.decoder(z, xq01)

    def rollout(self, z: jax.Array, dt: jax.Array, nu: jax.Array, num_steps: int, refine: str = "none",
                rng: jax.Array | None = None) -> jax.Array:
        """Autoregressive latent rollout with ``lax.scan``: z (B, T, D) → (B, num_steps, T, D) = z_1..z_K.
        ``refine`` 'corrector' / 'student': predictor–corrector steps with noise from ``rng``
        (models/corrector.py)."""
        if refine != "none":
            from ups_jax.models.corrector import refined_rollout

            return refined_rollout(self, z, dt, nu, num_steps, refine, rng)

        return self.operator.rollout(z, dt, nu, num_steps)

    def rollout_fields(self, u_ctx: jax.Array, dt: jax.Array, nu: jax.Array, x01: jax.Array, steps: int,
                       mode: str = "latent", refine: str = "none", rng: jax.Array | None = None) -> jax.Array:
        """The surrogate interface every model implements (``FNO1d`` too): context frames (B, h, X) → the next
        ``steps`` frames (B, steps, X) on the grid ``x01``, autoregressively.

        mode='latent': encode once, step in latent space, decode every step in one batched call (UPT's latent
        rollout). mode='reencode': decode → slide the context window → re-encode after every step.
        ``refine``: see :meth:`rollout` (latent mode only)."""
        b, n = u_ctx.shape[0], u_ctx.shape[2:]           # n: the grid, (X,) or (X, Y)
        xq = grid_points(x01)                            # the grid as the decoder's query points
        steps = int(steps)
        if refine != "none" and mode != "latent":
            raise ValueError(f"refine={refine!r} needs eval.rollout_mode='latent' (got {mode!r})")
        if mode == "latent" and refine != "none":
            from ups_jax.models.field_corrector import field_rollout, is_field

            if is_field(self, refine):   # the (z, û) state: the output is the corrected field û itself
                return field_rollout(self, u_ctx, dt, nu, x01, steps)
        if mode == "latent":
            zs = self.rollout(self.encode_frames(u_ctx, x01), dt, nu, steps, refine, rng)   # (B, S, T, D)
            t, d = zs.shape[-2:]
            return self.decode(zs.reshape(b * steps, t, d), xq)[..., 0].reshape((b, steps) + n)
        if mode != "reencode":
            raise ValueError(f"eval.rollout_mode={mode!r}: choose 'latent' or 'reencode'")

        def body(ctx, _):
            nxt = self.decode(self.step(self.encode_frames(ctx, x01), dt, nu), xq)[..., 0].reshape((b,) + n)
            return jnp.concatenate([ctx[:, 1:], nxt[:, None]], axis=1), nxt

        _, us = jax.lax.scan(body, u_ctx, None, length=steps)
        return jnp.swapaxes(us, 0, 1)

    def steady_state(self, u_ctx: jax.Array, x01: jax.Array, horizon: jax.Array, nu: jax.Array,
                     xq01: jax.Array | None = None) -> jax.Array:
        """The steady prior's long-time state ``horizon`` after the context frames (B, h, X) → (B, Q) at ``xq01``
        (default: the grid)."""
        if self.steady is None:
            raise ValueError("this model has no steady prior (configure model.steady)")
        z = self.steady(self.encode_frames(u_ctx, x01), horizon, nu)
        return self.decode(z, x01 if xq01 is None else xq01)[..., 0]

    def __call__(self, u: jax.Array, x01: jax.Array, dt: jax.Array, nu: jax.Array,
                 xq01: jax.Array | None = None) -> jax.Array:
        """One physical-space step: decode(step(encode(u))) at ``xq01`` (default: the input grid) → (B, Q, C)."""
        z = self.step(self.encode(u, x01), dt, nu)
        return self.decode(z, grid_points(x01) if xq01 is None else xq01)


# ---------------------------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------------------------

def _model_section(cfg) -> ml_collections.ConfigDict:
    if "model" in cfg:
        return cfg.model
    if "latent_dim" in cfg:  # already the model section
        return cfg
    raise ConfigError("config has no 'model' section")


def _get(section, key: str, prefix: str):
    if key not in section:
        raise ConfigError(f"config is missing key '{prefix}.{key}'")
    return section[key]


# The baselines are whole models trained by one autoregressive field loss (training/losses.py make_fno_loss):
# PDEBench's FNO and the coarse solver with a learned correction (models/hybrid.py).
BASELINE_KINDS = ("fno", "hybrid")
MODEL_KINDS = ("ups",) + BASELINE_KINDS


def model_kind(cfg) -> str:
    """'ups' (default), 'fno' or 'hybrid' (``cfg.model.kind``); the last two are baselines (BASELINE_KINDS)."""
    kind = str(_model_section(cfg).get("kind", "ups"))
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r}: choose one of {', '.join(repr(k) for k in MODEL_KINDS)}")
    return kind


def context_frames(cfg) -> int:
    """How many past frames the model reads (``cfg.model.context_frames``, default 1)."""
    h = int(_model_section(cfg).get("context_frames", 1))
    if h < 1:
        raise ConfigError(f"model.context_frames={h} must be >= 1")
    return h


def scale_norm(cfg) -> bool:
    """``cfg.model.scale_norm``: the codec works on each sample's field divided by its RMS and carries log RMS as
    the last latent dim (models/encoder.py); False when absent (configs from before the key)."""
    return bool(_model_section(cfg).get("scale_norm", False))


def build_model(cfg, num_points, *, channels: int = 1, rngs: nnx.Rngs | None = None,
                seed: int | None = None):
    """Builds the model of ``cfg.model`` (UPS, or the FNO baseline when ``model.kind='fno'``) from the config only;
    ``num_points`` (the grid: X in 1-D, (X, Y) in 2-D) and ``channels`` (C) come from the data.

    Randomness: ``rngs`` if given, else ``nnx.Rngs(seed)`` with ``seed`` defaulting to ``cfg.seed`` (or 0).
    Inconsistent dimensions raise :class:`ModelConfigError` naming the config keys.
    """
    m = _model_section(cfg)
    if rngs is None:
        if seed is None:
            seed = int(cfg.get("seed", 0)) if "model" in cfg else 0
        rngs = nnx.Rngs(seed)
    h = context_frames(cfg)
    grid = tuple(int(n) for n in (num_points if isinstance(num_points, (tuple, list)) else (num_points,)))
    if model_kind(cfg) == "hybrid":
        from ups_jax.models.hybrid import HybridSolver, hybrid_options

        if len(grid) != 1:
            raise ModelConfigError(f"model.kind='hybrid' is the 1-D Burgers solver with a correction; the data are "
                                   f"{len(grid)}-D (use model.kind='ups' or 'fno')")
        try:
            return HybridSolver(**hybrid_options(_get(m, "hybrid", "model")), rngs=rngs)
        except ValueError as e:
            raise ModelConfigError(str(e)) from e
    if model_kind(cfg) == "fno":
        from ups_jax.models.fno import FNO1d, fno_options
        from ups_jax.models.fno2d import FNO2d

        f = _get(m, "fno", "model")
        fno, options = (FNO1d, fno_options(f)) if len(grid) == 1 else (FNO2d, {"init": fno_options(f)["init"]})
        try:
            return fno(context_frames=h, channels=int(channels), modes=int(_get(f, "modes", "model.fno")),
                         width=int(_get(f, "width", "model.fno")), num_layers=int(_get(f, "num_layers", "model.fno")),
                         padding=int(_get(f, "padding", "model.fno")),
                         head_width=int(_get(f, "head_width", "model.fno")), rngs=rngs, **options)
        except ValueError as e:
            raise ModelConfigError(str(e)) from e
    d = int(_get(m, "latent_dim", "model"))
    t = int(_get(m, "latent_tokens", "model"))
    enc, op, dec = (_get(m, k, "model") for k in ("encoder", "operator", "decoder"))
    try:
        encoder = GridEncoder(
            num_points=grid[0] if len(grid) == 1 else grid, latent_tokens=t, latent_dim=d, in_channels=int(channels) * h,
            width=int(_get(enc, "width", "model.encoder")), kernel_size=int(_get(enc, "kernel_size", "model.encoder")),
            num_conv=int(_get(enc, "num_conv", "model.encoder")),
            fourier_freqs=tuple(_get(enc, "fourier_freqs", "model.encoder")),
            final_norm=bool(enc.get("final_norm", True)), raw_skip=bool(enc.get("raw_skip", False)),
            scale_norm=scale_norm(cfg), rngs=rngs)
        operator = LatentOperator(
            latent_dim=d, hidden_dim=int(_get(op, "hidden_dim", "model.operator")),
            group_size=int(_get(op, "group_size", "model.operator")),
            num_heads=int(_get(op, "num_heads", "model.operator")),
            depths=tuple(_get(op, "depths", "model.operator")),
            mlp_ratio=float(_get(op, "mlp_ratio", "model.operator")),
            cond_dim=int(_get(op, "cond_dim", "model.operator")),
            latent_tokens=t if _get(op, "pos_embed", "model.operator") else None,
            frozen_dims=int(scale_norm(cfg) and not op.get("advance_scale", True)), rngs=rngs)
        decoder = AnyPointDecoder(
            latent_dim=d, latent_tokens=t, out_channels=int(channels),
            hidden_dim=int(_get(dec, "hidden_dim", "model.decoder")),
            num_heads=int(_get(dec, "num_heads", "model.decoder")),
            num_layers=int(_get(dec, "num_layers", "model.decoder")),
            mlp_hidden=int(_get(dec, "mlp_hidden", "model.decoder")),
            fourier_freqs=tuple(_get(dec, "fourier_freqs", "model.decoder")),
            local_freqs=tuple(_get(dec, "local_freqs", "model.decoder")),
            local_mlp=int(dec.get("local_mlp", 0)), local_neighbors=int(dec.get("local_neighbors", 1)),
            raw_patch=encoder.patch_shape if encoder.raw_dims else 0, token_grid=encoder.token_grid,
            scale_norm=scale_norm(cfg), rngs=rngs)
        from ups_jax.models.corrector import build_refiners
        from ups_jax.models.steady import build_steady

        corrector, student = build_refiners(m, latent_dim=d, latent_tokens=t, rngs=rngs, dims=len(grid))
        steady = build_steady(m, latent_dim=d, latent_tokens=t, rngs=rngs)
    except ModelConfigError:
        raise
    except ValueError as e:
        raise ModelConfigError(str(e)) from e
    return UPS(encoder=encoder, operator=operator, decoder=decoder, context_frames=h, corrector=corrector,
               student=student, steady=steady)


def abstract_model(cfg, num_points, *, channels: int = 1):
    """The model with ``jax.ShapeDtypeStruct`` leaves (``nnx.eval_shape``): no parameter is allocated."""
    return nnx.eval_shape(lambda: build_model(cfg, num_points, channels=channels, seed=0))


# ---------------------------------------------------------------------------------------------------------------
# inspection
# ---------------------------------------------------------------------------------------------------------------

def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    return flatten(tree, prefix, sep="/")


def param_arrays(model: nnx.Module) -> dict[str, Any]:
    """``{'operator/input_proj/kernel': array, ...}`` for every ``nnx.Param`` (arrays or ShapeDtypeStructs)."""
    return _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """``{'operator/input_proj/kernel': (D, H), ...}`` ('/'-joined paths); works on abstract models too."""
    return {k: tuple(int(s) for s in v.shape) for k, v in sorted(param_arrays(model).items())}


def count_params(module: nnx.Module) -> dict[str, int]:
    """``{'total': n, <top-level child>: n, ...}``; for a UPS model the children are encoder / operator / decoder."""
    shapes = param_shapes(module)
    out = {"total": int(sum(int(np.prod(s)) for s in shapes.values()))}
    for path, s in shapes.items():
        head = path.split("/", 1)[0] if "/" in path else path
        out[head] = out.get(head, 0) + int(np.prod(s))
    return out


# Parameter path → the config key(s) that set its dimensions (first match wins). Kernels of Linear layers are
# (in, out); Conv kernels are (kernel_size, in, out).
CONFIG_KEY_FOR_PARAM: tuple[tuple[str, str], ...] = (
    (r"^encoder/convs/0/kernel$", "model.encoder.kernel_size / model.encoder.fourier_freqs (input = channels + "
                                  "2·len(fourier_freqs)) / model.encoder.width"),
    (r"^encoder/convs/\d+/kernel$", "model.encoder.kernel_size / model.encoder.width"),
    (r"^encoder/convs/", "model.encoder.width"),
    (r"^encoder/proj/kernel$", "model.encoder.width · (grid size / model.latent_tokens) / model.latent_dim (less "
                               "model.encoder.raw_skip's patch and model.scale_norm's dim)"),
    (r"^encoder/(proj|norm)/", "model.latent_dim (less model.encoder.raw_skip's patch and model.scale_norm's dim)"),
    (r"^encoder/", "model.latent_dim"),
    (r"^operator/cond_embed/", "model.operator.cond_dim"),
    (r"^operator/input_proj/kernel$", "model.latent_dim / model.operator.hidden_dim"),
    (r"^operator/input_proj/", "model.operator.hidden_dim"),
    (r"^operator/output_proj/kernel$", "model.operator.hidden_dim / model.latent_dim"),
    (r"^operator/output_proj/", "model.latent_dim"),
    (r"^operator/pdet/.*/attn/", "model.operator.group_size"),
    (r"^operator/pdet/.*/ff/fc\d/", "model.operator.hidden_dim / model.operator.mlp_ratio"),
    (r"^operator/pdet/.*/mod_(attn|ff)/", "model.operator.cond_dim / model.operator.hidden_dim"),
    (r"^operator/", "model.operator.hidden_dim"),
    (r"^decoder/(query_embed|pos_embed)/kernel$", "model.decoder.fourier_freqs / model.decoder.hidden_dim"),
    # the decoder reads every latent dim but model.scale_norm's
    (r"^decoder/latent_proj/kernel$", "model.latent_dim (less model.scale_norm's dim) / model.decoder.hidden_dim"),
    (r"^decoder/local_readout/", "model.latent_dim (less model.scale_norm's dim) / model.decoder.local_freqs"),
    (r"^decoder/local_mlp/fc1/kernel$", "model.latent_dim (less model.scale_norm's dim) · the neighbour tokens "
                                        "(model.decoder.local_neighbors) / model.decoder.local_mlp"),
    (r"^operator/pos_embed$", "model.latent_tokens / model.operator.hidden_dim"),
    (r"^decoder/layers/\d+/mlp/", "model.decoder.hidden_dim / model.decoder.mlp_hidden"),
    (r"^decoder/head/fc1/", "model.decoder.hidden_dim / model.decoder.mlp_hidden"),
    (r"^decoder/head/fc2/", "model.decoder.mlp_hidden / output channels (data)"),
    (r"^decoder/", "model.decoder.hidden_dim"),
    # the refiners read and write latents: their outer projections follow model.latent_dim / latent_tokens
    (r"^(corrector|student|steady)/net/input_proj/kernel$", "model.latent_dim / model.{0}.hidden_dim"),
    (r"^(corrector|student|steady)/net/output_proj/kernel$", "model.{0}.hidden_dim / model.latent_dim"),
    (r"^(corrector|student|steady)/net/output_proj/bias$", "model.latent_dim"),
    (r"^(corrector|student|steady)/net/pos_embed$", "model.latent_tokens / model.{0}.hidden_dim"),
    (r"^corrector/", "model.corrector"),
    (r"^student/", "model.corrector (the student copies its architecture) / model.student.steps"),
    (r"^steady/", "model.steady"),
)

# Which key sets how MANY of a repeated submodule exist (for paths present on one side only).
_CONFIG_KEY_FOR_COUNT: tuple[tuple[str, str], ...] = (
    (r"^encoder/convs/", "model.encoder.num_conv"),
    (r"^operator/pdet/(down_layers|mid_layers|up_layers|down_proj|up_skip)/", "model.operator.depths"),
    (r"^decoder/layers/", "model.decoder.num_layers"),
)


def config_key_for(path: str) -> str:
    """The config key(s) setting the dimensions of parameter ``path`` (e.g. 'operator/input_proj/kernel' →
    'model.latent_dim / model.operator.hidden_dim'); 'model' when unknown."""
    for pattern, key in CONFIG_KEY_FOR_PARAM:
        if m := re.search(pattern, path):
            # the student has no architecture block of its own: it copies the corrector's
            return key.format(*(("corrector" if g == "student" else g) for g in m.groups()))
    return "model"


def shape_mismatches(expected: Mapping[str, tuple], found: Mapping[str, tuple], *, expected_name: str = "config",
                     found_name: str = "checkpoint") -> list[str]:
    """One readable line per differing parameter of two ``param_shapes`` dicts (empty list = compatible)."""
    lines = []
    for path in sorted(set(expected) | set(found)):
        e, f = expected.get(path), found.get(path)
        if e is not None and f is not None:
            if tuple(e) != tuple(f):
                lines.append(f"{path}: {found_name} {tuple(f)} vs {expected_name} {tuple(e)} — set by "
                             f"{config_key_for(path)}")
            continue
        key = next((k for p, k in _CONFIG_KEY_FOR_COUNT if re.search(p, path)), config_key_for(path))
        where = f"only in {expected_name}" if f is None else f"only in {found_name}"
        lines.append(f"{path}: {where} — set by {key}")
    return lines
