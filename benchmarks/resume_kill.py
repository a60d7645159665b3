"""Kill training at random points, re-run the same command, compare with an uninterrupted run bit for bit.

    python benchmarks/resume_kill.py [--signal KILL|TERM] [--points 10] [--by step|time] [--seed 0]
                                     [--config configs/burgers32.py:test] [--data FILE] [--keep DIR]

1. trains the config once without interruption (the reference);
2. for each of ``--points`` random points: starts ``python -m ups_jax.train`` in a fresh workdir, stops it with
   the signal at that point, runs the same command again to the end, and compares every stage's final ``params``,
   ``ema`` and ``opt`` checkpoint items and the test nRMSE with the reference (bitwise).

``--by step`` (default) draws the stage, the optimizer update and whether the signal comes right after the update
or while that update's checkpoint is being written (the ``UPS_JAX_TEST_FAULT`` hook of ``training/faults.py``);
``--by time`` sends the signal after a random delay within the reference run's wall time (so it can also land in
start-up, compilation, validation or the final evaluation). SIGKILL must leave a resumable run; SIGTERM must
exit with 75 after writing a checkpoint at the current step (or die before the handler is installed).

Prints one row per point and the totals; the load average is printed before and after (2-core machine shared
with others: the wall times are noisy, the bitwise results are not).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAULT_ENV = "UPS_JAX_TEST_FAULT"


def _train(cmd, env, fault=None, delay=None, sig=signal.SIGKILL) -> tuple[int, float, str]:
    env = dict(env)
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if delay is not None:
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
    _, err = p.communicate()
    return p.returncode, time.perf_counter() - t0, err


def _items(workdir: Path, stage: str, step: int) -> dict:
    import orbax.checkpoint as ocp

    out = {}
    for item in ("params", "ema", "opt"):
        out[item] = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / stage / str(step) / item)
    return out


def _bitwise(a, b) -> bool:
    import jax
    import numpy as np

    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    return len(fa) == len(fb) and all(pa == pb and np.array_equal(np.asarray(x), np.asarray(y))
                                      for (pa, x), (pb, y) in zip(fa, fb))


def _same_run(ref: Path, wd: Path, cfg) -> bool:
    for stage in cfg.stage_order:
        step = int(cfg.stages[stage].steps)
        a, b = _items(ref, stage, step), _items(wd, stage, step)
        if not all(_bitwise(a[k], b[k]) for k in a):
            return False
    ea = json.loads((ref / "eval" / f"{cfg.eval.split}.json").read_text())["model"]["nrmse"]
    eb = json.loads((wd / "eval" / f"{cfg.eval.split}.json").read_text())["model"]["nrmse"]
    return ea == eb


def _newest(wd: Path) -> str:
    root = wd / "checkpoints"
    if not root.is_dir():
        return "-"
    return ", ".join(f"{s.name}:{max((int(p.name) for p in s.iterdir() if p.name.isdigit()), default='-')}"
                     for s in sorted(root.iterdir()) if s.is_dir())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--by", choices=["step", "time"], default="step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="skip the first points of the seed's sequence (continue a "
                    "series that was cut short; with --keep the reference is reused)")
    ap.add_argument("--config", default="configs/burgers32.py:test")
    ap.add_argument("--data", help="HDF5 file (default: a tiny generated one, 12 samples x 64 cells)")
    ap.add_argument("--keep", help="keep the workdirs here (default: a temporary directory); a reference run "
                    "already there is reused")
    args = ap.parse_args()
    from ups_jax.config import load_config

    cfg = load_config(args.config)
    rng = random.Random(args.seed)
    base = Path(args.keep or tempfile.mkdtemp(prefix="resume_kill_"))
    base.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(base / "jax_cache"))   # compile once for all runs
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    data = args.data
    if not data:
        from ups_jax.data.generate import generate_burgers_file

        data = str(generate_burgers_file(base / "data", nu=0.01, seed=2022, samples=12, nx=64, chunk=12,
                                         progress=False, overwrite=True))
    sig = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[args.signal]
    print(f"load average before: {os.getloadavg()}; config {args.config}; data {data}; signal {args.signal}, "
          f"by {args.by}, {args.points} points, seed {args.seed}; workdirs in {base}", flush=True)

    def cmd(wd):
        return [sys.executable, "-m", "ups_jax.train", "--config", args.config, "--workdir", str(wd), "--data", data]

    ref = base / "reference"
    if (ref / "eval" / f"{cfg.eval.split}.json").is_file() and (ref / "wall_s").is_file():   # --keep: reuse it
        wall = float((ref / "wall_s").read_text())
    else:
        rc, wall, err = _train(cmd(ref), env)
        if rc != 0:
            print(err[-3000:])
            return 1
        (ref / "wall_s").write_text(str(wall))
    print(f"reference: {wall:.1f} s", flush=True)
    stages = [(s, int(cfg.stages[s].steps), int(cfg.stages[s].eval_every)) for s in cfg.stage_order]
    rows, ok_resumed, ok_bitwise = [], 0, 0
    for i in range(args.points):
        fault, delay = None, None
        if args.by == "step":
            stage, steps, every = rng.choices(stages, weights=[s[1] for s in stages])[0]
            step = rng.randint(1, steps)
            saves = step % every == 0 or step == steps
            where = rng.choice(["step", "save"]) if saves else "step"
            fault = f"{stage}:{step}:{args.signal}" + ("@save" if where == "save" else "")
            point = fault
        else:
            delay = rng.uniform(0.5, wall)
            point = f"after {delay:.1f} s"
        if i < args.start:
            continue
        wd = base / f"{args.signal.lower()}-{args.by}-s{args.seed}-p{i:02d}"
        if wd.exists():
            import shutil

            shutil.rmtree(wd)
        rc1, t1, err1 = _train(cmd(wd), env, fault=fault, delay=delay, sig=sig)
        stopped_at = _newest(wd)
        rc2, t2, err2 = _train(cmd(wd), env)
        expected = (-signal.SIGKILL,) if args.signal == "KILL" else (75, -signal.SIGTERM)
        resumed = rc2 == 0 and (rc1 in expected or (args.by == "time" and rc1 == 0))
        same = rc2 == 0 and _same_run(ref, wd, cfg)
        ok_resumed += resumed
        ok_bitwise += same
        rows.append((i, point, rc1, stopped_at, rc2, same))
        print(f"{i:2d}  {point:28s} exit {rc1:4d} (newest checkpoints {stopped_at:22s}) -> re-run exit {rc2}: "
              f"{'bitwise equal' if same else 'DIFFERENT'}  [{t1:.0f} s + {t2:.0f} s]", flush=True)
        if rc2 != 0:
            print(err2[-2000:])
    n = args.points - args.start
    print(f"{args.signal} at {n} random points ({args.by}, seed {args.seed}, points {args.start}..{args.points - 1}): "
          f"{ok_resumed}/{n} resumed, {ok_bitwise}/{n} final parameters bitwise equal to the uninterrupted run")
    print(f"load average after: {os.getloadavg()}")
    return 0 if ok_resumed == ok_bitwise == n else 1


if __name__ == "__main__":
    sys.exit(main())
