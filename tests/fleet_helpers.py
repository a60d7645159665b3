"""Experiment files for the fleet tests, written into a test's temporary directory.

They start from the real ``experiments/smoke.py`` (loaded by path) and change only what a test needs: data in
a temporary directory, a fake GPU share, and fault injection through Tune callbacks that run in the sweep's
driver (deterministic: they act on a given trial's report at a given global step, once, recorded in a marker
file so that a resumed driver does not act again).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)*\(\w+ pid=\d+")

_CALLBACKS = '''
import os
import signal
from pathlib import Path

from ray.tune import Callback


class _OnceAfterReport(Callback):
    """Acts once, after trial ``*_{trial}`` reported ``global_step == step``; the marker file records that it did
    (so that a resumed driver does not act again)."""

    def __init__(self, trial, step, marker):
        self.trial, self.step, self.marker = trial, step, marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id.endswith(self.trial) and result.get("global_step") == self.step \\
                and not Path(self.marker).exists():
            self.act(result)

    def act(self, result):
        raise NotImplementedError


class KillWorkerOnce(_OnceAfterReport):
    """SIGKILLs the reporting trial's worker process."""

    def act(self, result):
        Path(self.marker).write_text(str(result["pid"]))
        os.kill(result["pid"], signal.SIGKILL)


class InterruptDriverOnce(_OnceAfterReport):
    """Sends SIGINT (Ctrl+C) to the sweep's driver."""

    def act(self, result):
        Path(self.marker).write_text("interrupted")
        os.kill(os.getpid(), signal.SIGINT)
'''


def smoke_experiment(path: Path, *, data_dir: Path, kill_marker: Path) -> Path:
    """experiments/smoke.py with a fake half GPU per trial (A100 prices), temporary data, and the first trial's
    worker killed after its report at global step 6 (end of the codec stage)."""
    path.write_text(_CALLBACKS + f'''
import dataclasses

from ups_jax.fleet.experiment import load_experiment


def get_experiment():
    smoke = load_experiment({str(ROOT / "experiments" / "smoke.py")!r})
    return dataclasses.replace(
        smoke, overrides=[*smoke.overrides, "data.default_dir={data_dir}"],
        resources={{"cpu": 1, "gpu": 0.5}}, accelerator="A100", allow_cpu_fallback=True,
        callbacks=[KillWorkerOnce("_00000", 6, {str(kill_marker)!r})])
''')
    return path


def interrupt_experiment(path: Path, *, data_dir: Path, bad_data: str, interrupt_marker: Path) -> Path:
    """Two codec-only trials (cheap): one good, one whose data path does not exist (it raises). The driver is
    interrupted (SIGINT) after the good trial's report at global step 6 of 12."""
    good = str(data_dir / "1D_Burgers_Sols_Nu0.01.hdf5")
    path.write_text(_CALLBACKS + f'''
from ray import tune

from ups_jax.fleet import Experiment


def get_experiment():
    return Experiment(
        name="interrupted", config="configs/burgers32.py:test",
        overrides=["stage_order=codec", "stages.codec.steps=12", "data.default_dir={data_dir}"],
        search_space={{"data.paths": tune.grid_search([({good!r},), ({bad_data!r},)])}},
        metric="val/recon_nrmse", mode="min", resources={{"cpu": 1, "gpu": 0}}, max_failures=0,
        max_concurrent_trials=2, callbacks=[InterruptDriverOnce("_00000", 6, {str(interrupt_marker)!r})])
''')
    return path


def sigterm_experiment(path: Path, *, data_dir: Path) -> Path:
    """One cheap codec-only trial that may be retried once (the SIGTERM test)."""
    path.write_text(f'''
from ray import tune

from ups_jax.fleet import Experiment


def get_experiment():
    return Experiment(
        name="sigterm", config="configs/burgers32.py:test",
        overrides=["stage_order=codec", "stages.codec.steps=12", "data.default_dir={data_dir}"],
        search_space={{"seed": tune.grid_search([0])}}, metric="val/recon_nrmse", mode="min",
        resources={{"cpu": 1, "gpu": 0}}, max_failures=1)
''')
    return path


def run(args, env, timeout=900, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)


def fleet_cli(module: str, *args, env, timeout=900, cwd=None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", module, *args], env=env, timeout=timeout, cwd=cwd)


def trial_rows(experiment_dir: Path, trial_suffix: str) -> list[dict]:
    """The trial's reported results in order (Tune's result.json, one JSON object per report)."""
    [trial_dir] = [d for d in Path(experiment_dir).iterdir() if d.is_dir() and d.name.endswith(trial_suffix)]
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def one_line_error(proc: subprocess.CompletedProcess, *, ray_logs: bool = False) -> str:
    """The command's one-line 'error: ...', its last stderr line. Without ``ray_logs`` it must be the only line;
    with it, Ray's own log lines may precede it (a failed trial's traceback is Ray's report of that trial)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if ray_logs:   # a trial worker's forwarded log line, "(run_trial pid=N) ...", may arrive after the driver's error
        lines = [line for line in lines if not _RAY_WORKER_LINE.match(line)]
    assert proc.returncode != 0 and lines and lines[-1].startswith("error: "), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    if not ray_logs:
        assert len(lines) == 1, proc.stderr[-3000:]
    return lines[-1]


def environ(**extra) -> dict:
    return dict(os.environ, **extra)
