"""The compiled train step: N optimizer updates per dispatch on flat, donated state.

Why it looks like this (issue 16, measured in docs/benchmarks.md "GPU speed"): on a GPU the old step was bound by
host work and tiny kernels, not arithmetic. So:

* **flat state** — the trainable parameters, their EMA and the optimizer moments are each *one* float32 vector
  (``ravel_state``); the frozen rest of the model is another. Crossing the jit boundary costs
  a handful of arrays instead of hundreds of ``nnx.State`` leaves, and adamw, clipping, the EMA and the
  non-finite guard are a few fused elementwise kernels instead of a few per leaf. Inside the jit the vectors are
  unravelled back into the model (free: slices fused into their consumers).
* **a select, not a cond** — ``optax.apply_if_finite`` is a ``lax.cond`` whose predicate a GPU copies to the host
  every update. Here the update is computed and kept or dropped with ``jnp.where`` on one finite flag (loss and
  the gradient's global norm): same skip / count / stop behaviour, no host wait.
* **donation** — the state is donated, so XLA updates it in place.
* **N updates per dispatch** — ``lax.scan`` over N updates; the batches are gathered on device from the resident
  (normalised) training split by window indices the loader hands out (the same permutation as before, so resume
  stays exact), the RNG of update ``s`` is ``fold_in(stage_key, s)`` (independent of N), and the per-update
  metrics come back stacked, fetched once per log interval. ``steps_per_dispatch`` changes speed, not results.
* **bf16** casts the frozen rest once per dispatch and the parameter vector once per update (one kernel).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ups_jax.training.optim import ema_decay_at


class Guard(NamedTuple):
    """Non-finite updates skipped: ``consecutive`` (reset by a finite one) and ``total`` in this stage."""
    consecutive: jax.Array
    total: jax.Array


class TrainState(NamedTuple):
    params: jax.Array        # (P,) float32: the trainable parameters, raveled
    ema: jax.Array           # (P,) float32: their EMA (validation, best checkpoint, next stage)
    opt: Any                 # optax state of ``tx`` over the (P,) vector (a few leaves)
    guard: Guard


class Flat(NamedTuple):
    """An ``nnx.State`` as one vector and the function that rebuilds it (``ravel_pytree``)."""
    vector: jax.Array
    unravel: Callable


def ravel_state(state) -> Flat:
    """Ravels a tree of float32 arrays (an ``nnx.State``) into one vector; refuses anything else (a key or an int
    would be cast). Unlike ``ravel_pytree`` the unravel keeps the vector's dtype (bf16 in, bf16 leaves out)."""
    leaves, treedef = jax.tree.flatten(state)
    bad = sorted({str(x.dtype) for x in leaves if x.dtype != jnp.float32})
    if bad:
        raise TypeError(f"the train step ravels float32 model state only; found {bad}")
    shapes = [tuple(x.shape) for x in leaves]
    splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()
    vec = jnp.concatenate([jnp.ravel(x) for x in leaves]) if leaves else jnp.zeros((0,), jnp.float32)

    def unravel(v):
        parts = jnp.split(v, splits) if leaves else []
        return jax.tree.unflatten(treedef, [p.reshape(s) for p, s in zip(parts, shapes)])

    return Flat(vec, unravel)


def init_state(params: jax.Array, tx: optax.GradientTransformation, ema: jax.Array | None = None) -> TrainState:
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(params, params if ema is None else ema, tx.init(params), Guard(zero, zero))
    return jax.tree.map(lambda x: jnp.array(x, copy=True), state)   # distinct buffers: the state is donated


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_update(graphdef, unravel_params: Callable, unravel_rest: Callable, loss_fn: Callable,
                tx: optax.GradientTransformation, ema_decay: float, *, accum_steps: int = 1,
                compute_dtype: str = "float32"):
    """``update(state, rest_vec, batch, rng, step) -> (state, out)``: one optimizer update on flat state.

    ``batch`` leaves are (B, ...) or, with ``accum_steps`` = A > 1, (A, B, ...); ``rest_vec`` is the frozen rest
    of the model (already in the compute dtype). ``out``: loss, its terms, grad_norm, ``skipped``."""
    A = int(accum_steps)
    low = None if compute_dtype in (None, "float32") else jnp.dtype(compute_dtype)
    takes_step = getattr(loss_fn, "takes_step", False)    # e.g. a pushforward curriculum (training/losses.py)

    def grads_of(params, rest_vec, batch, rng, step):
        def loss_of(p):
            b = batch
            if low is not None:      # bf16 forward/backward; the cast's transpose returns float32 gradients
                p, b = p.astype(low), _cast_floats(b, low)
            model = nnx.merge(graphdef, unravel_params(p), unravel_rest(rest_vec))
            loss, terms = loss_fn(model, b, rng, step) if takes_step else loss_fn(model, b, rng)
            return loss.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in terms.items()}

        (loss, terms), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return loss, terms, grads

    def update(state: TrainState, rest_vec, batch, rng, step):
        if A == 1:
            loss, terms, grads = grads_of(state.params, rest_vec, batch, rng, step)
        else:                        # gradient accumulation: mean over A micro-batches, one update
            rngs = jax.random.split(rng, A)
            first = jax.tree.map(lambda x: x[0], batch)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 jax.eval_shape(grads_of, state.params, rest_vec, first, rngs[0], step))

            def body(acc, xs):
                return jax.tree.map(jnp.add, acc, grads_of(state.params, rest_vec, *xs, step)), None

            total, _ = jax.lax.scan(body, zeros, (batch, rngs))
            loss, terms, grads = jax.tree.map(lambda x: x / A, total)
        grad_norm = optax.global_norm(grads)     # clip_by_global_norm computes the same reduction: XLA shares it
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # a non-finite gradient must not reach the moments even in the branch that is thrown away
        safe = jnp.where(finite, grads, 0.0)
        updates, new_opt = tx.update(safe, state.opt, state.params)
        new_params = optax.apply_updates(state.params, updates)
        d = ema_decay_at(step.astype(jnp.float32), ema_decay)
        new_ema = optax.incremental_update(new_params, state.ema, step_size=1.0 - d)
        keep = lambda new, old: jnp.where(finite, new, old)            # noqa: E731
        g = state.guard
        guard = Guard(jnp.where(finite, 0, g.consecutive + 1).astype(jnp.int32),
                      (g.total + jnp.logical_not(finite)).astype(jnp.int32))
        state = TrainState(keep(new_params, state.params), keep(new_ema, state.ema),
                           jax.tree.map(keep, new_opt, state.opt), guard)
        out = {"loss": loss, "grad_norm": grad_norm, **terms, "skipped": jnp.logical_not(finite)}
        return state, out

    return update


# ------------------------------------------------------------------------------------------------ batch sources
def gather_windows(resident: dict, slots: jax.Array, starts: jax.Array, window: int) -> dict:
    """The batch of windows (``slots`` trajectories from frame ``starts``) from the device-resident split:
    ``resident = {'u': (N, T, X) normalised, 'nu': (N,), 'dt': ()}``. Any leading index axes are kept."""
    frames = starts[..., None] + jnp.arange(window, dtype=starts.dtype)
    u = resident["u"][slots[..., None], frames]
    return {"u": u, "dt": jnp.broadcast_to(resident["dt"], slots.shape).astype(jnp.float32),
            "nu": resident["nu"][slots]}


def make_dispatch(update: Callable, *, window: int | None, accum_steps: int = 1, mesh: Mesh | None = None,
                  compute_dtype: str = "float32"):
    """``dispatch(state, rest_vec, resident, key, step0, xs) -> (state, outs)``: ``len(xs)`` updates in one
    compiled call (``lax.scan``), update i being optimizer step ``step0 + i`` with RNG ``fold_in(key, step0+i)``.

    With ``window`` (device-resident data) ``xs = (slots, starts)`` int32 arrays of shape (N, [A,] B) and
    ``resident`` is :func:`gather_windows`'s dict; with ``window=None`` ``xs`` are the N prepared batches
    stacked and ``resident`` is unused (None). ``state`` is donated; ``outs`` leaves are stacked (N,)."""
    low = None if compute_dtype in (None, "float32") else jnp.dtype(compute_dtype)
    spec = PartitionSpec(None, "data") if accum_steps > 1 else PartitionSpec("data")

    def dispatch(state, rest_vec, resident, key, step0, xs):
        if low is not None:
            rest_vec = rest_vec.astype(low)          # once per dispatch

        def body(state, item):
            i, x = item
            step = step0 + i
            batch = gather_windows(resident, *x, window) if window is not None else x
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, spec))
            return update(state, rest_vec, batch, jax.random.fold_in(key, step), step)

        n = jax.tree.leaves(xs)[0].shape[0]
        return jax.lax.scan(body, state, (jnp.arange(n, dtype=jnp.int32), xs))

    if mesh is None:
        return jax.jit(dispatch, donate_argnums=(0,))
    return jax.jit(dispatch, donate_argnums=(0,), out_shardings=NamedSharding(mesh, PartitionSpec()))


def index_batches(loader, n: int, accum_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The next ``n`` updates' window indices from ``loader`` (slots, starts): int32 (n, [A,] B)."""
    slots, starts = [], []
    for _ in range(n * accum_steps):
        s, t = loader.next_indices()
        slots.append(s)
        starts.append(t)
    shape = (n, accum_steps, -1) if accum_steps > 1 else (n, -1)
    return (np.asarray(slots, np.int32).reshape(shape), np.asarray(starts, np.int32).reshape(shape))


# ------------------------------------------------------------------------------------------------ one stage's step
class StageStep:
    """Everything the loop (and ``driver dry-run``, the benchmarks) needs to run a stage's compiled updates:
    the model split into flat trainable parameters and flat frozen rest, the optimizer, the compiled dispatch and
    the batch source (device-resident windows when the loader caches the split, else prepared host batches)."""

    def __init__(self, model: nnx.Module, trainable_filter, loss_fn: Callable, tx: optax.GradientTransformation,
                 ema_decay: float, *, loader, prepare_batch: Callable[[dict], dict], accum_steps: int = 1,
                 compute_dtype: str = "float32", mesh: Mesh | None = None, steps_per_dispatch: int = 1):
        self.graphdef, params, rest = nnx.split(model, trainable_filter, ...)
        self.params_flat, self.rest_flat = ravel_state(params), ravel_state(rest)
        self._rest = rest            # frozen: the model's own arrays serve every validation and checkpoint
        self.tx, self.mesh, self.accum_steps = tx, mesh, int(accum_steps)
        self.steps_per_dispatch = int(steps_per_dispatch)
        self.loader, self.prepare_batch = loader, prepare_batch
        self.update = make_update(self.graphdef, self.params_flat.unravel, self.rest_flat.unravel, loss_fn, tx,
                                  ema_decay, accum_steps=self.accum_steps, compute_dtype=compute_dtype)
        cached = getattr(loader, "resident", None)
        self.window = int(loader.window) if cached is not None else None
        self.dispatch = make_dispatch(self.update, window=self.window, accum_steps=self.accum_steps, mesh=mesh,
                                      compute_dtype=compute_dtype)
        self.resident = None
        if cached is not None:        # normalised once, exactly as prepare_batch normalises every batch
            prepared = prepare_batch({"u": cached["u"], "nu": cached["nu"], "dt": np.asarray(cached["dt"])})
            self.resident = self.place({"u": prepared["u"], "nu": prepared["nu"],
                                        "dt": jnp.asarray(prepared["dt"], jnp.float32).reshape(())})
        self.rest_vec = self.place(self.rest_flat.vector)
        # the host side of a validation and a checkpoint as one compiled program each (eagerly, ``jnp.split`` of
        # the vector into ~100 leaves compiled a program of its own for 1-4 s at the first validation)
        self._unravel_params = jax.jit(lambda v: self.params_flat.unravel(v))
        self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
        self._finite = jax.jit(lambda s: jnp.all(jnp.isfinite(s.params)) & jnp.all(jnp.isfinite(s.ema)))

    @property
    def num_params(self) -> int:
        return int(self.params_flat.vector.size)

    def place(self, tree):
        """Commits ``tree`` to this process's first device, or replicates it over the mesh. Weights restored by
        orbax arrive committed while fresh ones are not: without this the compiled dispatch would see a different
        input placement on its second call and compile a second time."""
        if self.mesh is None:
            return jax.device_put(tree, jax.devices()[0])
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def initial_state(self) -> TrainState:
        return self.place(init_state(self.params_flat.vector, self.tx))

    def state_from(self, params_state, ema_state, opt, guard: tuple[int, int]) -> TrainState:
        """A resumed state: ``params_state``/``ema_state`` are trainable ``nnx.State``s, ``opt`` the saved optax state."""
        p, e = ravel_state(params_state).vector, ravel_state(ema_state).vector
        g = Guard(jnp.asarray(guard[0], jnp.int32), jnp.asarray(guard[1], jnp.int32))
        return self.place(jax.tree.map(lambda x: jnp.array(x, copy=True), TrainState(p, e, opt, g)))

    def abstract_opt(self):
        return jax.eval_shape(self.tx.init, self.params_flat.vector)

    def next_inputs(self, n: int):
        """The next ``n`` updates' inputs (window indices, or stacked prepared batches), advancing the loader."""
        if self.window is not None:
            return index_batches(self.loader, n, self.accum_steps)
        batches = []
        for _ in range(n):
            micro = [self.prepare_batch(next(self.loader)) for _ in range(self.accum_steps)]
            batches.append(micro[0] if self.accum_steps == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *micro))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)

    def run(self, state: TrainState, key, step0: int, xs):
        """Runs ``len(xs)`` updates starting at optimizer step ``step0``; ``state`` is donated."""
        return self.dispatch(state, self.rest_vec, self.resident, key, jnp.int32(step0), xs)

    def lower(self, state: TrainState, n: int):
        """The dispatch of ``n`` updates lowered for ``state`` (``.compile()`` for XLA's cost and memory analysis;
        ``.as_text()`` for its HLO), without running or consuming the loader."""
        xs = self.example_inputs(n)
        return self.dispatch.lower(state, self.rest_vec, self.resident, self.place(jax.random.key(0)),
                                   jnp.int32(0), xs)

    def example_inputs(self, n: int):
        """Inputs of the shape ``next_inputs(n)`` returns, without advancing the loader."""
        if self.window is not None:
            shape = (n, self.accum_steps, self.loader.batch_size) if self.accum_steps > 1 else \
                (n, self.loader.batch_size)
            return np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        saved = self.loader.state()
        xs = self.next_inputs(n)
        self.loader.restore(saved)
        return xs

    def unravel(self, vector) -> Any:
        """The trainable ``nnx.State`` of a flat parameter (or EMA) vector, as fresh arrays (a jit's outputs: the
        donated state may be overwritten while orbax still writes them)."""
        return self._unravel_params(vector)

    def rest_state(self):
        """The frozen rest of the model (never trained or donated: the arrays the model was split into)."""
        return self._rest

    def copy(self, tree):
        """Fresh copies of ``tree``'s arrays (the optimizer state for a checkpoint), in one compiled call."""
        return self._copy(tree)

    def finite(self, state: TrainState) -> bool:
        """Whether the parameters and their EMA are all finite (checked on the two vectors before a checkpoint)."""
        return bool(self._finite(state))
