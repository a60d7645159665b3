"""The trainer's compiled train step as the dry run and ``validate --compile`` build it (``stage_parts``), and what
XLA reports of it (FLOPs, memory); the machine's memory limits."""

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
    """XLA's memory analysis of a compiled program; when XLA cannot give it, every size is None and
    ``memory_unknown`` says why (an estimate of 0 bytes would read as "fits anywhere")."""
    try:
        m = compiled.memory_analysis()
        why = "XLA's memory_analysis() returned nothing on this backend"
    except Exception as e:  # noqa: BLE001 — some backends do not implement it: reported as unknown, with the reason
        m, why = None, f"XLA's memory_analysis() failed: {type(e).__name__}: {str(e).strip()[:160]}"
    if m is None:
        return {"argument_bytes": None, "output_bytes": None, "temp_bytes": None, "alias_bytes": None,
                "peak_bytes": None, "memory_unknown": why}
    out = {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
           "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes)}
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def stage_parts(cfg, data, model, i: int, name: str):
    """What ``train_and_evaluate`` + ``run_stage`` build for stage ``i`` of ``cfg.stage_order``: (stage cfg,
    ``training.step.StageStep``, its initial train state, the loader). ``runner.run(state, key, step0,
    runner.next_inputs(n))`` is one dispatch of n updates exactly as the loop calls it (device-resident windows,
    ``runtime.steps_per_dispatch``); ``runner.lower(state, n)`` lowers it for XLA's analysis."""
    import jax
    import jax.numpy as jnp

    from ups_jax.checks import data_parallel_size
    from ups_jax.data.loader import WindowLoader
    from ups_jax.dispatch import resolve_steps_per_dispatch
    from ups_jax.training.loop import make_mesh, trainable_filter
    from ups_jax.training.optim import make_optimizer
    from ups_jax.training.stages import stage_kind
    from ups_jax.training.step import StageStep

    sc, kind = cfg.stages[name], stage_kind(name)
    loader = WindowLoader(data.dataset, data.splits["train"], window=kind.window(cfg, sc, data.dataset.nt),
                          batch_size=sc.batch_size, seed=cfg.seed + 1000 * i, prefetch=cfg.data.prefetch)
    n, _ = data_parallel_size(cfg.runtime.data_parallel, [cfg.stages[s].batch_size for s in cfg.stage_order],
                              jax.local_device_count())
    per_dispatch = resolve_steps_per_dispatch(cfg.runtime.get("steps_per_dispatch", "auto"), sc,
                                              int(cfg.checkpoint.every_steps))
    loss_fn = kind.loss(cfg, sc, jnp.asarray(data.x01), norm=data.norm)
    runner = StageStep(model, trainable_filter(tuple(sc.trainable)), loss_fn,
                       make_optimizer(sc), float(sc.ema_decay), loader=loader, prepare_batch=data.prepare_batch,
                       accum_steps=int(sc.accum_steps), compute_dtype=str(cfg.runtime.compute_dtype),
                       mesh=make_mesh(n), steps_per_dispatch=per_dispatch)
    return sc, runner, runner.initial_state(), loader


def compiled_stage_memory(cfg) -> dict:
    """XLA memory and FLOPs of each stage's compiled train step (no execution); used by ``validate --compile``.
    FLOPs per optimizer update: a dispatch of N updates is analysed and divided by N."""
    from flax import nnx

    from ups_jax.data.grids import grid_size, spatial_shape
    from ups_jax.models import build_model

    data = SyntheticData(cfg, use_files=True, max_per_file=256)
    model = build_model(cfg, num_points=grid_size(spatial_shape(data.dataset)), rngs=nnx.Rngs(cfg.seed))
    out = {}
    for i, name in enumerate(cfg.stage_order):
        sc, runner, state, loader = stage_parts(cfg, data, model, i, name)
        try:
            compiled = runner.lower(state, runner.steps_per_dispatch).compile()
        finally:
            loader.close()
        out[name] = {**_memory(compiled), "flops": _flops(compiled) / runner.steps_per_dispatch}
    return out


def compiled_cost(compiled) -> dict:
    """XLA's memory analysis (bytes) and FLOP count of a compiled step, as the dry run reports them per stage."""
    return {**_memory(compiled), "flops": _flops(compiled)}
