"""Accuracy over seeds: train each config for seeds 0..N-1, evaluate on the test split, report mean ± std.

    .venv/bin/python benchmarks/accuracy.py --config configs/burgers32.py:cpu [--config configs/fno_burgers.py:cpu]
        --seeds 3 [--workdir-root runs/accuracy] [--override key.path=value ...] [--out PREFIX]
        [--budgets 1,2,4 [--budget-seeds N] [--quiet-wall-s S[,S...]]] [--solver-cells 16,32,64]

Each (config, seed) trains into ``WORKDIR_ROOT/<config>_<variant>/seed<S>`` with ``python -m ups_jax.train
--config SPEC --config.seed=S [--config.<override> ...]`` (its own process, so each run is exactly the command a
user would type). A finished run (``run_end`` logged and ``eval/<split>.json`` present) is reused; an unfinished
one resumes; a workdir whose ``config.json`` is another config is refused (one line, exit 2). Overrides apply to
every config (e.g. ``--override "data.paths=('/data/1D_Burgers_Sols_Nu0.01.hdf5',)"``).

A config whose ``baseline.config`` is another ``--config`` of the same command (``configs/ns2d.py:cpu`` and its
FNO-2D ``configs/fno_ns2d.py:cpu``) is trained after it with ``--config.baseline.workdir`` pointing at that config's
run of the same seed: the comparison table of the run shows the baseline trained once, not a second copy.

Reports, per config, mean ± std over seeds (sample std, ddof = 1) of: the protocol nRMSE (PDEBench: 10 given
frames, 31 predicted; per-trajectory mean over the split), the full-horizon nRMSE, Frobenius relative L2, fRMSE
bands (PDEBench's Lx = 1), correlation time (steps) and training wall time (the stages' own wall time from
``metrics.jsonl``; marked * when a stage was resumed, then only its last segment counts), with persistence on the
same test trajectories beside them; and the curve of error against training time: each stage's validation
nRMSE (val split, the 31-step protocol on ``eval.val_max_trajectories`` trajectories: what selects the checkpoint)
at every validation, against the wall time since that stage started, mean over seeds. Beside the models: the
built-in solver from the given frame on coarse grids (``--solver-cells``, default 16, 32, 64 cells; as
benchmarks/rollout_vs_solver.py), the honest baseline every accuracy table shows.

Budget curves (``--budgets 1,2,4``): each config is also trained with B × its updates (every trained stage's
steps, validation/log cadences and warm-up times B; the cosine follows its stage's length; see
``budget_overrides``) into ``WORKDIR_ROOT/<config>_<variant>_xB/seed<S>`` for ``--budget-seeds`` seeds, and
``PREFIX_budgets.png`` plots test nRMSE (mean ± std over seeds) against training wall time, one line per config:
the measured walls, or, with ``--quiet-wall-s`` (one value, or one per ``--config`` in order), budget × each
config's 1× wall on a quiet machine, for runs that were timed beside other work.

Writes ``PREFIX.json`` and ``PREFIX.md`` (default PREFIX: ``WORKDIR_ROOT/accuracy``) and prints the markdown.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.config import run_name  # noqa: E402 (the workdir name train gives this config)
from ups_jax.errors import UserError, run_cli  # noqa: E402

# (label, key in the eval JSON's model/persistence block, where: protocol or full_horizon)
METRICS = (("nRMSE (31-step protocol)", "nrmse", "protocol"), ("nRMSE (full horizon)", "nrmse", "full_horizon"),
           ("rel-L2", "rel_l2", "protocol"), ("fRMSE low", "frmse_low", "protocol"),
           ("fRMSE mid", "frmse_mid", "protocol"), ("fRMSE high", "frmse_high", "protocol"),
           ("corr time (steps)", "corr_time", "protocol"))



# Stage keys counted in optimizer updates that a budget multiple scales (budget_overrides)
SCALED_STAGE_KEYS = ("steps", "eval_every", "log_every", "warmup_steps", "pushforward_curriculum")
SOLVER_CELLS = (16, 32, 64)       # the coarse-solver rows every accuracy table shows (issue 19)

# Stage keys added after some runs were trained, and what the code does when a config lacks them (training/optim.py
# reads them with these defaults): a run without the key is the same run as one with this value.
ABSENT_STAGE_KEYS = {"optimizer": "adamw", "schedule": "warmup_cosine", "recon_windows": "all"}
# model/eval keys added later, with the value that means "what the code did before them" (eval.refine: the
# headline evaluation was the operator alone)
ABSENT_KEYS = {"model.scale_norm": False, "model.operator.advance_scale": True, "eval.refine": "none"}
STEP_SCHEDULE_KEYS = ("lr_step_every", "lr_gamma")     # read only by the 'step' schedule


def _config_dict(spec: str, overrides: Sequence[str], seed: int) -> dict:
    from ups_jax.config import load_config

    cfg = load_config(spec, [*overrides, f"seed={seed}"])       # unknown config/key: one-line ConfigError
    return json.loads(json.dumps(cfg.to_dict()))


REFINE_MODULES = ("corrector", "student", "steady")   # each trained by the stage of its name


def check_workdir(workdir: Path, want: dict, spec: str) -> None:
    """Refuses a workdir written by another config (its config.json differs from ``want``). The settings of stages
    neither config trains (``stages.<name>`` outside both ``stage_order``, and ``model.<name>`` of such a refine
    stage) do not count: a new key there (e.g. of a
    refine stage that ``:cpu`` does not run) cannot have changed the run; nor can a stage key the run's config
    lacks because it was added later, when the config asks for what the code does without it (ABSENT_STAGE_KEYS,
    ABSENT_KEYS)."""
    from ups_jax.config import flatten

    path = workdir / "config.json"
    if not path.exists():
        return
    try:
        have = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e}); move {workdir} aside or use another --workdir-root") from e
    a, b = flatten(have), flatten(want)
    trained = set(have.get("stage_order", ())) | set(want.get("stage_order", ()))
    untrained = {f"stages.{n}." for n in set(have.get("stages", {})) | set(want.get("stages", {})) if n not in trained}
    # the refine stages' own model sections (model.corrector, ...) cannot have changed a run that trains none of them
    untrained |= {f"model.{n}." for n in REFINE_MODULES if n not in trained}
    # a TTC preset neither run's table uses (eval.ttc_preset) cannot have changed it: e.g. one added later
    used = {(c.get("eval") or {}).get("ttc_preset") for c in (have, want)}
    untrained |= {f"ttc.presets.{n}." for c in (have, want) for n in (c.get("ttc") or {}).get("presets", {})
                  if n not in used}
    for k, value in ABSENT_KEYS.items():                      # a run from before a model/eval key existed
        if k not in a and k in b:
            a[k] = value
    for name, stage in have.get("stages", {}).items():        # a run from before a stage key existed
        for key, value in ABSENT_STAGE_KEYS.items():
            if isinstance(stage, dict) and key not in stage and f"stages.{name}.{key}" in b:
                a[f"stages.{name}.{key}"] = value
        for key in STEP_SCHEDULE_KEYS:        # unread unless the schedule is 'step' (training/optim.py)
            k = f"stages.{name}.{key}"
            if k not in a and k in b and "step" not in (a.get(f"stages.{name}.schedule"),
                                                         b.get(f"stages.{name}.schedule")):
                a[k] = b[k]
    diff = sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not any(k.startswith(p) for p in untrained))
    if diff:
        shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise UserError(f"{workdir}: written by another config than {spec} with these overrides (differs in: "
                        f"{shown}); use another --workdir-root or move {workdir} aside")


def _records(workdir: Path) -> list[dict]:
    from ups_jax.training.logging import read_jsonl

    path = workdir / "metrics.jsonl"
    return read_jsonl(path)[0] if path.exists() else []


def finished(workdir: Path, split: str) -> bool:
    return (workdir / "eval" / f"{split}.json").exists() and any(r.get("kind") == "run_end"
                                                                  for r in _records(workdir))


def train(spec: str, overrides: Sequence[str], seed: int, workdir: Path) -> None:
    cmd = [sys.executable, "-m", "ups_jax.train", "--config", spec, "--workdir", str(workdir),
           *[f"--config.{o}" for o in overrides], f"--config.seed={seed}"]
    print(f"$ {' '.join(cmd)}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        raise UserError(f"training {spec} seed {seed} into {workdir} failed (exit {rc}; its output is above); "
                        f"re-running this command resumes it", exit_code=1 if rc != 2 else 2)


def train_wall(workdir: Path, stages: Sequence[str]) -> tuple[float | None, bool]:
    """(sum of the stages' wall_s from their stage_end records, exact = no stage was resumed)."""
    recs = _records(workdir)
    ends = {r["stage"]: r for r in recs if r.get("kind") == "stage_end"}
    if not all(s in ends for s in stages):
        return None, False
    resumed = any(r.get("kind") == "resume" for r in recs)
    return float(sum(ends[s]["wall_s"] for s in stages)), not resumed


def val_curve(workdir: Path) -> list[dict]:
    """Every validation of the run: {stage, step, elapsed_s (since the stage started), metric, value}."""
    recs = _records(workdir)
    starts = {r["stage"]: r["time"] - r["wall_s"] for r in recs if r.get("kind") == "stage_end"}
    return [{"stage": r["stage"], "step": r["step"], "elapsed_s": r["time"] - starts[r["stage"]],
             "metric": r["val_metric"], "value": r[r["val_metric"]]}
            for r in recs if r.get("kind") == "val" and r.get("stage") in starts]


def curve_summary(rows: Sequence[dict]) -> list[dict]:
    """Mean over seeds of each (stage, step) validation; points every seed has."""
    points: dict[tuple, list] = {}
    for r in rows:
        for v in r["val_curve"]:
            points.setdefault((v["stage"], v["step"], v["metric"]), []).append(v)
    return [{"stage": st, "step": step, "metric": metric, "seeds": len(vs),
             "elapsed_s": mean_std([v["elapsed_s"] for v in vs]), "value": mean_std([v["value"] for v in vs])}
            for (st, step, metric), vs in points.items() if len(vs) == len(rows)]


def seed_row(workdir: Path, split: str, stages: Sequence[str], seed: int, reused: bool) -> dict:
    ev = json.loads((workdir / "eval" / f"{split}.json").read_text())
    conv = ev.get("conventions") or {}
    if conv.get("version", 1) < 2:
        raise UserError(f"{workdir}/eval/{split}.json predates per-trajectory metrics; re-evaluate it: "
                        f"python -m ups_jax.evaluate --workdir {workdir}")
    row = {"seed": seed, "workdir": str(workdir), "reused": reused, "n_trajectories": ev["n_trajectories"],
           "protocol": ev["protocol"], "model": {}, "persistence": {},
           "predictor": ev.get("predictor", "operator")}      # the refiner of the headline evaluation (eval.refine)
    for who in ("model", "persistence"):
        for label, key, where in METRICS:
            block = ev if where == "protocol" else ev.get("full_horizon", {})
            row[who][f"{where}/{key}"] = block.get(who, {}).get(key)
    wall, exact = train_wall(workdir, stages)
    row["train_wall_s"], row["train_wall_exact"] = wall, exact
    meta = json.loads((workdir / "run_meta.json").read_text())
    row["fingerprint"] = meta.get("fingerprint")
    row["val_curve"] = val_curve(workdir)
    return row


def mean_std(values: Sequence[float | None]) -> dict:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    m = sum(v) / len(v)
    std = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return {"mean": m, "std": std, "n": len(v)}


def _same_spec(a: str, b: str) -> bool:
    (fa, _, va), (fb, _, vb) = a.partition(":"), b.partition(":")
    return va == vb and (ROOT / fa).resolve() == (ROOT / fb).resolve()


def baseline_pairs(specs: Sequence[str], overrides: Sequence[str]) -> dict[str, str]:
    """{spec: the other --config that is its baseline.config} (the baseline trained once, as its own config)."""
    pairs = {}
    for spec in specs:
        wanted = str((_config_dict(spec, overrides, 0).get("baseline") or {}).get("config") or "")
        other = next((o for o in specs if o != spec and wanted and _same_spec(o, wanted)), None)
        if other:
            pairs[spec] = other
    return pairs


def budget_overrides(spec: str, overrides: Sequence[str], budget: int) -> list[str]:
    """The overrides that train ``spec`` for ``budget`` × its updates: every trained stage's ``steps`` and the
    cadences and schedule lengths counted in updates (SCALED_STAGE_KEYS, where set) times ``budget``; the
    warm-up/cosine schedule is sized to ``steps`` by training/optim.py, so it follows. Not scaled: a 'step'
    schedule's ``lr_step_every`` (PDEBench's StepLR counts epochs, not the run), the EMA decay (its horizon in
    updates stays the same), ``patience`` (counts validations)."""
    if budget == 1:
        return []
    cfg = _config_dict(spec, overrides, 0)
    out = []
    for name in cfg["stage_order"]:
        for key in SCALED_STAGE_KEYS:
            value = cfg["stages"][name].get(key)
            if value:
                out.append(f"stages.{name}.{key}={int(value) * budget}")
    if cfg["checkpoint"].get("every_steps"):
        out.append(f"checkpoint.every_steps={int(cfg['checkpoint']['every_steps']) * budget}")
    return out


def run_config(spec: str, overrides: Sequence[str], seeds: int, root: Path, split: str,
               baseline: str | None = None, budget: int = 1) -> dict:
    rows = []
    name = run_name(spec) + (f"_x{budget}" if budget != 1 else "")
    overrides = [*overrides, *budget_overrides(spec, overrides, budget)]
    for seed in range(seeds):
        workdir = root / name / f"seed{seed}"
        # baseline.workdir is relative to the run's workdir (training/pipeline.py baseline_workdir); the baseline's
        # run of the same budget and seed
        b_name = run_name(baseline) + (f"_x{budget}" if budget != 1 else "") if baseline else ""
        extra = [f"baseline.workdir={os.path.relpath(root / b_name / f'seed{seed}', workdir)}"] if baseline else []
        want = _config_dict(spec, [*overrides, *extra], seed)
        check_workdir(workdir, want, spec)
        reused = finished(workdir, split)
        if reused:
            print(f"reusing the finished run {workdir}", flush=True)
        else:
            train(spec, [*overrides, *extra], seed, workdir)
        rows.append(seed_row(workdir, split, want["stage_order"], seed, reused))
    prints = {json.dumps(r["fingerprint"], sort_keys=True) for r in rows}
    if len(prints) > 1:
        raise UserError(f"{spec}: the seeds' runs were trained on different data (run_meta.json fingerprints "
                        f"differ under {root / name}); use one dataset")
    summary = {who: {f"{where}/{key}": mean_std([r[who][f"{where}/{key}"] for r in rows]) for _, key, where in METRICS}
               for who in ("model", "persistence")}
    summary["train_wall_s"] = mean_std([r["train_wall_s"] for r in rows])
    summary["val_curve"] = curve_summary(rows)
    updates = sum(int(want["stages"][n]["steps"]) for n in want["stage_order"])
    predictors = sorted({r["predictor"] for r in rows})
    return {"config": spec, "name": name, "budget": budget, "updates": updates, "overrides": list(overrides),
            "predictor": " / ".join(predictors),
            "seeds": list(range(seeds)), "split": split, "n_trajectories": rows[0]["n_trajectories"], "protocol": rows[0]["protocol"],
            "data": rows[0]["fingerprint"], "train_wall_exact": all(r["train_wall_exact"] for r in rows),
            "per_seed": rows, "summary": summary}


def _pm(s: dict, digits: int = 4) -> str:
    if s["mean"] is None:
        return "—"
    if s["std"] is None:
        return f"{s['mean']:.{digits}g}"
    return f"{s['mean']:.{digits}g} ± {s['std']:.2g}"


def label(c: dict) -> str:
    """The config, its budget multiple and, for UPS, which rollout its headline evaluation scores."""
    budget, predictor = c.get("budget", 1), c.get("predictor", "operator")
    return (f"`{c['config']}`" + (f" ({predictor})" if "+" in predictor else "")
            + (f" ×{budget} updates" if budget != 1 else ""))


def solver_rows(report: dict, cells: Sequence[int]) -> list[dict]:
    """The built-in solver started from the given frame at ``cells`` cells (benchmarks/rollout_vs_solver.py:
    restricted by cell averages, solved to the end, interpolated to the protocol's points, scored the same way),
    on the test trajectories of the first config's first run (its data and protocol)."""
    from rollout_vs_solver import Protocol, solver_row

    from ups_jax.config import config_from_dict

    if not cells:
        return []
    wd = Path(report["configs"][0]["per_seed"][0]["workdir"])
    cfg = config_from_dict(json.loads((wd / "config.json").read_text()))
    if int(cfg.data.get("dims", 1)) != 1:      # 2-D: benchmarks/rollout_vs_solver.py (its 2-D table) has them
        print("solver rows: 1-D only here; for 2-D data run benchmarks/rollout_vs_solver.py --workdir RUN",
              flush=True)
        return []
    p = Protocol(cfg, json.loads((wd / "run_meta.json").read_text())["data_paths"], 0)
    bad = [n for n in cells if n < 4 or p.full.nx % n]
    if bad:
        raise UserError(f"--solver-cells {bad}: each must divide the data's {p.full.nx} cells (cell averages)")
    scale = p.advective_scale() or 2.0
    return [{**solver_row(p, n, scale, repeats=1), "test_set_of": report["configs"][0]["config"]}
            for n in sorted(cells)]


def protocol_name(report: dict) -> str:
    """'31-step' (PDEBench Burgers), '11-step' (ns2d :cpu): the protocol's predicted frames, as the run logs it."""
    steps = {c["protocol"].get("steps") for c in report["configs"]}
    return f"{steps.pop()}-step" if len(steps) == 1 and None not in steps else "protocol's"


def markdown(report: dict) -> str:
    name = protocol_name(report)
    head = (["method", "seeds"] + [label.replace("31-step", name) for label, _, _ in METRICS]
            + ["train wall (s)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    test_sets: dict[str, str] = {}
    for c in report["configs"]:
        s = c["summary"]
        wall = _pm(s["train_wall_s"], 4) + ("" if c["train_wall_exact"] else " *")
        lines.append("| " + " | ".join([label(c), str(len(c["seeds"]))]
                                       + [_pm(s["model"][f"{w}/{k}"]) for _, k, w in METRICS] + [wall]) + " |")
        # which of the given frames a model reads does not change what is scored: the same predicted frames
        scored = {k: v for k, v in c["protocol"].items() if k != "context_frames_read"}
        key = json.dumps([c["data"], scored, c["split"]], sort_keys=True)
        if key not in test_sets:
            test_sets[key] = c["config"]
            lines.append("| " + " | ".join([f"persistence (test set of `{c['config']}`)", "—"]
                                           + [_pm(s["persistence"][f"{w}/{k}"]) for _, k, w in METRICS] + ["—"])
                         + " |")
    for r in report.get("solver", []):
        lines.append("| " + " | ".join([f"solver, {r['cells']} cells, from the given frame (test set of "
                                        f"`{r['test_set_of']}`)", "—", f"{r['nrmse']:.4g}"]
                                       + ["—"] * (len(METRICS) - 1) + ["—"]) + " |")
    c0 = report["configs"][0]
    reads = {c["config"]: c["protocol"].get("context_frames_read") for c in report["configs"]}
    notes = [f"Split `{c0['split']}`: {c0['n_trajectories']} trajectories; protocol {c0['protocol']}. Mean ± sample "
             f"std over seeds; nRMSE = per-trajectory mean (PDEBench per-step nRMSE); fRMSE with PDEBench's Lx = 1.",
             f"Machine: {report['machine']}; {report['date']}; load average at the end {report['loadavg']}."]
    if len(set(reads.values())) > 1:
        notes.append("Given frames read (the last h of the protocol's initial_step): " + ", ".join(
            f"`{k}` {v}" for k, v in reads.items()) + ". The full horizon starts at frame h − 1, so its length "
            f"differs between such configs; the {name} protocol scores the same frames for all.")
    if report.get("solver"):
        notes.append("Solver rows: the built-in finite-volume solver (the data's equation) from the last given "
                     "frame restricted to n cells, solved to the end, interpolated to the protocol's points and "
                     "scored the same way (benchmarks/rollout_vs_solver.py); no training, so no seeds.")
    if len(test_sets) > 1:
        notes.append("The configs were evaluated on different test sets (data or protocol differ): compare each with "
                     "its own persistence row.")
    if not all(c["train_wall_exact"] for c in report["configs"]):
        notes.append("* a stage was resumed: its wall time counts only the last segment.")
    budgets = [""] + budget_markdown(report) if len({c.get("budget", 1) for c in report["configs"]}) > 1 else []
    return "\n".join(lines + [""] + notes + budgets + [""] + curve_markdown(report))


def quiet_wall(report: dict, spec: str) -> float | None:
    """The 1× training wall of ``spec`` on a quiet machine (``--quiet-wall-s``), or None (plot the measured walls)."""
    return (report.get("quiet_wall_s") or {}).get(spec)


def budget_markdown(report: dict) -> list[str]:
    """Test nRMSE against the training budget (``--budgets``): one row per config and budget."""
    quiet = report.get("quiet_wall_s") is not None
    head = ["method", "budget", "updates", "seeds", f"test nRMSE ({protocol_name(report)})",
            "train wall (s, measured)"]
    head += ["nominal wall (s, budget × the 1× quiet wall)"] if quiet else []
    lines = ["Test nRMSE against the training budget (mean ± std over seeds):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(report["configs"], key=lambda c: (c["config"], c.get("budget", 1))):
        b = c.get("budget", 1)
        cells = [f"`{c['config']}`", f"×{b}", str(c["updates"]), str(len(c["seeds"])),
                 _pm(c["summary"]["model"]["protocol/nrmse"]), _pm(c["summary"]["train_wall_s"], 4)]
        lines.append("| " + " | ".join(cells + ([f"{b * quiet_wall(report, c['config']):g}"] if quiet else []))
                     + " |")
    return lines


def budget_plot(report: dict, path: Path) -> None:
    """One PNG: test nRMSE (mean ± std over seeds) against training wall time, one line per config through its
    budgets; x = the measured training wall (mean ± std), or budget × the config's ``quiet_wall`` when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for spec in dict.fromkeys(c["config"] for c in report["configs"]):
        cs = sorted((c for c in report["configs"] if c["config"] == spec), key=lambda c: c.get("budget", 1))
        err = [c["summary"]["model"]["protocol/nrmse"] for c in cs]
        walls = [c["summary"]["train_wall_s"] for c in cs]
        quiet = quiet_wall(report, spec)
        x = [c.get("budget", 1) * quiet for c in cs] if quiet else [w["mean"] for w in walls]
        xerr = None if quiet else [w["std"] or 0.0 for w in walls]
        ax.errorbar(x, [e["mean"] for e in err], yerr=[e["std"] or 0.0 for e in err], xerr=xerr, marker="o",
                    capsize=3, label=f"{spec} (seeds: {', '.join(str(len(c['seeds'])) for c in cs)})")
        for xi, e, c in zip(x, err, cs):
            ax.annotate(f"×{c.get('budget', 1)}", (xi, e["mean"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    for r in report.get("solver", []):
        ax.axhline(r["nrmse"], color="grey", lw=0.8, ls=":")
        ax.annotate(f"solver, {r['cells']} cells", (ax.get_xlim()[0], r["nrmse"]), fontsize=7, color="grey",
                    textcoords="offset points", xytext=(2, 2))
    ax.set_xlabel("training wall time (s)" + (", nominal: budget × the 1× wall on a quiet machine"
                                               if report.get("quiet_wall_s") is not None else ", measured"))
    ax.set_ylabel(f"test nRMSE ({protocol_name(report)} protocol)")
    ax.set_title("test nRMSE against training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_markdown(report: dict) -> list[str]:
    lines = ["Error against training time (validation during training: val split, what selects the checkpoint; "
             "mean ± std over seeds):", "", "| method | stage | step | wall since stage start (s) | val metric |",
             "|---|---|---|---|---|"]
    for c in report["configs"]:
        for p in c["summary"]["val_curve"]:
            lines.append(f"| {label(c)} | {p['stage']} | {p['step']} | {_pm(p['elapsed_s'], 3)} | "
                         f"{p['metric']} {_pm(p['value'])} |")
    return lines


def quiet_walls(text: str | None, specs: Sequence[str]) -> dict[str, float] | None:
    """``--quiet-wall-s``: one positive number for every config, or one per config in ``--config`` order."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(v > 0 and math.isfinite(v) for v in values) or len(values) not in (1, len(specs)):
        raise UserError(f"--quiet-wall-s {text!r}: expected one positive number of seconds, or one per --config "
                        f"({len(specs)}), comma-separated (e.g. 513,522)")
    return dict(zip(specs, values * len(specs) if len(values) == 1 else values))


def _positive_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"{flag} {text!r}: expected comma-separated positive integers (e.g. 1,2,4)")
    return values


def main(argv: Sequence[str]) -> int:
    p = ArgumentParser(prog="benchmarks/accuracy.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="config spec (repeat for several)")
    p.add_argument("--seeds", type=int, required=True, help="train seeds 0..N-1")
    p.add_argument("--workdir-root", default="runs/accuracy", help="where the runs go (default runs/accuracy)")
    p.add_argument("--override", action="append", default=[], help="key.path=value for every config (repeat)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="evaluation split (default test)")
    p.add_argument("--out", help="output prefix for .json/.md (default WORKDIR_ROOT/accuracy)")
    p.add_argument("--budgets", default="1", help="comma-separated multiples of each config's updates, e.g. 1,2,4 "
                   "(steps, cadences and warm-up scaled; runs of budget B go to <config>_xB/); with more than one, "
                   "also PREFIX_budgets.png: test nRMSE against training wall time (default 1)")
    p.add_argument("--budget-seeds", type=int, help="seeds for the budgets other than 1 (default --seeds)")
    p.add_argument("--quiet-wall-s", help="the 1× budget's training wall time in seconds on a quiet machine: one "
                   "value for every config, or one per --config in order; the plot's x becomes budget × it instead "
                   "of the measured walls (use it when the runs were timed under load)")
    p.add_argument("--solver-cells", default=",".join(map(str, SOLVER_CELLS)),
                   help=f"coarse-solver rows: cells, comma-separated ('' = none; default "
                        f"{','.join(map(str, SOLVER_CELLS))})")
    args = p.parse_args(list(argv))
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1 (got {args.seeds})")
    budgets = _positive_ints(args.budgets, "--budgets")
    if budgets[0] != 1 or len(set(budgets)) != len(budgets):
        raise UserError(f"--budgets {args.budgets!r}: start with 1 and list each multiple once (e.g. 1,2,4)")
    budget_seeds = args.seeds if args.budget_seeds is None else args.budget_seeds
    if budget_seeds < 1:
        raise UserError(f"--budget-seeds must be >= 1 (got {budget_seeds})")
    quiet = quiet_walls(args.quiet_wall_s, args.config)
    cells = _positive_ints(args.solver_cells, "--solver-cells") if args.solver_cells.strip() else []
    overrides = [o.removeprefix("--config.") for o in args.override]
    for spec in args.config:                                     # every config and override checked before training
        _config_dict(spec, overrides, 0)
    root = Path(args.workdir_root)
    from solver_throughput import machine

    pairs = baseline_pairs(args.config, overrides)
    configs = []
    for b in budgets:
        done = {}
        for spec in sorted(args.config, key=lambda s: s in pairs):    # baselines first, then who uses them
            done[spec] = run_config(spec, overrides, args.seeds if b == 1 else budget_seeds, root, args.split,
                                    pairs.get(spec), b)
        configs += [done[spec] for spec in args.config]
    report = {"command": ["benchmarks/accuracy.py", *argv], "date": datetime.date.today().isoformat(),
              "machine": machine(), "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "configs": configs,
              "quiet_wall_s": quiet}
    report["solver"] = solver_rows(report, cells) if args.split == "test" else []
    md = markdown(report)
    prefix = str(args.out) if args.out else str(root / "accuracy")
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(prefix + ".json").write_text(json.dumps(report, indent=1))
    Path(prefix + ".md").write_text(md + "\n")
    print(md)
    written = [f"{prefix}.json", f"{prefix}.md"]
    if len(budgets) > 1:
        budget_plot(report, Path(prefix + "_budgets.png"))
        written.append(f"{prefix}_budgets.png")
    print(f"wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
