"""A Ray Tune trial = one call of the staged trainer ``train_and_evaluate`` (there is no second training loop).

Each trial trains in a scratch run directory on its worker. After every checkpoint the loop has fully written
(the ``on_checkpoint`` hook runs after orbax's ``wait_until_finished``), the trial reports its metrics together
with a snapshot of the run directory (``config.json``, ``run_meta.json``, ``metrics.jsonl``, ``checkpoints/``:
every stage, because resuming the operator stage needs the finished codec) to ``tune.report``, which copies it
to the sweep's storage before returning. A restarted trial (failure retry, lost node, ``--resume``) copies
``tune.get_checkpoint()`` back into a fresh scratch directory and calls ``train_and_evaluate`` again, which
resumes with the same step sequence.

Preemption: Tune runs the function in a thread of the trial's worker process, where Python cannot install a
signal handler. ``PreemptibleTrial`` (Tune's ``__mixins__`` hook: it becomes a base of the trainable class Tune
makes from :func:`run_trial`) installs one in ``setup``, which Ray runs on the worker's main thread: a SIGTERM
to the worker process (a spot reclaim, ``ray stop``, Kubernetes) then asks the training loop, which polls
``preemption.requested()`` every update, to checkpoint the current step and report it (kind 'preempt'); the
trial then fails with ``errors.Preempted`` and Tune's retry (``max_failures``) resumes from that checkpoint.

Reports of checkpoints without a validation (kinds 'resume_point', 'preempt', 'interrupted') carry no
``global_step`` (their step is ``checkpoint_step``): ASHA ignores a result without its time attribute, so such a
report can never take a trial's place on a rung. Their sweep metric is the last stage's latest validation value
(NaN before the first): Tune's per-trial min/max (``ResultGrid.get_best_result(scope='all')``) would be reset by a
NaN reported after finite values.

A trial stops after the last stage's final checkpoint: selection uses validation only, and the chosen run is
evaluated on the test split after ``fleet.pull`` (``python -m ups_jax.evaluate``), not inside every trial.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from ups_jax.errors import ConfigError

# wandb.json: the run's W&B id (training.logging), so that a restored trial continues its W&B run
RUN_FILES = ("config.json", "run_meta.json", "metrics.jsonl", "fleet_data.json", "wandb.json")
VALIDATED_KINDS = ("eval", "end")          # loop.run_stage's checkpoint kinds that carry a validation


class _LastStageDone(Exception):
    """Raised from the hook after the final report: skips the test evaluation inside the trial."""


def snapshot_run(workdir: Path, dest: Path) -> Path:
    """Copies what resuming and evaluating need (not ``eval/`` or a live ``wandb/`` directory)."""
    dest.mkdir(parents=True, exist_ok=False)
    for name in RUN_FILES:
        if (workdir / name).is_file():
            shutil.copy2(workdir / name, dest / name)
    shutil.copytree(workdir / "checkpoints", dest / "checkpoints")
    return dest


def restore_run(src: Path, workdir: Path) -> None:
    """Fills an empty scratch ``workdir`` with a reported snapshot."""
    shutil.copytree(src, workdir, dirs_exist_ok=True)


class TuneReporter:
    """The ``on_checkpoint`` hook of a trial: one ``tune.report`` per validation round, with the run snapshot."""

    def __init__(self, cfg, metric: str, workdir: Path, worker: dict):
        from ups_jax.fleet.experiment import stage_offsets

        self.offsets = stage_offsets(cfg)
        self.last = cfg.stage_order[-1]
        self.metric = metric
        self.workdir = workdir
        self.worker = worker
        self.last_value = _last_validation(workdir, self.last, metric)   # a restored run's, else NaN

    def result(self, info: dict) -> dict:
        stage, metrics = info["stage"], info["metrics"]
        if stage == self.last and info["val_metric"] != self.metric:
            raise ConfigError(f"the last stage '{stage}' validates with '{info['val_metric']}' but the sweep's metric "
                              f"is '{self.metric}'; set metric='{info['val_metric']}' in the experiment")
        validated = info.get("kind", "eval") in VALIDATED_KINDS
        if stage == self.last and validated:
            self.last_value = float(metrics.get(self.metric, math.nan))
        value = self.last_value if stage == self.last else math.nan
        step = self.offsets[stage] + int(info["step"])
        return {self.metric: value, ("global_step" if validated else "checkpoint_step"): step,
                "checkpoint_kind": info.get("kind", "eval"), "stage": stage,
                "stage_step": int(info["step"]), "stage_finished": bool(info["finished"]),
                **{f"{stage}/{k}": float(v) for k, v in metrics.items()},
                **{f"worker/{k}": v for k, v in self.worker.items()}}

    def __call__(self, info: dict) -> None:
        from ray import tune

        result = self.result(info)
        with tempfile.TemporaryDirectory(prefix="report_", dir=self.workdir.parent) as tmp:
            snap = snapshot_run(self.workdir, Path(tmp) / "run")
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(snap)))
        if info["stage"] == self.last and info["finished"]:
            raise _LastStageDone


class PreemptibleTrial:
    """Mixin of the trial's trainable class: SIGTERM to the worker process checkpoints the trial (see above)."""

    def setup(self, config, *args, **kwargs):
        import threading

        from ups_jax.training import preemption

        preemption.clear()                               # a fresh trial in this process: no stale request
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = preemption.handle_sigterm()
        else:   # Ray ran the actor's task elsewhere (a threaded actor): SIGTERM keeps Ray's meaning
            import logging

            logging.getLogger(__name__).warning("trial setup off the main thread: SIGTERM will not checkpoint")
        super().setup(config, *args, **kwargs)

    def cleanup(self):
        import signal

        try:
            super().cleanup()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)


def _last_validation(workdir: Path, stage: str, metric: str) -> float:
    """The last validation value of ``metric`` in the run's log (a restored trial), NaN if there is none."""
    import json

    value = math.nan
    log = workdir / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get("kind") == "val" and rec.get("stage") == stage and metric in rec:
                value = float(rec[metric])
    return value


def run_trial(config: dict, base: dict | None = None, spec: dict | None = None) -> None:
    """Tune function trainable. ``config``: the sampled ``{'a.b': value}``; ``base``: the base config dict;
    ``spec``: {'metric', 'gpus', 'allow_cpu_fallback'} (bound with ``tune.with_parameters``)."""
    from ups_jax.fleet import datasets
    from ups_jax.fleet.cost import node_resources
    from ups_jax.fleet.env import code_version, configure_jax, worker_info

    configure_jax(spec["gpus"])                     # before anything starts a JAX backend
    import ray
    from ray import tune

    from ups_jax.fleet.experiment import trial_config
    from ups_jax.training.pipeline import train_and_evaluate

    cfg = trial_config(base, config, source=f"trial {tune.get_context().get_trial_id()}")
    if spec.get("sweep"):                          # W&B: the sweep's trials form one group (read by wandb.init)
        os.environ.setdefault("WANDB_RUN_GROUP", spec["sweep"])
    worker = {**worker_info(), **node_resources(), **code_version()}
    entries = spec.get("data")
    if entries and list(cfg.data.paths) != list(spec.get("data_for", [])):
        entries = None                             # this trial searches over data.paths: its own paths stand
    if entries:                                    # staged by the driver: fetched into this node's cache, by hash
        cfg.data.paths = tuple(datasets.fetch(entries))
    if spec["gpus"] > 0 and worker["platform"] != "gpu" and not spec["allow_cpu_fallback"]:
        raise RuntimeError(f"this trial holds {spec['gpus']} GPU(s) but JAX sees only {worker['platform']} devices "
                           f"(CUDA_VISIBLE_DEVICES={worker['cuda_visible_devices']!r}, JAX_PLATFORMS="
                           f"{os.environ.get('JAX_PLATFORMS', '')!r}); install jax[cuda12] on the workers or set "
                           f"resources gpu=0")
    scratch = Path(tempfile.mkdtemp(prefix="ups_trial_", dir=_scratch_root()))
    workdir = scratch / tune.get_context().get_trial_name()    # the run's name (W&B) is the trial's
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                restore_run(Path(d), workdir)
        if entries:
            datasets.check_resume(workdir, entries)   # a restored trial continues on the data it trained on
        reporter = TuneReporter(cfg, spec["metric"], workdir, worker)
        try:
            train_and_evaluate(cfg, workdir, on_checkpoint=reporter)
        except _LastStageDone:
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch_root() -> str | None:
    """Ray's per-trial working directory (the trial's cwd unless RAY_CHDIR_TO_TRIAL_DIR=0), else the temp dir."""
    return os.getcwd() if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0" else None


run_trial.__mixins__ = (PreemptibleTrial,)    # read by ray.tune's wrap_function (kept by tune.with_parameters)
