"""Accuracy of ``driver dry-run``: its predicted wall time and peak memory vs a real training run.

    .venv/bin/python benchmarks/dryrun_accuracy.py [--config configs/burgers32.py:cpu] [--config.a.b=v ...]
                                                   [--workdir DIR] [--keep] [--skip-validate]

1. ``python -m ups_jax.driver validate --config ...`` in a subprocess, timed (the "validate in < 5 s" figure).
2. ``python -m ups_jax.driver dry-run --config ... --json`` in a subprocess: predicted wall time and peak
   resident memory (its own wall time and peak RSS are reported too: what the dry run costs).
3. ``python -m ups_jax.train --config ... --workdir DIR --fresh`` in a subprocess (DIR: a temporary directory
   unless ``--workdir``): wall time from spawn to exit and the child's peak RSS (``os.wait4`` rusage of that
   process alone), plus a per-part breakdown from its ``metrics.jsonl`` (start-up, each stage, final
   evaluation, exit) beside the dry run's parts.

Both runs use the same config and overrides, so they read the same data. When the config's default dataset is
missing it is generated first (outside both measurements; the dry run would otherwise time synthetic fields).
Prints the machine (nproc, CPU model, load), the date and markdown rows for docs/benchmarks.md. The :cpu run
takes ~15 min on 2 cores; ``--config configs/burgers32.py:test`` checks the script in about two minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_measured(cmd: list[str], *, env=None) -> dict:
    """Runs ``cmd``; returns wall seconds (spawn → exit), the process's own peak RSS, stdout and exit code."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(p.pid, 0)      # rusage of this child alone (not earlier children)
        wall = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"cmd": cmd, "t_spawn": t0, "wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024,
                "rc": p.returncode, "stdout": out.read(), "stderr": err.read()}


def measured_parts(workdir: Path, t_spawn: float, t_exit: float) -> dict:
    """Start-up / stages / final evaluation / exit of a finished run, from the times in its metrics.jsonl."""
    recs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(r for r in recs if r["kind"] == "run_start")
    parts = {"startup_s": start["time"] - t_spawn, "stages": {}}
    prev = start["time"]
    for r in recs:
        if r["kind"] == "stage_end":
            steps = [x["step_time_ms"] for x in recs if x["kind"] == "train" and x.get("stage") == r["stage"]]
            steady = sorted(steps[1:] or steps)   # the first window includes the compile
            first = next((x for x in recs if x["kind"] == "train" and x.get("stage") == r["stage"]), None)
            parts["stages"][r["stage"]] = {
                "total_s": r["time"] - prev,
                "step_ms_median": steady[len(steady) // 2] if steady else float("nan"),
                # setup + compile + the first log_every steps
                "first_log_s": first["time"] - prev if first else float("nan"),
                "first_log_step": first["step"] if first else 0}
            prev = r["time"]
    ev = next((r for r in recs if r["kind"] == "eval"), None)
    end = next((r for r in recs if r["kind"] == "run_end"), None)
    if ev is not None:
        parts["final_eval_s"] = ev["time"] - prev
    if end is not None:
        parts["exit_s"] = t_exit - end["time"]
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/burgers32.py:cpu")
    p.add_argument("--workdir", help="directory for the real run (default: a temporary one, deleted)")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdir (printed)")
    p.add_argument("--skip-validate", action="store_true", help="do not time driver validate")
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        p.error(f"unrecognised arguments: {' '.join(bad)}")
    py = sys.executable
    cfg_args = ["--config", args.config, *overrides]

    from ups_jax.config import load_config, split_config_args
    from ups_jax.data.default import ensure_default_data

    spec, ov, _ = split_config_args(cfg_args)
    cfg = load_config(spec, ov)
    if not cfg.data.paths:
        ensure_default_data(cfg)      # generated outside both measurements
    jax_cache = {k: v for k, v in os.environ.items() if k.startswith("JAX_COMPILATION_CACHE")}
    if jax_cache:
        print(f"warning: {jax_cache}: the dry run's compiles may be reused by the real run (faster than predicted)")

    date = datetime.date.today().isoformat()
    machine = f"{os.cpu_count()} cores (nproc), {cpu_model()}; {platform.system()} {platform.machine()}, " \
              f"Python {platform.python_version()}"
    print(f"date: {date}\nmachine: {machine}\nconfig: {' '.join(cfg_args)}")
    rows = []
    load_before = loadavg()

    if not args.skip_validate:
        v = run_measured([py, "-m", "ups_jax.driver", "validate", *cfg_args])
        print(f"validate: exit {v['rc']}, {v['wall_s']:.2f} s wall (process start to exit)")
        rows.append(f"| {date} | {spec} | `driver validate` wall time (no --workdir/--compile) | "
                    f"**{v['wall_s']:.1f} s** |")

    d = run_measured([py, "-m", "ups_jax.driver", "dry-run", *cfg_args, "--json"])
    if d["rc"] != 0:
        print(f"dry-run failed (exit {d['rc']}): {d['stderr'].strip()[-2000:]}", file=sys.stderr)
        return 1
    pred = json.loads(d["stdout"])
    print(f"dry-run: {d['wall_s']:.1f} s wall, peak RSS {d['peak_rss_bytes'] / 2**20:.0f} MiB; predicts "
          f"{pred['total_s']:.1f} s and {pred['predicted_peak_rss_bytes'] / 2**20:.0f} MiB"
          + (" (synthetic data)" if pred.get("synthetic_data") else ""))

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir).absolute()
    else:
        tmp = tempfile.mkdtemp(prefix="ups_dryrun_acc_")
        workdir = Path(tmp) / "run"
    t = run_measured([py, "-m", "ups_jax.train", *cfg_args, "--workdir", str(workdir), "--fresh"])
    if t["rc"] != 0:
        print(f"train failed (exit {t['rc']}): {t['stderr'].strip()[-2000:]}", file=sys.stderr)
        return 1
    load_after = loadavg()
    parts = measured_parts(workdir, t["t_spawn"], t["t_spawn"] + t["wall_s"])

    r_wall = pred["total_s"] / t["wall_s"]
    r_mem = pred["predicted_peak_rss_bytes"] / t["peak_rss_bytes"]
    print(f"\n{'':22s} {'predicted':>11s} {'measured':>11s} {'ratio':>7s}")
    print(f"{'wall time (s)':22s} {pred['total_s']:11.1f} {t['wall_s']:11.1f} {r_wall:7.3f}")
    print(f"{'peak memory (MiB)':22s} {pred['predicted_peak_rss_bytes'] / 2**20:11.0f} "
          f"{t['peak_rss_bytes'] / 2**20:11.0f} {r_mem:7.3f}")
    print(f"{'  startup (s)':22s} {pred['startup_s']:11.1f} {parts['startup_s']:11.1f}")
    for name, st in pred["stages"].items():
        m = parts["stages"].get(name, {})
        print(f"{'  ' + name + ' (s)':22s} {st['total_s']:11.1f} {m.get('total_s', float('nan')):11.1f}")
        print(f"{'    step (ms)':22s} {1e3 * st['step_s']:11.2f} {m.get('step_ms_median', float('nan')):11.2f}"
              f"   (measured: median logged window)")
        k = m.get("first_log_step", 0)
        print(f"{f'    to step {k} (s)':22s} {st['setup_s'] + st['compile_s'] + k * st['step_s']:11.1f} "
              f"{m.get('first_log_s', float('nan')):11.1f}   (setup + compile + {k} steps)")
        print(f"{'    evals (s)':22s} {st['val_compile_s'] + st['evals'] * (st['val_s'] + st['checkpoint_s']):11.1f}"
              f"   (validation compile {st['val_compile_s']:.1f} s + {st['evals']} × (val {st['val_s']:.2f} s + "
              f"checkpoint {st['checkpoint_s']:.2f} s))")
    print(f"{'  final eval (s)':22s} {pred['final_eval_s']:11.1f} {parts.get('final_eval_s', float('nan')):11.1f}")
    print(f"{'  exit (s)':22s} {'—':>11s} {parts.get('exit_s', float('nan')):11.1f}")
    print(f"load average before/after: {load_before} / {load_after}")
    within = lambda r: "within" if abs(r - 1) <= 0.15 else "outside"
    print(f"accuracy aim ±15 %: wall time {within(r_wall)}, peak memory {within(r_mem)}")
    rows.append(f"| {date} | {spec} | dry-run predicted vs real `train` wall time | {pred['total_s']:.0f} s vs "
                f"**{t['wall_s']:.0f} s** (ratio {r_wall:.2f}) |")
    rows.append(f"| {date} | {spec} | dry-run predicted vs real peak RSS | "
                f"{pred['predicted_peak_rss_bytes'] / 2**20:.0f} MiB vs **{t['peak_rss_bytes'] / 2**20:.0f} MiB** "
                f"(ratio {r_mem:.2f}) |")
    rows.append(f"| {date} | {spec} | cost of the dry run itself | {d['wall_s']:.0f} s, "
                f"{d['peak_rss_bytes'] / 2**20:.0f} MiB |")
    print(f"\nmarkdown rows for docs/benchmarks.md (machine: {machine}; load {load_before} → {load_after}):")
    print("| date | config | measurement | result |\n|---|---|---|---|")
    print("\n".join(rows))
    if tmp and not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp:
        print(f"kept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
