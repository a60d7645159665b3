"""Reads a run directory written by the trainer; shared by ``driver analyze`` and ``driver compare``.

The run directory is the source of truth for analysis (W&B is an optional secondary sink; see
jax-stack-notes §6). Layout (the trainer's contract)::

    WORKDIR/config.json              full config, nested dict (``stage_order``, ``stages.<name>.*``, ``model.*``, ...)
    WORKDIR/metrics.jsonl            one JSON object per line, each with "kind" and "time" (unix seconds);
                                     kinds: run_start, train, val, stage_end, eval, run_end
    WORKDIR/eval/<split>.json        evaluation results (model / persistence / full_horizon / optional ttc)
    WORKDIR/eval/<split>_samples.npz optional arrays true (n,T,X), pred (n,T,X), x (X,), t (T,)

A run killed mid-way is normal input: :func:`load_run` keeps whatever is readable and lists precisely what is
missing in ``Run.missing`` (unfinished stages, no evaluation, a truncated last line, ...). Only a directory that
cannot be a run at all raises :class:`~ups_jax.errors.UserError` (missing directory, no or empty
``metrics.jsonl``, an unreadable file, an invalid ``config.json``).

This fixes the original's analysis defects (ups-original.md §12 item 24): stage names are whatever the trainer
logged (no hard-coded "operator"/"diffusion" keys that disagree between sections), and evaluation numbers come
from the files the evaluator actually writes, not from W&B summary keys that were never logged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ups_jax.errors import UserError

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
EVAL_DIR = "eval"
COMPARISON_TABLE = "table.json"    # eval/table.py write_table: the comparison rows, beside <split>.json
KINDS = ("run_start", "train", "val", "stage_end", "eval", "run_end",
         "resume", "stage_skip", "preempted", "checkpoint_unreadable")   # the last four: events, not series


@dataclass
class Run:
    """Everything readable in one run directory.

    ``train``/``val`` hold one record per step and stage, sorted by step (when a resumed run logs a step twice,
    the later record wins). ``missing`` holds one sentence per missing or damaged part, ``warnings`` notes that do
    not mean data is missing (ignored records of unknown kind, resumes, unreadable sample files).
    """

    workdir: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]                      # every valid record, in file order
    run_starts: list[dict[str, Any]]
    run_end: dict[str, Any] | None
    train: dict[str, list[dict[str, Any]]]             # stage -> train records sorted by step
    val: dict[str, list[dict[str, Any]]]               # stage -> val records sorted by step
    stage_end: dict[str, dict[str, Any]]               # stage -> last stage_end record
    eval_records: dict[str, dict[str, Any]]            # split -> last eval record
    evals: dict[str, dict[str, Any]]                   # split -> parsed eval/<split>.json
    samples: dict[str, Path]                           # split -> eval/<split>_samples.npz
    stages: list[str]                                  # planned stages (run_start/config) + any others logged
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated_last_line: bool = False
    n_lines: int = 0

    @property
    def name(self) -> str:
        return self.workdir.name

    @property
    def run_start(self) -> dict[str, Any] | None:
        return self.run_starts[0] if self.run_starts else None

    @property
    def resumed(self) -> int:
        """How many times the run was restarted (extra run_start records)."""
        return max(0, len(self.run_starts) - 1)

    @property
    def finished(self) -> bool:
        return self.run_end is not None

    @property
    def complete(self) -> bool:
        return self.run_end is not None and not self.missing

    @property
    def eval_split(self) -> str:
        split = self.config.get("eval", {}).get("split") if isinstance(self.config.get("eval"), dict) else None
        return split if isinstance(split, str) and split else "test"

    def series(self, stage: str, key: str, kind: str = "train") -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` over ``kind`` records of ``stage``; records without the key are skipped."""
        recs = (self.train if kind == "train" else self.val).get(stage, [])
        steps, values = [], []
        for r in recs:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                steps.append(int(r["step"]))
                values.append(float(v))
        return steps, values

    def last_step(self, stage: str) -> int | None:
        steps = [int(r["step"]) for r in self.train.get(stage, []) + self.val.get(stage, [])]
        end = self.stage_end.get(stage)
        if end is not None and isinstance(end.get("step"), (int, float)):
            steps.append(int(end["step"]))
        return max(steps) if steps else None

    def planned_steps(self, stage: str) -> int | None:
        steps = self.config.get("stages", {}).get(stage, {}).get("steps") if isinstance(
            self.config.get("stages"), dict) else None
        return int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else None

    def eval_result(self, split: str | None = None) -> dict[str, Any] | None:
        """The parsed eval json of ``split`` (default: the configured split); falls back to the eval record's
        headline numbers when the json is missing (then only ``model.nrmse``/``persistence.nrmse`` are set)."""
        split = split or self.eval_split
        if split in self.evals:
            return self.evals[split]
        rec = self.eval_records.get(split)
        if rec is None:
            return None
        out: dict[str, Any] = {"split": split, "model": {}, "persistence": {}, "_from_record": True,
                               "conventions_version": rec.get("conventions_version")}
        for k, v in rec.items():
            head, _, metric = k.partition("/")
            if head in ("model", "persistence", "ttc") and metric:
                out.setdefault(head, {})[metric] = v
        return out

    def wall_time(self) -> tuple[float | None, bool]:
        """(seconds, exact): run_end.wall_s when the run finished, else last record time − first record time."""
        if self.run_end is not None and _num(self.run_end.get("wall_s")):
            return float(self.run_end["wall_s"]), True
        times = [float(r["time"]) for r in self.records if _num(r.get("time"))]
        if len(times) >= 2:
            return max(times) - min(times), False
        return None, False


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from e


def load_run(workdir: str | Path) -> Run:
    """Parses a run directory; raises UserError only when it cannot be analysed at all."""
    workdir = Path(workdir)
    if not workdir.exists():
        raise UserError(f"{workdir}: run directory not found")
    if not workdir.is_dir():
        raise UserError(f"{workdir}: not a directory (pass the run's workdir)")
    metrics_path = workdir / METRICS_FILE
    if not metrics_path.exists():
        raise UserError(f"{workdir}: no {METRICS_FILE} in it (not a run directory, or the trainer never started)")

    missing: list[str] = []
    warnings: list[str] = []

    # ---- config.json: written once at start; absent is reported, corrupt is an error ----
    config: dict[str, Any] = {}
    config_path = workdir / CONFIG_FILE
    if config_path.exists():
        text = _read_text(config_path)
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{config_path}: not valid JSON (line {e.lineno}: {e.msg})") from e
        if not isinstance(config, dict):
            raise UserError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    else:
        missing.append(f"{CONFIG_FILE} not found: configuration section and config diff unavailable")

    # ---- metrics.jsonl ----
    lines = _read_text(metrics_path).splitlines()
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise UserError(f"{metrics_path} contains no records; the run never started logging")
    records: list[dict[str, Any]] = []
    truncated = False
    unknown_kinds: dict[str, int] = {}
    for idx, (lineno, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if idx == len(numbered) - 1:
                truncated = True
                missing.append(f"last line of {METRICS_FILE} (line {lineno}) is truncated (ignored)")
            else:
                missing.append(f"{METRICS_FILE} line {lineno} is not valid JSON (ignored)")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            warnings.append(f"{METRICS_FILE} line {lineno} has no \"kind\" (ignored)")
            continue
        kind = rec["kind"]
        if kind not in KINDS:
            unknown_kinds[kind] = unknown_kinds.get(kind, 0) + 1
            continue
        if kind in ("train", "val", "stage_end") and (not isinstance(rec.get("stage"), str)
                                                       or not _num(rec.get("step"))):
            warnings.append(f"{METRICS_FILE} line {lineno}: {kind} record without \"stage\"/\"step\" (ignored)")
            continue
        rec["_line"] = lineno
        records.append(rec)
    if not records:
        raise UserError(f"{metrics_path} contains no records; the run never started logging"
                        f" ({len(numbered)} unreadable line(s))")
    for kind, n in sorted(unknown_kinds.items()):
        warnings.append(f"ignored {n} record(s) of unknown kind {kind!r}")

    run_starts = [r for r in records if r["kind"] == "run_start"]
    run_ends = [r for r in records if r["kind"] == "run_end"]
    if len(run_starts) > 1:
        warnings.append(f"the run was resumed {len(run_starts) - 1} time(s); repeated steps keep the latest record")

    train: dict[str, dict[int, dict]] = {}
    val: dict[str, dict[int, dict]] = {}
    stage_end: dict[str, dict] = {}
    eval_records: dict[str, dict] = {}
    seen_order: list[str] = []
    for r in records:
        kind = r["kind"]
        if kind in ("train", "val", "stage_end") and r["stage"] not in seen_order:
            seen_order.append(r["stage"])
        if kind == "train":
            train.setdefault(r["stage"], {})[int(r["step"])] = r
        elif kind == "val":
            val.setdefault(r["stage"], {})[int(r["step"])] = r
        elif kind == "stage_end":
            stage_end[r["stage"]] = r
        elif kind == "eval":
            eval_records[str(r.get("split") or "test")] = r

    planned: list[str] = []
    if run_starts and isinstance(run_starts[-1].get("stages"), list):
        planned = [str(s) for s in run_starts[-1]["stages"]]
    elif isinstance(config.get("stage_order"), list):
        planned = [str(s) for s in config["stage_order"]]
    stages = planned + [s for s in seen_order if s not in planned]

    run = Run(
        workdir=workdir, config=config, records=records, run_starts=run_starts,
        run_end=run_ends[-1] if run_ends else None,
        train={s: [d[k] for k in sorted(d)] for s, d in train.items()},
        val={s: [d[k] for k in sorted(d)] for s, d in val.items()},
        stage_end=stage_end, eval_records=eval_records, evals={}, samples={}, stages=stages,
        missing=missing, warnings=warnings, truncated_last_line=truncated, n_lines=len(lines),
    )

    if not run_starts:
        missing.append(f"no run_start record in {METRICS_FILE}: version, parameter counts and device unknown")

    # ---- stages: which never started, which stopped before stage_end ----
    for s in stages:
        if s in stage_end:
            continue
        last = run.last_step(s)
        if last is None:
            missing.append(f"stage {s!r} never started (no train/val records)")
        else:
            planned_steps = run.planned_steps(s)
            of = f" of {planned_steps}" if planned_steps else ""
            missing.append(f"stage {s!r} has no stage_end record: the run stopped at step {last}{of}")

    # ---- evaluation files ----
    _load_evals(run)

    if run.run_end is None:
        missing.append("no run_end record: the run did not finish (killed, crashed or still running)")
    return run


def _load_evals(run: Run) -> None:
    eval_dir = run.workdir / EVAL_DIR
    candidates: dict[str, Path] = {}
    if eval_dir.is_dir():
        for p in sorted(eval_dir.glob("*.json")):
            if p.name != COMPARISON_TABLE:        # the end-of-run comparison, not a split's evaluation
                candidates[p.stem] = p
    for split, rec in run.eval_records.items():
        file = rec.get("file")
        p = run.workdir / file if isinstance(file, str) and file else eval_dir / f"{split}.json"
        if p.exists():
            candidates.setdefault(split, p)
        elif split not in candidates:
            run.missing.append(f"eval record for split {split!r} points to {_rel(p, run.workdir)}, which is not "
                               "found (only its headline nRMSE numbers are available)")
    for split, p in candidates.items():
        text = _read_text(p)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            # A run killed while writing its evaluation: report it like the truncated metrics line.
            run.missing.append(f"{_rel(p, run.workdir)} is not valid JSON (line {e.lineno}: {e.msg}); ignored")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            run.missing.append(f"{_rel(p, run.workdir)} has no \"model\" metrics; ignored")
            continue
        run.evals[split] = data
        npz = eval_dir / f"{split}_samples.npz"
        if npz.exists():
            run.samples[split] = npz
    expected = run.eval_split
    if expected not in run.evals and expected not in run.eval_records:
        run.missing.append(f"no evaluation: {EVAL_DIR}/{expected}.json not found")


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------------------------
# Small statistics shared by analyze and compare.


def finite(values) -> list[float]:
    return [float(v) for v in values if _num(v)]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    vals = sorted(values)
    if not vals:
        return None
    pos = (len(vals) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def best_val(run: Run, stage: str) -> dict[str, Any] | None:
    """Best validation of a stage: {"metric", "value", "step", "n_evals", "last_value", "last_step",
    "stopped_early", "from_stage_end"}; ``None`` when the stage has no val records and no stage_end."""
    recs = run.val.get(stage, [])
    end = run.stage_end.get(stage)
    metric = None
    for r in recs:
        if isinstance(r.get("val_metric"), str):
            metric = r["val_metric"]
    if metric is None and end is not None and isinstance(end.get("val_metric"), str):
        metric = end["val_metric"]
    if metric is None and not recs:
        return None
    if metric is None:  # no val_metric field: take the first val/* key
        keys = [k for k in recs[0] if k.startswith("val/") and _num(recs[0][k])]
        metric = keys[0] if keys else None
    steps, values = run.series(stage, metric, kind="val") if metric else ([], [])
    pairs = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    out: dict[str, Any] = {"metric": metric, "value": None, "step": None, "n_evals": len(steps),
                           "last_value": values[-1] if values else None, "last_step": steps[-1] if steps else None,
                           "stopped_early": bool(end.get("stopped_early")) if end else None,
                           "from_stage_end": False, "history": list(zip(steps, values))}
    if pairs:
        s, v = min(pairs, key=lambda p: p[1])
        out.update(value=v, step=s)
    if end is not None and _num(end.get("best_val")):
        # The trainer's own choice (it may select on EMA params or a different subset) wins when present.
        out.update(value=float(end["best_val"]), step=end.get("best_step", out["step"]), from_stage_end=True)
    return out
