"""The trainer's compiled train step as the dry run and ``validate --compile`` build it (``stage_parts``), its
arguments, and what XLA reports of it (FLOPs, memory); the machine's memory limits."""

from __future__ import annotations

import os
import resource

from ups_jax.driver.synthetic_data import SyntheticData


def device_memory_bytes() -> int:
    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")   # CPU: host memory


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def _flops(compiled) -> float:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 — some backends do not implement it
        return float("nan")
    if isinstance(ca, (list, tuple)):      # jax < 0.4.30 returned a list of dicts
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        m = None
    if m is None:
        return {"argument_bytes": 0, "output_bytes": 0, "temp_bytes": 0, "alias_bytes": 0, "peak_bytes": 0}
    out = {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
           "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes)}
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def stage_parts(cfg, data, model, i: int, name: str):
    """What ``train_and_evaluate`` builds for stage ``i``: (stage cfg, train step, initial args, loader, batch
    function). The batch function turns loader batches into one update's batch as ``run_stage`` does
    (``accum_steps`` micro-batches stacked, split over the data-parallel devices)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.checks import data_parallel_size
    from ups_jax.data.loader import WindowLoader
    from ups_jax.training.loop import make_mesh, make_train_step, next_update_batch, place_on_device, trainable_filter
    from ups_jax.training.optim import make_optimizer
    from ups_jax.training.stages import stage_kind

    sc, kind = cfg.stages[name], stage_kind(name)
    loss_fn = kind.loss(cfg, sc, jnp.asarray(data.x01))
    loader = WindowLoader(data.dataset, data.splits["train"], window=kind.window(cfg, sc, data.dataset.nt),
                          batch_size=sc.batch_size, seed=cfg.seed + 1000 * i, prefetch=cfg.data.prefetch)
    graphdef, params, rest = nnx.split(model, trainable_filter(tuple(sc.trainable)), ...)
    tx = make_optimizer(sc)
    n, _ = data_parallel_size(cfg.runtime.data_parallel, [cfg.stages[s].batch_size for s in cfg.stage_order],
                              jax.local_device_count())
    mesh = make_mesh(n)
    A = int(sc.accum_steps)
    step = make_train_step(graphdef, loss_fn, tx, float(sc.ema_decay), accum_steps=A,
                           compute_dtype=str(cfg.runtime.compute_dtype), mesh=mesh)

    def update_batch(it):
        return next_update_batch(it, data.prepare_batch, A, mesh)

    return sc, step, place_on_device((params, tx.init(params), params, rest), mesh), loader, update_batch


def _step_arg_names(step) -> list[str]:
    """Parameter names of ``make_train_step``'s step; fails loudly if the trainer's step grew an argument the
    dry run does not know how to pass."""
    import inspect

    names = list(inspect.signature(inspect.unwrap(step)).parameters)
    unknown = [n for n in names if n not in ("params", "opt_state", "ema", "rest", "batch", "rng", "step")]
    if unknown:
        raise RuntimeError(f"dry-run does not know train_step argument(s) {unknown}: update "
                           f"ups_jax/driver/compiled_step.py:_step_args to match ups_jax/training/loop.py")
    return names


def _step_args(names, params, opt_state, ema, rest, batch, rng, k: int) -> tuple:
    """The step's positional arguments as ``run_stage`` passes them (``k``: the loop's step counter)."""
    import jax.numpy as jnp

    known = {"params": params, "opt_state": opt_state, "ema": ema, "rest": rest, "batch": batch, "rng": rng}
    return tuple(known[n] if n != "step" else jnp.float32(k) for n in names)


def compiled_stage_memory(cfg) -> dict:
    """XLA memory and FLOPs of each stage's compiled train step (no execution); used by ``validate --compile``."""
    import jax
    from flax import nnx

    from ups_jax.models import build_model

    data = SyntheticData(cfg, use_files=True, max_per_file=256)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
    out = {}
    for i, name in enumerate(cfg.stage_order):
        sc, step, state, loader, update_batch = stage_parts(cfg, data, model, i, name)
        try:
            batch = update_batch(iter(loader))
        finally:
            loader.close()
        compiled = step.lower(*_step_args(_step_arg_names(step), *state, batch, jax.random.key(0), 0)).compile()
        out[name] = {**_memory(compiled), "flops": _flops(compiled)}
    return out


def compiled_cost(compiled) -> dict:
    """XLA's memory analysis (bytes) and FLOP count of a compiled step, as the dry run reports them per stage."""
    return {**_memory(compiled), "flops": _flops(compiled)}
