"""Training throughput on one accelerator (issue 16): one script, each row printed as it finishes.

    .venv/bin/python benchmarks/gpu_throughput.py [--small] [--out FILE.json] [--budget-s 420]

Rows (on a GPU the full sizes; on a CPU, or with ``--small``, the same rows smaller so that they finish in minutes):

1. ``operator``: the latent operator alone at the original's 32-dim architecture (32 × 32 latent tokens, hidden 96,
   depths 1/1/1, group 12, 6 heads; AdamW, clip 1.0; random latent pairs; forward + backward + update in one
   compiled step, 10 updates per dispatch), batch 256 and 4096 (CPU: 16 and 64), float32 and bfloat16: ms/update.
2. ``stage``: ``configs/burgers32.py`` (the production config, batch 32) codec and operator stages and the
   ``:cpu`` config's operator stage (small sizes: only the latter), through the trainer's own ``StageStep``
   (device-resident windows, flat donated state) at ``steps_per_dispatch`` 1 and at the config's default:
   updates/s; with ``--legacy-root`` also the ``:cpu`` stage as the code before issue 16 ran it.
   ``test-config``: the same for ``:test`` (tiny, dispatch-bound on any machine).
3. ``validation`` / ``checkpoint``: one validation of the production operator stage (compiled before timing) and
   one checkpoint as the loop writes it (params, EMA, optimizer state, JSON state; written and waited for).
4. ``hlo``: kernels per operator update (and per codec update: that stage trains the decoder) from the compiled HLO (top-level instructions reachable from the entry
   through control flow, i.e. what launches work; parameters, tuples and bitcasts excluded), the same weighted
   by the loops' trip counts (the kernels one update launches: the K-step rollout's bodies run K times), the
   optimized module's instruction count and the lowered program's op count. ``--legacy-root`` (main 6c5568e) and
   ``--before-root`` (a checkout with the dispatch step, e.g. d877a49) count other code in the same run.
5. ``dry-run``: ``driver dry-run``'s predicted GPU step time for this device (from XLA's FLOP count) next to the
   measured one (on a CPU: the dry run's own measured step time).

Synthetic fields with the config's grid (no data file; speed does not depend on the values). Stops starting new
rows after ``--budget-s`` seconds (the GPU session is 8 minutes).
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ups_jax.cli import ArgumentParser  # noqa: E402

OPERATOR = dict(latent_dim=32, hidden_dim=96, group_size=12, num_heads=6, depths=(1, 1, 1), mlp_ratio=2.0,
                cond_dim=64, latent_tokens=32)
SKIP_OPS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "conditional", "call",
            "after-all", "partition-id", "replica-id", "opt-barrier"}


# ------------------------------------------------------------------------------------------------ HLO counting
def _computations(hlo_text: str) -> dict[str, list[str]]:
    comps, name = {}, None
    for line in hlo_text.splitlines():
        m = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if m and not line.startswith(" "):
            name = "ENTRY" if m.group(1) else m.group(2)
            comps[name] = []
        elif name is not None and line.strip() == "}":
            name = None
        elif name is not None and "=" in line:
            comps[name].append(line.strip())
    return comps


def _opcode(instr: str) -> str:
    """'%x = f32[2]{0} add(...)' → 'add'; tuple-typed results ('(s32[], f32[2]) while(...)') too."""
    rest = instr.split("=", 1)[1].strip() if "=" in instr else instr
    if rest.startswith("("):              # a tuple type: skip the balanced parentheses
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                rest = rest[i + 1:].strip()
                break
    else:
        rest = rest.split(" ", 1)[1] if " " in rest else rest
    m = re.match(r"([a-z][\w\-]*)\(", rest)
    return m.group(1) if m else "?"


def count_kernels(hlo_text: str, *, executed: bool = False) -> int:
    """Instructions that launch work: everything reachable from ENTRY through while/conditional/call (not the
    bodies of fusions or reducers), minus parameters, constants, tuples, bitcasts and the control flow itself.

    ``executed``: each loop body's kernels counted once per iteration (XLA's ``known_trip_count``; 1 where it
    is not known), i.e. the kernels one call launches rather than the kernels it contains."""
    comps = _computations(hlo_text)
    seen, todo, n = set(), [("ENTRY", 1)], 0
    while todo:
        name, times = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for instr in comps[name]:
            op = _opcode(instr)
            if op in ("while", "conditional", "call"):
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', instr) if executed else None
                inner = times * (int(trips.group(1)) if trips else 1)
                todo += [(c, inner) for c in re.findall(
                    r"(?:body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)", instr)]
                for group in re.findall(r"branch_computations=\{([^}]*)\}", instr):
                    todo += [(g.strip().lstrip("%"), inner) for g in group.split(",")]
            if op not in SKIP_OPS:
                n += times
    return n


def count_instructions(hlo_text: str) -> int:
    return sum(len(v) for v in _computations(hlo_text).values())


def count_lowered_ops(stablehlo_text: str) -> int:
    return sum(1 for line in stablehlo_text.splitlines() if re.search(r"=\s*\"?(stablehlo|mhlo|chlo|func)\.", line)
               or re.search(r"^\s*(stablehlo|mhlo)\.", line))


# ------------------------------------------------------------------------------------------------ rows
def _timeit(fn, n_calls: int) -> float:
    import jax

    out = fn()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(n_calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n_calls


def operator_row(batch: int, dtype: str, per_dispatch: int, calls: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from ups_jax.models.operator import LatentOperator
    from ups_jax.training.step import init_state, make_dispatch, make_update, ravel_state

    op = LatentOperator(rngs=nnx.Rngs(0), **OPERATOR)
    graphdef, params, rest = nnx.split(op, nnx.Param, ...)
    flat, rest_flat = ravel_state(params), ravel_state(rest)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))

    def loss_fn(model, b, rng):
        return jnp.mean(jnp.square(model(b["z"], b["dt"], b["nu"]) - b["z1"])), {}

    update = make_update(graphdef, flat.unravel, rest_flat.unravel, loss_fn, tx, 0.999, compute_dtype=dtype)
    dispatch = make_dispatch(update, window=None, compute_dtype=dtype)
    k = jax.random.split(jax.random.key(1), 2)
    T, D = OPERATOR["latent_tokens"], OPERATOR["latent_dim"]
    one = {"z": jax.random.normal(k[0], (batch, T, D)), "z1": jax.random.normal(k[1], (batch, T, D)),
           "dt": jnp.full((batch,), 0.05), "nu": jnp.full((batch,), 0.01)}
    xs = jax.tree.map(lambda x: jnp.broadcast_to(x, (per_dispatch,) + x.shape), one)
    holder = [init_state(flat.vector, tx)]
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = dispatch.lower(holder[0], rest_flat.vector, None, key, jnp.int32(0), xs).compile()
    compile_s = time.perf_counter() - t0

    def call():
        holder[0], out = compiled(holder[0], rest_flat.vector, None, key, jnp.int32(0), xs)
        return holder[0]

    s = _timeit(call, calls)
    return {"row": "operator", "batch": batch, "dtype": dtype, "ms_per_update": 1e3 * s / per_dispatch,
            "compile_s": compile_s}


def _stage(spec: str, overrides: list[str], name: str):
    from flax import nnx

    from ups_jax.config import load_config
    from ups_jax.driver.compiled_step import stage_parts
    from ups_jax.driver.synthetic_data import SyntheticData
    from ups_jax.models import build_model

    cfg = load_config(spec, overrides + ["logging.wandb_mode=disabled", "logging.progress=False"])
    data = SyntheticData(cfg)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(0))
    i = list(cfg.stage_order).index(name)
    return cfg, data, model, stage_parts(cfg, data, model, i, name)


def stage_row(spec: str, name: str, per_dispatch, seconds: float) -> dict:
    import jax

    cfg, data, model, (sc, runner, state, loader) = _stage(spec, [f"runtime.steps_per_dispatch={per_dispatch}"],
                                                           name)
    N = runner.steps_per_dispatch
    key = runner.place(jax.random.key(0))
    t0 = time.perf_counter()
    state, out = runner.run(state, key, 0, runner.next_inputs(N))      # compile + first dispatch
    jax.block_until_ready(out)
    first_s = time.perf_counter() - t0
    step, t0 = N, time.perf_counter()
    while True:
        state, out = runner.run(state, key, step, runner.next_inputs(N))
        step += N
        if (step // N) % max(1, 4 // N) == 0:      # sync every 4 updates, or every dispatch of >= 4
            jax.block_until_ready(out)
            if time.perf_counter() - t0 >= seconds:
                break
    ups = (step - N) / (time.perf_counter() - t0)
    loader.close()
    return {"row": "stage", "config": spec, "stage": name, "steps_per_dispatch": N, "batch": int(sc.batch_size),
            "updates_per_s": ups, "first_dispatch_s": first_s}


def validation_checkpoint_rows(spec: str, name: str) -> list[dict]:
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import param_dict
    from ups_jax.training.stages import make_validator

    cfg, data, model, (sc, runner, state, loader) = _stage(spec, [], name)
    loader.close()
    validate, metric = make_validator(name, cfg, data, model)
    t0 = time.perf_counter()
    validate(model)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    validate(model)
    val_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        mngr = ckpt.open_manager(d, name, metadata={"config": cfg.to_dict()})
        p = param_dict(model)
        times = []
        for k in range(3):
            t0 = time.perf_counter()
            ckpt.save(mngr, k + 1, params=p, ema=p, opt_state=state.opt, val=1.0, state={"step": k + 1})
            mngr.wait_until_finished()
            times.append(time.perf_counter() - t0)
        mngr.close()
    return [{"row": "validation", "config": spec, "stage": name, "s": val_s, "first_call_s": first},
            {"row": "checkpoint", "config": spec, "stage": name, "s": min(times[1:]), "first_s": times[0]}]


def hlo_row(spec: str, name: str) -> dict:
    cfg, data, model, (sc, runner, state, loader) = _stage(spec, ["runtime.steps_per_dispatch=1"], name)
    lowered = runner.lower(state, 1)
    text = lowered.compile().as_text()
    loader.close()
    return {"row": "hlo", "config": spec, "stage": name, "kernels_per_update": count_kernels(text),
            "kernels_executed_per_update": count_kernels(text, executed=True),
            "optimized_instructions": count_instructions(text),
            "lowered_ops": count_lowered_ops(lowered.as_text())}


def before_hlo_row(root: str, name: str = "operator") -> dict:
    """:func:`hlo_row` of another checkout that already has the dispatch step (issue 16, e.g. d877a49), in a
    subprocess that imports that checkout's ``ups_jax`` (its own configs): a before/after in one run."""
    import os
    import subprocess

    root = str(Path(root).resolve())
    code = (f"import json, sys; sys.path.insert(0, {root!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
            f"import ups_jax\n"                       # that checkout's, before gpu_throughput puts this one first
            f"from gpu_throughput import hlo_row\n"
            f"assert ups_jax.__file__.startswith({root!r}), ups_jax.__file__\n"
            f"print('BEFORE ' + json.dumps(hlo_row({root + '/configs/burgers32.py'!r}, {name!r})))")
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=root), capture_output=True,
                       text=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("BEFORE ")]
    if p.returncode or not lines:
        raise RuntimeError(f"--before-root {root}: its hlo row failed: {p.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(lines[-1][len("BEFORE "):]), code=root)


LEGACY = r"""
import json, sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
import jax, jax.numpy as jnp
from flax import nnx
from ups_jax.config import load_config          # the old code first: gpu_throughput puts this checkout on the path
from ups_jax.driver.dry_run import _SyntheticData, _stage_parts, _step_arg_names, _step_args
from ups_jax.models import build_model
from gpu_throughput import count_instructions, count_kernels, count_lowered_ops
assert __import__("ups_jax").__file__.startswith({root!r}), __import__("ups_jax").__file__
out = []
for spec, name, seconds in {plan!r}:
    cfg = load_config(spec, ["logging.wandb_mode=disabled", "logging.progress=False"])
    data = _SyntheticData(cfg)
    model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(0))
    i = list(cfg.stage_order).index(name)
    sc, step, (params, opt, ema, rest), loader, update_batch = _stage_parts(cfg, data, model, i, name)
    it = iter(loader)
    names = _step_arg_names(step)
    rng = jax.random.key(0)
    args = _step_args(names, params, opt, ema, rest, update_batch(it), rng, 0)
    if seconds == 0:
        lowered = step.lower(*args)
        text = lowered.compile().as_text()
        out.append(dict(row="hlo", config=spec, stage=name, code="legacy", kernels_per_update=count_kernels(text),
                        kernels_executed_per_update=count_kernels(text, executed=True),
                        optimized_instructions=count_instructions(text), lowered_ops=count_lowered_ops(lowered.as_text())))
    else:
        params, opt, ema, o = step(*args)
        jax.block_until_ready(params)
        k, t0 = 1, time.perf_counter()
        while True:   # the old loop body: batch, RNG split on the host, one update per dispatch
            rng, sub = jax.random.split(rng)
            params, opt, ema, o = step(*_step_args(names, params, opt, ema, rest, update_batch(it), sub, k))
            k += 1
            if k % 4 == 0:
                jax.block_until_ready(o)
                if time.perf_counter() - t0 >= seconds:
                    break
        out.append(dict(row="stage", config=spec, stage=name, code="legacy", steps_per_dispatch=1,
                        batch=int(sc.batch_size), updates_per_s=(k - 1) / (time.perf_counter() - t0)))
    loader.close()
print("LEGACY " + json.dumps(out))
"""


def legacy_rows(root: str, plan: list[tuple[str, str, float]]) -> list[dict]:
    """The same rows from the code before issue 16 (a checkout of main 6c5568e at ``root``), in a subprocess:
    (config, stage, seconds) — seconds 0 = the HLO counts of its train step, else its updates/s."""
    import os
    import subprocess

    root = str(Path(root).resolve())
    plan = [(spec.replace(str(ROOT), root), name, seconds) for spec, name, seconds in plan]   # its own configs
    code = LEGACY.format(root=root, bench=str(ROOT / "benchmarks"), plan=plan)
    env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("LEGACY ")]
    if p.returncode or not lines:
        raise RuntimeError(f"--legacy-root {root}: the old code failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1][len("LEGACY "):])


def dry_run_row(spec: str, measured: dict | None) -> dict:
    import jax

    from ups_jax.config import load_config
    from ups_jax.driver.dry_run import GPU_TABLE, dry_run

    cfg = load_config(spec, ["stage_order=('operator',)", "logging.wandb_mode=disabled", "logging.progress=False"])
    r = dry_run(cfg, skip_data=True, estimate_only=False, timing_steps=10, min_timing_s=2.0)
    st = r["stages"]["operator"]
    kind = jax.devices()[0].device_kind
    gpu = next((g for g in GPU_TABLE if g.lower() in kind.lower()), None)
    row = {"row": "dry-run", "config": spec, "stage": "operator", "device_kind": kind,
           "dry_run_measured_step_ms": 1e3 * st["step_s"], "flops_per_update": st["flops_per_step"]}
    if gpu:     # the dry run's FLOP-based estimate for this GPU, per update (its table covers the training steps)
        row["predicted_gpu_step_ms"] = 1e3 * r["gpu"][gpu]["train_s"] / max(st["steps"], 1)
    if measured:
        row["benchmark_step_ms"] = 1e3 / measured["updates_per_s"]
    return row


def main(argv) -> int:
    p = ArgumentParser(prog="benchmarks/gpu_throughput.py", description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="the CPU sizes even on a GPU (default on a CPU)")
    p.add_argument("--out", help="also write the rows as JSON")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no new row after this many seconds")
    p.add_argument("--seconds", type=float, default=0.0, help="time per throughput row (default 5 GPU / 20 CPU)")
    p.add_argument("--rows", default="operator,stage,validation,hlo,dry-run",
                   help="comma-separated subset of: operator, stage, test-config, validation, hlo, dry-run")
    p.add_argument("--legacy-root", help="a checkout of the code before issue 16 (main 6c5568e): the hlo and "
                                         "test-config rows are also measured with it, in the same run")
    p.add_argument("--before-root", help="a checkout that already has the dispatch step (e.g. d877a49): the hlo "
                                         "row is also counted with it, in the same run")
    a = p.parse_args(argv)
    import jax

    from ups_jax.compilation import enable_cache

    enable_cache("auto")
    dev = jax.devices()[0]
    small = a.small or dev.platform == "cpu"
    seconds = a.seconds or (20.0 if small else 5.0)
    wanted = {r.strip() for r in a.rows.split(",") if r.strip()}
    unknown = wanted - {"operator", "stage", "test-config", "validation", "hlo", "dry-run"}
    if unknown:
        p.error(f"--rows: unknown row(s) {sorted(unknown)}")
    t_start = time.time()
    print(f"# {datetime.date.today()} {dev.platform} {dev.device_kind} jax {jax.__version__} "
          f"({'small' if small else 'full'} sizes)", flush=True)
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)

    def budget_left() -> bool:
        return time.time() - t_start < a.budget_s

    prod = str(ROOT / "configs" / "burgers32.py")
    if "operator" in wanted:
        for batch in ((16, 64) if small else (256, 4096)):
            for dtype in ("float32", "bfloat16"):
                if budget_left():
                    emit(operator_row(batch, dtype, per_dispatch=10, calls=3 if small else 20))
    measured = None
    if "stage" in wanted:
        plan = [(prod, "codec"), (prod, "operator"), (prod + ":cpu", "operator")]
        if small:       # a CPU runs the production config at ~0.5 updates/s: only :cpu's stage there
            plan = [(prod + ":cpu", "operator")]
        for spec, name in plan:
            for spd in (1, "auto"):
                if budget_left():
                    row = stage_row(spec, name, spd, seconds)
                    emit(row)
                    if spec == prod and name == "operator" and spd == "auto":
                        measured = row
        if a.legacy_root and budget_left():     # :cpu before issue 16 (make demo's stage): no slower now?
            for row in legacy_rows(a.legacy_root, [(prod + ":cpu", "operator", seconds)]):
                emit(row)
    test_spec = str(ROOT / "configs" / "burgers32.py") + ":test"
    if "test-config" in wanted:      # the tiny config: dispatch-bound on any machine
        for spd in (1, "auto"):
            emit(stage_row(test_spec, "operator", spd, seconds))
        if a.legacy_root:
            for row in legacy_rows(a.legacy_root, [(test_spec, "operator", seconds)]):
                emit(row)
    if "validation" in wanted and budget_left():
        for row in validation_checkpoint_rows(prod, "operator"):
            emit(row)
    if "hlo" in wanted and budget_left():
        stages = ("operator", "codec")       # the codec stage trains the decoder
        for name in stages:
            emit(hlo_row(prod, name))
        if a.legacy_root:
            for row in legacy_rows(a.legacy_root, [(prod, name, 0) for name in stages]):
                emit(row)
        if a.before_root:
            for name in stages:
                emit(before_hlo_row(a.before_root, name))
    if "dry-run" in wanted and budget_left():
        emit(dry_run_row(prod, measured))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
