"""Cost per training update of several configs, measured in one process, interleaved, as process CPU time.

    .venv/bin/python benchmarks/step_cost.py --case ups configs/burgers32.py:cpu \\
        --case fno configs/fno_burgers.py:cpu [--case NAME SPEC key=value ...] [--rounds 3] [--updates NAME=N ...]

Why CPU time: on a shared machine the wall time of a step depends on the other jobs; the CPU time the process
spends (all its threads: XLA's compute threads and the loader) is what the step costs, and the *ratio* of two
configs' CPU time per update is what sizes an equal-wall-time budget on a quiet machine, provided both use the
cores alike. Interleaving the configs round by round (each round runs every case's updates once) exposes both to
the same load drift; the wall time per update is printed beside it for reference.

Each case builds its first stage exactly as ``driver dry-run`` does (``driver.compiled_step.stage_parts``: the
loop's jitted step, loader and placement), runs two warm-up dispatches (compilation), then ``--rounds`` rounds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402


def build(spec: str, overrides: Sequence[str]):
    from flax import nnx

    from ups_jax.config import load_config
    from ups_jax.data.grids import grid_size, spatial_shape
    from ups_jax.driver.compiled_step import stage_parts
    from ups_jax.driver.synthetic_data import load_data
    from ups_jax.models import build_model

    cfg = load_config(spec, list(overrides))
    data = load_data(cfg, False, [])
    model = build_model(cfg, num_points=grid_size(spatial_shape(data.dataset)), rngs=nnx.Rngs(cfg.seed))
    name = cfg.stage_order[0]
    sc, runner, state, loader = stage_parts(cfg, data, model, 0, name)
    return {"stage": name, "runner": runner, "state": state, "loader": loader}


def run_updates(case: dict, dispatches: int, key, step0: int) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) for ``dispatches`` dispatches of the case's runner."""
    import jax

    runner, N = case["runner"], case["runner"].steps_per_dispatch
    c0, t0 = time.process_time(), time.perf_counter()
    state, out = case["state"], None
    for d in range(dispatches):
        state, out = runner.run(state, key, step0 + d * N, runner.next_inputs(N))
    jax.block_until_ready((state, out))
    case["state"] = state
    return time.process_time() - c0, time.perf_counter() - t0


def main(argv: Sequence[str]) -> int:
    import jax

    p = ArgumentParser(prog="benchmarks/step_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--case", nargs="+", action="append", required=True, metavar="NAME SPEC [key=value ...]",
                   help="a label, a config spec and its overrides (repeat for each config)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--dispatches", nargs="+", default=[], metavar="NAME=N",
                   help="dispatches per round for a case (default 1; a dispatch is runtime.steps_per_dispatch updates)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(list(argv))
    if any(len(c) < 2 for c in args.case):
        raise UserError("--case needs a NAME and a config SPEC (then optional key=value overrides)")
    per_round = {}
    for item in args.dispatches:
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise UserError(f"--dispatches {item!r}: expected NAME=N with N >= 1")
        per_round[name] = int(n)
    cases = {}
    for name, spec, *overrides in args.case:
        cases[name] = {"spec": spec, "overrides": overrides, **build(spec, overrides), "cpu": [], "wall": []}
        print(f"{name}: {spec} {' '.join(overrides)}: stage {cases[name]['stage']}, "
              f"{cases[name]['runner'].steps_per_dispatch} update(s) per dispatch", flush=True)
    key = jax.random.key(0)
    try:
        for c in cases.values():                              # compile (and any recompile) outside the clock
            run_updates(c, 2, key, 0)
        for r in range(args.rounds):
            for name, c in cases.items():
                n = per_round.get(name, 1)
                cpu, wall = run_updates(c, n, key, (2 + r * n) * c["runner"].steps_per_dispatch)
                u = n * c["runner"].steps_per_dispatch
                c["cpu"].append(cpu / u)
                c["wall"].append(wall / u)
                print(f"round {r} {name}: {u} updates, {cpu / u:.4f} CPU s/update, {wall / u:.4f} wall s/update",
                      flush=True)
    finally:
        for c in cases.values():
            c["loader"].close()
    result = {name: {"spec": c["spec"], "overrides": c["overrides"], "cpu_s_per_update": c["cpu"],
                     "wall_s_per_update": c["wall"], "cpu_median": sorted(c["cpu"])[len(c["cpu"]) // 2],
                     "wall_median": sorted(c["wall"])[len(c["wall"]) // 2]} for name, c in cases.items()}
    print("| case | CPU s/update (median) | wall s/update (median, under the load of the moment) |\n|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['cpu_median']:.4f} | {r['wall_median']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
