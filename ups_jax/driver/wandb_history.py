"""``driver analyze --wandb``: fetch a run's W&B history and merge the train/val records metrics.jsonl lacks."""

from __future__ import annotations

from typing import Any

from ups_jax.driver import runlog
from ups_jax.driver.runlog import Run
from ups_jax.errors import UserError


TRAIN_FIELDS = {"loss", "grad_norm", "lr", "steps_per_sec", "samples_per_sec", "step_time_ms"}


def fetch_wandb_history(spec: str) -> list[dict[str, Any]]:
    parts = spec.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"--wandb {spec!r}: expected ENTITY/PROJECT/RUN_ID")
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb: the wandb package is not installed (pip install wandb)") from None
    try:
        api = wandb.Api(timeout=30)
        return [dict(r) for r in api.run("/".join(parts)).scan_history()]
    except Exception as e:  # offline, no key, unknown run: all the user's environment, one line
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"--wandb {spec}: cannot fetch the run from W&B ({type(e).__name__}: {reason}); check the "
                        "network and the API key (wandb login / WANDB_API_KEY), or analyse without --wandb") from None


def merge_wandb(run: Run, rows: list[dict[str, Any]]) -> int:
    """Adds train/val records from W&B history rows for (stage, step) pairs absent from metrics.jsonl.

    Understood row layouts: records logged verbatim (``kind``/``stage``/``step`` keys), or per-stage keys
    ``<stage>/<field>`` / ``train/<stage>/<field>`` (``<stage>/val/...`` for validation) with the step in
    ``<stage>/step``, ``step`` or W&B's ``_step``. Only stages the run plans are mapped.
    """
    added = 0
    known = set(run.stages)

    def add(kind: str, stage: str, rec: dict[str, Any]) -> None:
        nonlocal added
        table = run.train if kind == "train" else run.val
        recs = table.setdefault(stage, [])
        if any(r["step"] == rec["step"] for r in recs):
            return
        recs.append(rec)
        recs.sort(key=lambda r: r["step"])
        added += 1

    for row in rows:
        if row.get("kind") in ("train", "val") and isinstance(row.get("stage"), str) and runlog._num(row.get("step")):
            rec = {k: v for k, v in row.items() if not k.startswith("_")}
            rec["step"] = int(rec["step"])
            add(row["kind"], row["stage"], rec)
            continue
        per: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in row.items():
            parts = key.split("/")
            if parts[0] == "train" and len(parts) >= 3:
                parts = parts[1:]
            if len(parts) < 2 or parts[0] not in known or not runlog._num(value):
                continue
            stage, fld = parts[0], "/".join(parts[1:])
            if fld.startswith("val/"):
                per.setdefault(("val", stage), {})[fld] = value
            elif fld in TRAIN_FIELDS or fld.startswith("loss/"):
                per.setdefault(("train", stage), {})[fld] = value
        for (kind, stage), fields in per.items():
            step = row.get(f"{stage}/step", row.get("step", row.get("_step")))
            if not runlog._num(step):
                continue
            add(kind, stage, {"kind": kind, "stage": stage, "step": int(step), "_source": "wandb", **fields})
    return added
