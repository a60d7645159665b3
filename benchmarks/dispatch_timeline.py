"""Where a training stage's wall time goes, dispatch by dispatch (issue 16: "``configs/fno_burgers.py:cpu`` trains at
~1.2 s per update but stalls ~12 s every 16 updates").

    nice -n 5 .venv/bin/python benchmarks/dispatch_timeline.py --config configs/fno_burgers.py:cpu --stage fno \\
        --data FILE.hdf5 --steps 48 --steps-per-dispatch 1 [--eval-every 16] [--log-every 16] [--workdir DIR]

Runs ``python -m ups_jax.train``'s own pipeline and loop in this process, on a fresh work directory, with the
stage shortened to ``--steps`` updates, and records a timeline: every compiled dispatch (timed to completion:
``block_until_ready`` right after it, so an asynchronous wait lands in the dispatch that caused it instead of in
the next sync), every train log record, validation and checkpoint write. Everything between the end of one
dispatch and the start of the next is a *host gap*; the table names what ran in it. A periodic stall shows as a
gap (or a dispatch) far above the median that recurs at a fixed update count.

Prints one line per dispatch (step, updates, seconds, seconds per update, the gap after it and its contents), then
a summary — with the time from the stage's start to its first finished update and the first validation's time
(compiles included: the persistent compilation cache is off unless ``--cache DIR``); ``--out FILE.json`` keeps the
raw timeline. ``--code-root DIR`` times another checkout (the same hooks: ``StageStep.run``, ``checkpoints.save``,
``RunLogger.log``, ``pipeline.make_validator``, ``pipeline.run_stage``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def record_timeline(train_argv: list[str]) -> list[dict]:
    """Runs the train command with timing hooks; returns the events (kind, t0, t1, step, n) in time order."""
    import jax

    from ups_jax.errors import run_cli   # the checkout of --code-root when given (sys.path, see main)
    from ups_jax.train import main as train_main
    from ups_jax.training import checkpoints, pipeline
    from ups_jax.training.logging import RunLogger
    from ups_jax.training.step import StageStep

    events: list[dict] = []
    run, save, log, make_validator = StageStep.run, checkpoints.save, RunLogger.log, pipeline.make_validator
    run_stage = pipeline.run_stage

    def timed_stage(*args, **kw):
        t0 = time.perf_counter()
        try:
            return run_stage(*args, **kw)
        finally:
            events.append(dict(kind="stage", t0=t0, t1=time.perf_counter(), step=None))

    def timed_run(self, state, key, step0, xs):
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(self, state, key, step0, xs))
        n = int(jax.tree.leaves(xs)[0].shape[0])
        events.append(dict(kind="dispatch", t0=t0, t1=time.perf_counter(), step=int(step0) + n, n=n))
        return out

    def timed_save(mngr, step, **kw):
        t0 = time.perf_counter()
        save(mngr, step, **kw)
        events.append(dict(kind="checkpoint", t0=t0, t1=time.perf_counter(), step=int(step)))

    def timed_log(self, kind, **fields):
        t0 = time.perf_counter()
        rec = log(self, kind, **fields)
        if kind == "train":      # the log interval's own work (the sync and the means) ran just before: see gaps
            events.append(dict(kind="log", t0=t0, t1=time.perf_counter(), step=fields.get("step")))
        return rec

    def timed_validator(*args, **kw):
        validate, metric = make_validator(*args, **kw)

        def wrapped(m, *a):
            t0 = time.perf_counter()
            out = validate(m, *a)
            events.append(dict(kind="validation", t0=t0, t1=time.perf_counter(), step=None))
            return out

        if hasattr(validate, "warm_up"):
            def warm_up(m):
                t0 = time.perf_counter()
                validate.warm_up(m)
                events.append(dict(kind="validation warm-up", t0=t0, t1=time.perf_counter(), step=None))
            wrapped.warm_up = warm_up
        return wrapped, metric

    import logging

    class Recompiles(logging.Handler):          # the stage's recompile watch (ups_jax/compilation.py), if any
        def emit(self, record):
            if "compiled again" in record.getMessage():
                events.append(dict(kind="recompile", t0=time.perf_counter(), t1=time.perf_counter(), step=None,
                                   message=record.getMessage()))

    logging.getLogger().addHandler(Recompiles())
    StageStep.run, checkpoints.save, RunLogger.log = timed_run, timed_save, timed_log
    pipeline.make_validator, pipeline.run_stage = timed_validator, timed_stage
    try:
        rc = run_cli(train_main, train_argv)
    finally:
        StageStep.run, checkpoints.save, RunLogger.log, pipeline.make_validator = run, save, log, make_validator
        pipeline.run_stage = run_stage
    if rc != 0:
        raise SystemExit(f"the train command exited {rc}")
    return sorted(events, key=lambda e: e["t0"])


def table(events: list[dict]) -> tuple[list[str], dict]:
    dispatches = [e for e in events if e["kind"] == "dispatch"]
    stage = [e for e in events if e["kind"] == "stage"]
    vals = [e for e in events if e["kind"] == "validation"]
    lines = [f"{'step':>5} {'updates':>7} {'dispatch s':>10} {'s/update':>8} {'gap after s':>11}  in the gap"]
    gaps = []
    for i, d in enumerate(dispatches):
        end = dispatches[i + 1]["t0"] if i + 1 < len(dispatches) else None
        inside = [e for e in events if e["kind"] != "dispatch" and end is not None and d["t1"] <= e["t0"] < end]
        gap = (end - d["t1"]) if end is not None else float("nan")
        what = ", ".join(f"{e['kind']} {e['t1'] - e['t0']:.2f}" for e in inside)
        if end is not None:
            gaps.append(dict(step=d["step"], gap=gap, what=what))
        lines.append(f"{d['step']:>5} {d['n']:>7} {d['t1'] - d['t0']:>10.2f} {(d['t1'] - d['t0']) / d['n']:>8.3f} "
                     f"{gap:>11.2f}  {what}")
    if dispatches:
        after = [e for e in events if e["kind"] != "dispatch" and e["t0"] >= dispatches[-1]["t1"]]
        lines.append("after the last dispatch: " + ", ".join(f"{e['kind']} {e['t1'] - e['t0']:.2f}" for e in after))
    per_update = [(d["t1"] - d["t0"]) / d["n"] for d in dispatches[1:]]     # the first one compiles
    plain = [g["gap"] for g in gaps if not g["what"]]
    summary = dict(stage_start_to_first_update_s=dispatches[0]["t1"] - stage[0]["t0"] if stage and dispatches
                   else None,
                   first_validation_s=vals[0]["t1"] - vals[0]["t0"] if vals else None,
                   later_validations_s=[v["t1"] - v["t0"] for v in vals[1:]],
                   warm_up_s=sum(e["t1"] - e["t0"] for e in events if e["kind"] == "validation warm-up"),
                   recompile_lines=[e["message"] for e in events if e["kind"] == "recompile"],
                   dispatches=len(dispatches), updates=sum(d["n"] for d in dispatches),
                   first_dispatch_s=dispatches[0]["t1"] - dispatches[0]["t0"] if dispatches else None,
                   median_s_per_update=statistics.median(per_update) if per_update else None,
                   max_s_per_update=max(per_update) if per_update else None,
                   median_plain_gap_s=statistics.median(plain) if plain else None,
                   max_plain_gap_s=max(plain) if plain else None,
                   gaps_over_1s=[g for g in gaps if g["gap"] > 1.0])
    return lines, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "fno_burgers.py") + ":cpu")
    p.add_argument("--stage", default="fno")
    p.add_argument("--data", nargs="+", help="PDEBench file(s) (default: the config's)")
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--eval-every", type=int, default=16)
    p.add_argument("--log-every", type=int, default=16)
    p.add_argument("--steps-per-dispatch", default="1")
    p.add_argument("--workdir", help="a new run directory (default: a temporary one, removed)")
    p.add_argument("--out", help="write the timeline and summary as JSON")
    p.add_argument("--cache", default="", help="runtime.compilation_cache ('' = off: every compile is timed)")
    p.add_argument("--code-root", help="time another checkout's ups_jax (e.g. the commit before a change)")
    a = p.parse_args(argv)
    if a.code_root:
        sys.path.insert(0, str(Path(a.code_root).resolve()))
        import ups_jax
        assert ups_jax.__file__.startswith(str(Path(a.code_root).resolve())), ups_jax.__file__
    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dispatch_timeline_")
        a.workdir = str(Path(tmp.name) / "run")
    s = f"--config.stages.{a.stage}"
    train_argv = ["--config", a.config, "--workdir", a.workdir, "--stages", a.stage, f"{s}.steps={a.steps}",
                  f"{s}.eval_every={a.eval_every}", f"{s}.log_every={a.log_every}",
                  f"--config.runtime.steps_per_dispatch={a.steps_per_dispatch}", "--config.logging.progress=False",
                  f"--config.runtime.compilation_cache={a.cache}"]
    if a.data:
        train_argv += ["--data", *a.data]
    t0 = time.perf_counter()
    events = record_timeline(train_argv)
    lines, summary = table(events)
    print("\n".join(lines))
    print(json.dumps(dict(summary, command_s=time.perf_counter() - t0), indent=1, default=float))
    if a.out:
        Path(a.out).write_text(json.dumps(dict(summary=summary, events=events), indent=1, default=float))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
