"""Fleet pieces that need no Ray cluster: paths, the worker JAX environment, experiment files and their errors,
the cost table, storage locations, the cluster YAMLs (Ray's own offline validation), the Docker files, secrets,
and the core package working without ray/wandb installed."""

from __future__ import annotations

import copy
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet_helpers import ROOT
from ups_jax.errors import ConfigError, UserError, run_cli

EXPERIMENTS = sorted((ROOT / "experiments").glob("*.py"))
CLUSTERS = sorted((ROOT / "ray_cluster").glob("*.yaml"))


# ------------------------------------------------------------------------------------------------ paths
def test_config_and_default_data_resolve_from_any_directory(tmp_path, monkeypatch):
    from ups_jax.config import load_config
    from ups_jax.data.default import default_data_path
    from ups_jax.paths import project_root

    monkeypatch.chdir(tmp_path)                   # a Ray trial's working directory, say
    cfg = load_config("configs/burgers32.py:test")  # not here: found in the project
    assert project_root() == ROOT
    assert default_data_path(cfg) == ROOT / "data" / "burgers_test" / "1D_Burgers_Sols_Nu0.01.hdf5"
    monkeypatch.setenv("UPS_JAX_ROOT", str(tmp_path / "elsewhere"))
    assert default_data_path(cfg) == tmp_path / "elsewhere" / "data" / "burgers_test" / "1D_Burgers_Sols_Nu0.01.hdf5"
    (tmp_path / "configs").mkdir()                # a file in the current directory wins over the project's
    (tmp_path / "configs" / "burgers32.py").write_text((ROOT / "configs" / "burgers32.py").read_text()
                                                       .replace("cfg.seed = 0", "cfg.seed = 7"))
    assert load_config("configs/burgers32.py:test").seed == 7


def test_missing_config_names_the_path_as_typed(tmp_path, monkeypatch):
    from ups_jax.config import load_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^configs/nope\.py: config file not found"):
        load_config("configs/nope.py")


def test_set_value_type_checks_like_an_override():
    from ups_jax.config import load_config, set_value

    cfg = load_config(f"{ROOT}/configs/burgers32.py:test")
    set_value(cfg, "stages.operator.lr", 1)                      # int into a float field: allowed, stays float
    assert cfg.stages.operator.lr == 1.0 and isinstance(cfg.stages.operator.lr, float)
    set_value(cfg, "model.operator.depths", [2, 2, 2])           # lists from Tune become the field's tuple
    assert cfg.model.operator.depths == (2, 2, 2)
    with pytest.raises(ConfigError, match=r"^exp\.py: stages\.operator\.steps=1\.5: .*cannot be casted"):
        set_value(cfg, "stages.operator.steps", 1.5, source="exp.py")
    with pytest.raises(ConfigError, match=r"unknown config key 'stages\.operator\.lrr' \(did you mean "
                                          r"'stages\.operator\.lr'\?\)"):
        set_value(cfg, "stages.operator.lrr", 1.0, source="exp.py")
    with pytest.raises(ConfigError, match=r"'stages\.operator' is a config section"):
        set_value(cfg, "stages.operator", 1.0, source="exp.py")


# ------------------------------------------------------------------------------------ worker environment
def test_jax_env_from_the_gpu_share():
    from ups_jax.fleet.env import jax_env

    assert jax_env(0, environ={}) == {"JAX_PLATFORMS": "cpu"}     # Ray 2.60 leaves CUDA_VISIBLE_DEVICES set
    assert jax_env(0, environ={"JAX_PLATFORMS": "cuda"}) == {}    # the user's choice stands
    assert jax_env(0.5, environ={}, jaxlib_version="0.12.0.1") == {"XLA_CLIENT_MEM_FRACTION": "0.4"}
    assert jax_env(0.25, environ={}, jaxlib_version="0.11.0") == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2"}
    # jaxlib 0.12 raises when both names are set: never add one when the other is there
    assert jax_env(0.5, environ={"XLA_PYTHON_CLIENT_MEM_FRACTION": ".3"}, jaxlib_version="0.12.0") == {}
    assert jax_env(1, environ={}) == {} and jax_env(2, environ={}) == {}
    with pytest.raises(ValueError):
        jax_env(-1, environ={})


def test_jaxlib_reads_the_variable_we_set(monkeypatch):
    """The installed jaxlib's GPU plugin options (built without a GPU) take the fraction from the variable
    jax_env() sets: a wrong name (jaxlib < 0.12 reads only XLA_PYTHON_CLIENT_MEM_FRACTION) leaves it unset."""
    from jaxlib import xla_client

    from ups_jax.fleet.env import MEM_FRACTION_VARS, jax_env

    for var in MEM_FRACTION_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in jax_env(0.5, environ={}).items():
        monkeypatch.setenv(var, value)
    assert xla_client.generate_pjrt_gpu_plugin_options()["memory_fraction"] == pytest.approx(0.4)


# ----------------------------------------------------------------------------------------- experiments
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_files_validate(path):
    from ups_jax.fleet import experiment as ex

    exp = ex.load_experiment(str(path))
    cfg = exp.base_config()
    ex.validate(exp, cfg)
    assert Path(cfg.data.default_dir).is_absolute()
    opts = ex.scheduler_options(exp, cfg)
    assert opts is None or opts["grace_period"] >= ex.first_rung(cfg)


def test_smoke_time_axis_and_rungs():
    """ASHA's time is the global step: codec 6 + operator 24 = 30; the first rung is the operator's first
    validation (6 + 6), so no rung ever compares a codec metric."""
    from ups_jax.fleet import experiment as ex

    exp = ex.load_experiment("experiments/smoke.py")
    cfg = exp.base_config()
    assert ex.stage_offsets(cfg) == {"codec": 0, "operator": 6}
    assert ex.total_steps(cfg) == 30 and ex.first_rung(cfg) == 12
    assert ex.scheduler_options(exp, cfg) == {"grace_period": 12, "max_t": 30, "reduction_factor": 2}
    assert exp.search_space["stages.operator.lr"]["grid_search"][-1] == 1e-6   # the one ASHA stops


def test_reporter_result_metric_and_global_step():
    """Earlier stages report the sweep metric as NaN (a reconstruction error is not a rollout error); their own
    validation metric goes under '<stage>/'; the time attribute is offset by the earlier stages' steps."""
    from ups_jax.config import load_config
    from ups_jax.fleet.trainable import TuneReporter

    cfg = load_config(f"{ROOT}/configs/burgers32.py:test", ["stage_order=codec,operator"])
    rep = TuneReporter(cfg, "val/nrmse", Path("/unused"), {"platform": "cpu"})
    codec = rep.result({"stage": "codec", "step": 3, "finished": False, "val_metric": "val/recon_nrmse",
                        "metrics": {"val/recon_nrmse": 0.5}, "dir": "x"})
    assert math.isnan(codec["val/nrmse"]) and codec["global_step"] == 3 and codec["codec/val/recon_nrmse"] == 0.5
    op = rep.result({"stage": "operator", "step": 6, "finished": True, "val_metric": "val/nrmse",
                     "metrics": {"val/nrmse": 0.25, "val/persistence_nrmse": 0.5}, "dir": "x"})
    assert op["val/nrmse"] == 0.25 and op["global_step"] == 12 and op["stage_finished"] is True
    assert op["worker/platform"] == "cpu"
    wrong = TuneReporter(cfg, "val/recon_nrmse", Path("/unused"), {})
    with pytest.raises(ConfigError, match="last stage 'operator' validates with 'val/nrmse'"):
        wrong.result({"stage": "operator", "step": 6, "finished": True, "val_metric": "val/nrmse",
                      "metrics": {"val/nrmse": 0.25}, "dir": "x"})


def test_step_axis_counts_optimizer_updates():
    """With gradient accumulation a stage's ``steps`` are still optimizer updates: the fleet's axis is the
    trainer's (training.pipeline.stage_offsets), so rungs and max_t land where the trials report."""
    from ups_jax.config import load_config
    from ups_jax.fleet import experiment as ex
    from ups_jax.training import pipeline

    cfg = load_config(f"{ROOT}/configs/burgers32.py:test", ["stage_order=codec,operator", "stages.codec.steps=6",
                                                             "stages.codec.accum_steps=4", "stages.operator.steps=24",
                                                             "stages.operator.accum_steps=2",
                                                             "stages.operator.eval_every=6"])
    assert ex.stage_offsets(cfg) == pipeline.stage_offsets(cfg) == {"codec": 0, "operator": 6}
    assert ex.total_steps(cfg) == 30 and ex.first_rung(cfg) == 12
    rep = TuneReporterFor(cfg)
    end = rep.result({"stage": "operator", "step": 24, "finished": True, "val_metric": "val/nrmse", "kind": "end",
                      "metrics": {"val/nrmse": 0.5}, "dir": "x"})
    assert end["global_step"] == ex.total_steps(cfg)            # a finished trial reaches max_t ("done")


def TuneReporterFor(cfg, metric="val/nrmse"):
    from ups_jax.fleet.trainable import TuneReporter

    return TuneReporter(cfg, metric, Path("/unused"), {})


def test_checkpoint_without_validation_is_not_on_asha_time_axis():
    """A time-based or preemption checkpoint has no validation: reported without ``global_step`` (ASHA skips a
    result without its time attribute), so it cannot take the trial's place on a rung with NaN."""
    from ray.tune.schedulers import ASHAScheduler

    from ups_jax.config import load_config

    cfg = load_config(f"{ROOT}/configs/burgers32.py:test", ["stage_order=codec,operator"])
    rep = TuneReporterFor(cfg)
    point = rep.result({"stage": "operator", "step": 7, "finished": False, "val_metric": "val/nrmse",
                        "kind": "preempt", "metrics": {}, "dir": "x"})
    assert "global_step" not in point and point["checkpoint_step"] == 13 and math.isnan(point["val/nrmse"])
    assert point["checkpoint_kind"] == "preempt"
    asha = ASHAScheduler(time_attr="global_step", metric="val/nrmse", mode="min", grace_period=12, max_t=30)

    class Trial:
        trial_id = "t0"

    assert asha.on_trial_result(None, Trial(), point) == "CONTINUE"
    assert all(not rung for _, rung in asha._brackets[0]._rungs)       # nothing recorded
    # after a validation, such a report carries that value (a NaN after finite values would reset Tune's min)
    rep.result({"stage": "operator", "step": 9, "finished": False, "val_metric": "val/nrmse", "kind": "eval",
                "metrics": {"val/nrmse": 0.25}, "dir": "x"})
    later = rep.result({"stage": "operator", "step": 10, "finished": False, "val_metric": "val/nrmse",
                        "kind": "resume_point", "metrics": {}, "dir": "x"})
    assert later["val/nrmse"] == 0.25 and "global_step" not in later


def test_restored_reporter_starts_from_the_runs_last_validation(tmp_path):
    import json

    from ups_jax.config import load_config
    from ups_jax.fleet.trainable import TuneReporter

    cfg = load_config(f"{ROOT}/configs/burgers32.py:test", ["stage_order=codec,operator"])
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "val", "stage": "codec", "step": 3, "val/recon_nrmse": 0.9},
        {"kind": "val", "stage": "operator", "step": 3, "val/nrmse": 0.5},
        {"kind": "val", "stage": "operator", "step": 6, "val/nrmse": 0.4}]) + "\n")
    assert TuneReporter(cfg, "val/nrmse", tmp_path, {}).last_value == 0.4
    assert math.isnan(TuneReporter(cfg, "val/nrmse", tmp_path / "fresh", {}).last_value)


def test_stage_metric_from_the_stage_table(tmp_path):
    """Every stage of the table has a metric; a sweep whose last stage is ``steady`` ranks by val/final_nrmse."""
    import dataclasses

    from ups_jax.fleet import experiment as ex
    from ups_jax.training.stages import KINDS

    assert {n: ex.stage_val_metric(n) for n in KINDS} == {
        "codec": "val/recon_nrmse", "operator": "val/nrmse", "fno": "val/nrmse", "hybrid": "val/nrmse",
        "corrector": "val/nrmse",
        "student": "val/nrmse", "steady": "val/final_nrmse"}
    smoke = ex.load_experiment(str(ROOT / "experiments" / "smoke.py"))
    steady = dataclasses.replace(smoke, overrides=[*smoke.overrides, "stage_order=codec,operator,steady"],
                                 metric="val/final_nrmse")
    ex.validate(steady, steady.base_config())
    with pytest.raises(ConfigError, match="the last stage 'steady' reports 'val/final_nrmse'"):
        ex.validate(dataclasses.replace(steady, metric="val/nrmse"), steady.base_config())
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        ex.stage_val_metric("nope")


def test_train_resolves_relative_data_paths_here(tmp_path, monkeypatch):
    """The actor runs in a Ray worker's directory: a relative --config.data.paths is made absolute first."""
    from ups_jax.fleet.train import run_config

    monkeypatch.chdir(tmp_path)
    cfg = run_config(f"{ROOT}/configs/burgers32.py:test", ["data.paths=rel/x.hdf5,/abs/y.hdf5"])
    assert cfg.data.paths == (str(tmp_path / "rel" / "x.hdf5"), "/abs/y.hdf5")


def test_sigterm_request_reaches_training_in_another_thread():
    """The process-wide handler (installed on the main thread, as a Tune trial's setup does) turns SIGTERM into
    a request that a training loop in any thread sees; entering training there does not clear it."""
    import signal
    import threading

    from ups_jax.training import preemption

    preemption.clear()
    previous = preemption.handle_sigterm()
    try:
        os.kill(os.getpid(), signal.SIGTERM)          # the process survives: the handler records the request
        seen = []

        def trial_thread():
            with preemption.sigterm_checkpoints():     # what train_and_evaluate does first
                seen.append(preemption.requested())

        t = threading.Thread(target=trial_thread)
        t.start()
        t.join()
        assert seen == ["SIGTERM"]
    finally:
        signal.signal(signal.SIGTERM, previous)
        preemption.clear()
    with pytest.raises(ValueError):                   # Python's rule: handlers are installed on the main thread
        err = []
        t = threading.Thread(target=lambda: err.append(_catch(preemption.handle_sigterm)))
        t.start()
        t.join()
        raise err[0]


def _catch(fn):
    try:
        fn()
    except Exception as e:  # handed back to the test's thread
        return e
    return AssertionError("no error")


BAD_EXPERIMENTS = [
    ("search_space={}", "search_space is empty; define e.g. search_space="),
    ("metric=''", "no metric; set metric='val/nrmse' (the last stage's validation metric)"),
    ("metric='val/recon_nrmse'", "the last stage 'operator' reports 'val/nrmse'"),
    ("search_space={'stages.operator.lrr': tune.choice([1e-3])}",
     "unknown config key 'stages.operator.lrr' (did you mean 'stages.operator.lr'?)"),
    ("search_space={'stages.operator.steps': tune.grid_search([10, 2.5])}",
     "stages.operator.steps=2.5: Could not override field"),
    ("scheduler={'type': 'asha', 'grace_period': 3}",
     "grace_period=3 falls before the last stage's first validation (global step 12)"),
    ("accelerator='V100'", "accelerator='V100' has no price in cfg.cost.price_per_hour (A100, H100, H200); pick one of those"),
    ("resources={'cpu': 1, 'tpu': 1}", "resources={'cpu': 1, 'tpu': 1}: use {'cpu': N > 0, 'gpu': G >= 0}"),
]


@pytest.mark.parametrize("change,message", BAD_EXPERIMENTS, ids=[c for c, _ in BAD_EXPERIMENTS])
def test_bad_experiment_is_one_line_error(tmp_path, capsys, change, message):
    from ups_jax.fleet import sweep

    exp = tmp_path / "bad.py"
    exp.write_text(f"""
import dataclasses
from ray import tune
from ups_jax.fleet.experiment import load_experiment

def get_experiment():
    return dataclasses.replace(load_experiment({str(ROOT / 'experiments' / 'smoke.py')!r}), {change})
""")
    storage = tmp_path / "sweeps"
    assert run_cli(sweep.main, ["--experiment", str(exp), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {exp}: ") and message in err and "\n" not in err, err
    assert not storage.exists()                   # nothing started, nothing written


def test_experiment_file_without_get_experiment(tmp_path, capsys):
    from ups_jax.fleet import sweep

    (tmp_path / "x.py").write_text("search_space = {}\n")
    assert run_cli(sweep.main, ["--experiment", str(tmp_path / "x.py")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'x.py'}: has no get_experiment() function "
                                               f"returning ups_jax.fleet.Experiment(...)")
    assert run_cli(sweep.main, ["--experiment", "experiments/nope.py"]) == 2
    assert "experiments/nope.py: experiment file not found" in capsys.readouterr().err


def test_unreachable_address_fails_fast(tmp_path, capsys):
    from conftest import _free_port
    from ups_jax.fleet import sweep

    port = _free_port()                            # nothing listens there
    argv = ["--experiment", "experiments/smoke.py", "--storage", str(tmp_path / "s"), "--address"]
    assert run_cli(sweep.main, argv + [f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --address 127.0.0.1:{port}: no Ray cluster reachable there (Connection refused); check "
                   f"the head's address (ray status on the head), or omit --address to run locally")
    assert run_cli(sweep.main, argv + ["http://127.0.0.1:8265"]) == 2
    assert "that is the dashboard/jobs address" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_stale_cluster_address_fails_fast(tmp_path, capsys, monkeypatch):
    """A dead cluster's address left in RAY_ADDRESS (or /tmp/ray/ray_current_cluster, which `auto` reads) is an
    error within seconds, not minutes of Ray retrying."""
    from conftest import _free_port
    from ups_jax.fleet import sweep

    stale = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", stale)
    argv = ["--experiment", "experiments/smoke.py", "--storage", str(tmp_path / "s")]
    assert run_cli(sweep.main, argv + ["--address", "auto"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --address auto ({stale}): no Ray cluster reachable there")
    assert run_cli(sweep.main, argv) == 2                   # inside a job whose cluster is gone
    assert capsys.readouterr().err.startswith(f"error: --address {stale}: no Ray cluster reachable there")


def test_resume_without_state_and_existing_name(tmp_path, capsys):
    from ups_jax.fleet import sweep

    argv = ["--experiment", "experiments/smoke.py", "--storage", str(tmp_path)]
    assert run_cli(sweep.main, argv + ["--resume"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path}/smoke: no sweep state to resume there; run "
                                               f"without --resume to start it")
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "keep.txt").write_text("x")
    assert run_cli(sweep.main, argv) == 2
    assert "a sweep named 'smoke' already exists there; continue it with --resume" in capsys.readouterr().err
    assert (tmp_path / "smoke" / "keep.txt").read_text() == "x"


def _started_sweep(tmp_path, exp_file):
    """A sweep directory as `fleet.sweep` leaves it after starting (its record + Tune's state file)."""
    import json

    from ups_jax.fleet import experiment as ex

    exp = ex.load_experiment(str(exp_file))
    path = tmp_path / "sweeps" / exp.name
    path.mkdir(parents=True)
    (path / "tuner.pkl").write_bytes(b"")            # what Tuner.can_restore looks for
    (path / "fleet_experiment.json").write_text(json.dumps(ex.describe(exp, exp.base_config()), indent=1))
    return path


def test_resume_refuses_an_edited_experiment(tmp_path, capsys):
    """--resume continues the sweep as it was started: an edited experiment file is one line, nothing written."""
    from ups_jax.fleet import sweep

    exp_file = tmp_path / "exp.py"
    exp_file.write_text((ROOT / "experiments" / "smoke.py").read_text())
    path = _started_sweep(tmp_path, exp_file)
    record = (path / "fleet_experiment.json").read_text()
    exp_file.write_text(exp_file.read_text().replace('metric="val/nrmse"', 'metric="val/nrmse", num_samples=9'))
    assert "num_samples=9" in exp_file.read_text()
    argv = ["--experiment", str(exp_file), "--storage", str(tmp_path / "sweeps"), "--resume"]
    assert run_cli(sweep.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {exp_file}: changed since the sweep in {path} started (num_samples differ); --resume "
                   f"continues the sweep as it was started: restore the file (the started version is recorded in "
                   f"{path}/fleet_experiment.json), or start a new sweep with --name NEW (nothing was changed)")
    assert (path / "fleet_experiment.json").read_text() == record


def test_damaged_experiment_record_is_one_line(tmp_path, capsys):
    from ups_jax.fleet import status, sweep

    path = _started_sweep(tmp_path, ROOT / "experiments" / "smoke.py")
    (path / "fleet_experiment.json").write_text('{"name": "smo')               # truncated
    assert run_cli(status.main, ["--experiment", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}/fleet_experiment.json: the sweep's experiment record is damaged (")
    assert "\n" not in err
    argv = ["--experiment", "experiments/smoke.py", "--storage", str(tmp_path / "sweeps"), "--resume"]
    assert run_cli(sweep.main, argv) == 2
    assert "the sweep's experiment record is damaged" in capsys.readouterr().err


def test_storage_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails leaves the previous file whole and no temporary file behind."""
    from ups_jax.fleet import storage

    target = tmp_path / "fleet_summary.json"
    storage.write_text(str(target), "old")
    assert target.read_text() == "old"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(storage.StorageError, match="No space left on device"):
        storage.write_text(str(target), "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["fleet_summary.json"]


# ------------------------------------------------------------------------------------ table and storage
def test_cost_table_known_answer():
    from ups_jax.fleet import summary as sm

    rows = [dict(trial_id="a_00000", status="TERMINATED", failures=0, config={"stages.operator.lr": 0.003},
                 best=0.5, best_step=12, global_step=30, time_total_s=3600.0, hostname="h", error=None),
            dict(trial_id="a_00001", status="TERMINATED", failures=1, config={"stages.operator.lr": 1e-6},
                 best=0.9, best_step=12, global_step=12, time_total_s=1800.0, hostname="h", error=None),
            dict(trial_id="a_00002", status="ERROR", failures=2, config={"stages.operator.lr": 1.0},
                 best=None, best_step=None, global_step=None, time_total_s=720.0, hostname="h",
                 error="FloatingPointError: loss became nan")]
    s = sm.summarize(rows, metric="val/nrmse", total_steps=30, gpus=0.5, cpus=1, accelerator="A100",
                     price_per_hour=1.89)
    hours = [r["device_hours"] for r in s["trials"]]
    assert hours == pytest.approx([0.5, 0.25, 0.1])                     # time x 0.5 GPU
    assert [r["cost"] for r in s["trials"]] == pytest.approx([0.945, 0.4725, 0.189])
    assert [r["state"] for r in s["trials"]] == ["done", "stopped early", "error"]
    assert s["totals"]["cost"] == pytest.approx(1.6065) and s["totals"]["retries"] == 3
    table = sm.format_table(s)
    assert "GPU-h (A100)" in table and "| total " in table and "1 done, 1 error, 1 stopped early" in table
    assert "error: FloatingPointError: loss became nan" in table
    cpu = sm.summarize(rows, metric="val/nrmse", total_steps=30, gpus=0, cpus=2, accelerator=None,
                       price_per_hour=None)
    assert cpu["trials"][0]["device_hours"] == pytest.approx(2.0) and cpu["totals"]["cost"] is None


def test_storage_locations():
    from ups_jax.fleet import storage
    from ups_jax.fleet.experiment import resolve_storage

    assert storage.join("s3://b/sweeps?endpoint_override=h:9&scheme=http", "smoke") == \
        "s3://b/sweeps/smoke?endpoint_override=h:9&scheme=http"
    assert storage.join("gs://b/x/", "smoke", "f.json") == "gs://b/x/smoke/f.json"
    assert storage.join("/a/b", "c") == "/a/b/c"
    assert resolve_storage("gs://bucket/sweeps", from_cli=True) == "gs://bucket/sweeps"   # handed to Ray as is
    assert resolve_storage("runs/sweeps", from_cli=False) == str(ROOT / "runs" / "sweeps")
    assert resolve_storage("out", from_cli=True) == str(Path.cwd() / "out")


# ------------------------------------------------------------------------------------------- clusters
@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_cluster_yaml_validates_with_rays_own_checks(path):
    """What `ray up` runs before touching a cloud: prepare_config (defaults, node types) + validate_config
    (Ray's JSON schema). No cloud SDK is called."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head                  # reached through `ray dashboard` (ssh tunnel)
    setup = " ".join(cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", []))
    assert 'jax[cuda12]' in setup and "-e \".[fleet" in setup   # this project + CUDA JAX on the nodes
    if cfg["provider"]["type"] != "local":
        types = cfg["available_node_types"]
        assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
        workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
        assert workers and all(t["resources"]["GPU"] >= 1 for t in workers)
        for t in workers:                                       # spot / preemptible GPU workers
            nc = t["node_config"]
            assert nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or \
                nc.get("scheduling", {}).get("preemptible") is True
            # Ray gives its default role / service account to the head only: workers name their own
            assert nc.get("IamInstanceProfile", {}).get("Name") == "ups-jax-worker" or \
                nc["serviceAccounts"][0]["email"].startswith("ups-jax-worker@")
        if cfg["provider"]["type"] == "gcp":                   # an image family Google publishes (with its OS)
            images = {d["initializeParams"]["sourceImage"] for t in types.values() for d in t["node_config"]["disks"]}
            assert images == {"projects/deeplearning-platform-release/global/images/family/"
                              "common-cu128-ubuntu-2204-nvidia-570"}
    # reproducible and idempotent: pinned uv, a venv that may exist already (uv >= 0.10 refuses otherwise)
    assert re.search(r'pip install --user -q "uv==\d+\.\d+\.\d+"', setup)
    assert "uv venv -q --allow-existing" in setup
    for cmd in cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", []):
        for extra in re.findall(r'constraints\.txt (.*)', cmd):       # packages beyond the pinned project
            for req in shlex.split(extra):
                assert req in ("-e", ".[fleet,wandb]") or req.startswith("jax[") or "==" in req, (path.name, req)


def test_cluster_yaml_typo_is_rejected():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "ray_cluster" / "aws-gpu.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["node_confg"] = cfg["available_node_types"]["gpu_worker"].pop(
        "node_config")
    with pytest.raises(Exception, match="node_confg"):
        validate_config(prepare_config(cfg))


SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{30,}", r"\"private_key\"\s*:\s*\"-----",
    r"(?i)wandb_api_key\s*[=:]\s*['\"]?[0-9a-f]{40}", r"ghp_[A-Za-z0-9]{36}", r"xox[bap]-[A-Za-z0-9-]{10,}",
    r"(?i)(password|passwd|secret|token)\s*[=:]\s*['\"][^'\"\s]{8,}['\"]",
]


def test_no_secret_like_value_in_committed_files():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of committed files")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "ray_cluster/aws-gpu.yaml" in files and "ups_jax/fleet/sweep.py" in files
    hits = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{name}: {m.group(0)[:40]}" for pat in SECRET_PATTERNS for m in re.finditer(pat, text)]
    assert not hits, hits


# --------------------------------------------------------------------------------------------- docker
def test_dockerfile_and_compose():
    """No Docker engine here: check the files for what the image must have (see docs/fleet.md)."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\S+$", text, re.M) and "FROM ${CUDA_IMAGE}" in lines
    assert "rsync" in text and 'jax[$JAX_EXTRA]' in text and "ARG JAX_EXTRA=cuda12" in lines
    assert '".[fleet,wandb]"' in text and "-c constraints.txt" in text                  # ray==2.60.0 pinned there
    assert "ray==2.60.0" in (ROOT / "constraints.txt").read_text()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # the health check imports only: it never starts a JAX backend (a second process on the trainer's GPU)
    i = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    health = lines[i] + " " + lines[i + 1]
    assert 'JAX_PLATFORMS=cpu python -c "import ups_jax, jax, ray"' in health
    assert "devices(" not in health and "jnp" not in health
    # cache-friendly: dependencies are installed before the package source is copied
    copy_src = next(i for i, line in enumerate(lines) if line.startswith("COPY ups_jax ./ups_jax"))
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install"))
    assert install < copy_src
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "runs", ".git"} <= set(ignore)
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
        assert "WANDB_API_KEY" in svc["environment"], name        # passed through from the host, no value here
        assert any(v.endswith(":/app/runs") for v in svc["volumes"]), name


# ------------------------------------------------------------------------------------------- packaging
def test_ray_and_wandb_are_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "ray" not in core and "wandb" not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("ray[default,tune]") for d in extras["fleet"])
    assert any(d.startswith("wandb") for d in extras["wandb"])
    assert any(d.startswith("moto[server]") for d in extras["test"])
    assert "fleet,wandb,test" in (ROOT / "Makefile").read_text()


BLOCK = ("import sys, runpy; sys.modules['ray'] = None; sys.modules['wandb'] = None; "
         "sys.argv = {argv!r}; runpy.run_module({module!r}, run_name='__main__')")


def _without_ray(module: str, *args: str) -> subprocess.CompletedProcess:
    code = BLOCK.format(argv=[module, *args], module=module)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_core_works_without_ray_and_wandb():
    """`import ray` / `import wandb` fail in these processes: the package and the non-fleet CLIs still work."""
    code = ("import sys; sys.modules['ray'] = None; sys.modules['wandb'] = None\n"
            "import ups_jax, ups_jax.fleet, ups_jax.train, ups_jax.evaluate, ups_jax.training.pipeline\n"
            "import ups_jax.driver.validate, ups_jax.driver.analyze\n"
            "from ups_jax.training.logging import RunLogger\n"
            "print('ok', [m for m in sys.modules if m.split('.')[0] in ('ray', 'wandb') and sys.modules[m]])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok []", out.stderr
    for module in ("ups_jax.train", "ups_jax.evaluate", "ups_jax.driver"):
        proc = _without_ray(module, "--help")
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (module, proc.stderr[-2000:])
    proc = _without_ray("ups_jax.fleet.sweep", "--experiment", "experiments/smoke.py")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: Ray is not installed; pip install 'ups_jax[fleet]' (ray[default,tune]==2.60)"


def test_console_scripts_are_declared():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    import importlib

    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    assert sorted(scripts) == ["ups-evaluate", "ups-fleet-status", "ups-infer", "ups-pull", "ups-sweep", "ups-train"]


# ------------------------------------------------------------------------------------------- the docs
def _doc_commands() -> list[list[str]]:
    """Command lines of the ```bash blocks in docs/fleet.md and the README's fleet section."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    fleet_section = readme[readme.index("## Fleet (Ray)"):]
    fleet_section = fleet_section[:fleet_section.index("\n## ", 5)]
    out = []
    for text in ((ROOT / "docs" / "fleet.md").read_text(), fleet_section):
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            out += [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    return [c for c in out if c]


def _help_key(cmd: list[str]) -> tuple[str, ...]:
    if cmd[0] == "python":
        sub = [cmd[3]] if cmd[2] == "ups_jax.driver" else []
        return ("python", "-m", cmd[2], *sub)
    if cmd[0] == "ray":
        return ("ray", *[w for w in cmd[1:3] if not w.startswith("-") and w in ("job", "up", "down", "dashboard",
                                                                                 "exec", "start", "stop", "submit",
                                                                                 "logs", "list")])
    return (cmd[0],)


def test_fleet_doc_commands_use_real_flags_and_files():
    """Every command of docs/fleet.md and the README's fleet section names files that exist and flags its
    program accepts (from the program's own --help). The local flow itself is run by tests/test_fleet_ray.py;
    cloud and docker commands cannot run here (see docs/fleet.md, 'What is tested')."""
    commands = _doc_commands()
    assert len(commands) >= 15
    helps: dict[tuple, set] = {}
    for cmd in commands:
        assert cmd[0] in ("python", "ray", "docker"), cmd
        for token in cmd:
            if re.fullmatch(r"(configs|experiments|ray_cluster|docker)/[\w./-]+\.(py|yaml|yml)(:\w+)?", token):
                assert (ROOT / token.split(":")[0]).is_file(), (token, cmd)
        if cmd[0] == "docker":
            continue
        key = _help_key(cmd)
        if key not in helps:
            text = _python_help(key[2:]) if key[0] == "python" else _ray_flags(key[1:])
            helps[key] = set(re.findall(r"--[\w.-]*\w", text))
        argv = cmd[:cmd.index("--")] if "--" in cmd else cmd     # `ray job submit ... -- python ...`
        takes_config = key[0] == "python" and _module_takes_config(key[2])
        for flag in (t.split("=")[0] for t in argv if t.startswith("--")):
            if takes_config and (flag == "--config" or flag.startswith("--config.")):
                continue                                            # parsed by ups_jax.config.split_config_args
            assert flag in helps[key], (flag, cmd)
        if "--" in cmd:                                             # the submitted entrypoint: check it too
            inner = cmd[cmd.index("--") + 1:]
            commands.append(inner)


def _module_takes_config(module: str) -> bool:
    import importlib.util

    origin = Path(importlib.util.find_spec(module).origin)
    files = [origin] + (list(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [])
    return any("split_config_args(" in f.read_text() for f in files)


def _python_help(module_and_args) -> str:
    """``python -m MODULE [SUB] --help``, in this process (argparse prints and exits)."""
    import contextlib
    import importlib
    import io

    module, *sub = module_and_args
    mod = importlib.import_module(module + ".__main__" if module == "ups_jax.driver" else module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        mod.main([*sub, "--help"])
    assert stop.value.code in (0, None), module_and_args
    return out.getvalue()


def _ray_flags(words) -> str:
    """The options of ``ray WORD [WORD]`` from Ray's click command tree (no subprocess)."""
    from ray.scripts.scripts import cli

    cmd = cli
    for w in words:
        cmd = cmd.commands[w]
    return " ".join(o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", []))


# ------------------------------------------------------------------------------------------------ data
def test_data_staged_once_fetched_by_content(tmp_path, monkeypatch):
    """Driver: each file hashed and uploaded once to <experiment>/data/<sha256>/<name>; trial: fetched into the
    node-local cache and checked against the hash; a changed copy or a resume on other data is refused."""
    import hashlib

    from ups_jax.fleet import datasets

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    src = tmp_path / "local" / "burgers.hdf5"
    src.parent.mkdir()
    src.write_bytes(b"trajectories" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    bucket = tmp_path / "bucket" / "sweep"                     # a storage location (a local path stands in)
    [entry] = datasets.stage([str(src.parent)], str(bucket), upload=True)
    staged = bucket / "data" / digest / "burgers.hdf5"
    assert entry == {"name": "burgers.hdf5", "sha256": digest, "uri": str(staged), "path": str(src)}
    assert staged.read_bytes() == src.read_bytes()
    mtime = staged.stat().st_mtime_ns
    datasets.stage([str(src)], str(bucket), upload=True)       # already there under its hash: not uploaded again
    assert staged.stat().st_mtime_ns == mtime
    [local] = datasets.fetch([entry])
    assert local == str(tmp_path / "cache" / digest / "burgers.hdf5") and Path(local).read_bytes() == src.read_bytes()

    run = tmp_path / "run"
    datasets.check_resume(run, [entry])                         # records the hashes in the run directory
    other = dict(entry, sha256="0" * 64)
    with pytest.raises(ConfigError, match=r"run/fleet_data\.json: this trial was trained on other data "):
        datasets.check_resume(run, [other])

    (tmp_path / "cache").rename(tmp_path / "old_cache")         # another node: empty cache
    staged.write_bytes(b"edited")
    with pytest.raises(ConfigError, match="content differs from the sweep's"):
        datasets.fetch([entry])
    assert not (tmp_path / "cache" / digest).exists()           # nothing half-written left in the cache
    with pytest.raises(UserError, match=r"data .*missing\.hdf5: not found; check the URI"):
        datasets.download(str(tmp_path / "missing.hdf5"), None)
    src.write_bytes(b"changed locally")                         # local (NFS) data edited after the start
    with pytest.raises(ConfigError, match="its content changed after the sweep started"):
        datasets.fetch([dict(entry, uri=None)])


def test_node_cost_charges_whole_nodes_while_busy():
    """Two half-GPU trials overlap on node a (1 x A10G) for part of their time, one trial on node b (2 x A100):
    node a is billed for the union of its trials' time, whole; the GPU type comes from the reports."""
    from ups_jax.fleet import cost

    def rep(pid, node, t, dt, acc, gpus):
        return {"pid": pid, "timestamp": t, "time_this_iter_s": dt, "worker/node_id": node,
                "worker/accelerator_type": acc, "worker/node_gpus": gpus}

    trials = {
        "t0": [rep(1, "a", 1800, 1800, "A10G", 1), rep(1, "a", 3600, 1800, "A10G", 1)],      # 0 .. 1 h on a
        "t1": [rep(2, "a", 5400, 3600, "A10G", 1)],                                          # 0.5 .. 1.5 h on a
        "t2": [rep(3, "b", 3600, 1800, "A100", 2), rep(4, "b", 9000, 1800, None, 2)],        # 0.5..1 h, 2..2.5 h
    }
    table = cost.node_table(trials, {"A10G": 1.0, "A100": 2.0}, fallback_accelerator="A100")
    a, b = table["nodes"]["a"], table["nodes"]["b"]
    assert a["busy_hours"] == pytest.approx(1.5) and a["price_per_hour"] == 1.0 and a["cost"] == pytest.approx(1.5)
    assert b["busy_hours"] == pytest.approx(1.0) and b["price_per_hour"] == 4.0 and b["cost"] == pytest.approx(4.0)
    assert table["cost"] == pytest.approx(5.5) and table["wall_hours"] == pytest.approx(2.5)
    unpriced = cost.node_table({"t": [rep(1, "c", 3600, 3600, "L4", 1)]}, {"A100": 2.0}, None)
    assert unpriced["cost"] is None and unpriced["unpriced_nodes"] == ["c"]

    stop = cost.BudgetStopper(5.0, {"A10G": 1.0, "A100": 2.0}, None)
    for tid, results in trials.items():
        flags = [stop(tid, r) for r in results]
    assert flags[-1] is True and stop.stop_all() and stop.spent() == pytest.approx(5.5)
    import pickle

    assert pickle.loads(pickle.dumps(stop)).spent() == pytest.approx(5.5)   # Tune saves it with the run config
    assert not cost.BudgetStopper(5.0, {}, None, spent_before=1.0).stop_all()


def test_trial_snapshot_carries_wandb_id_and_data_record(tmp_path):
    """A restored trial continues its W&B run (wandb.json) and is checked against its data (fleet_data.json)."""
    from ups_jax.fleet.trainable import restore_run, snapshot_run

    run = tmp_path / "run"
    (run / "checkpoints" / "codec" / "3").mkdir(parents=True)
    for name in ("config.json", "run_meta.json", "metrics.jsonl", "fleet_data.json", "wandb.json"):
        (run / name).write_text(name)
    (run / "wandb").mkdir()                                     # the live W&B directory stays behind
    snap = snapshot_run(run, tmp_path / "snap")
    assert sorted(p.name for p in snap.iterdir()) == ["checkpoints", "config.json", "fleet_data.json",
                                                      "metrics.jsonl", "run_meta.json", "wandb.json"]
    restore_run(snap, tmp_path / "restored")
    assert (tmp_path / "restored" / "wandb.json").read_text() == "wandb.json"


def test_budget_bad_or_already_spent_is_one_line(tmp_path, capsys, monkeypatch):
    from ups_jax.fleet import sweep

    argv = ["--experiment", "experiments/smoke.py", "--storage", str(tmp_path / "sweeps")]
    assert run_cli(sweep.main, argv + ["--budget-usd", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --budget-usd 0: give a positive amount in US dollars"
    path = _started_sweep(tmp_path, ROOT / "experiments" / "smoke.py")
    record = (path / "fleet_experiment.json").read_text()
    monkeypatch.setattr(sweep, "_spent", lambda p: 12.5)        # what status reports for the sweep's nodes
    assert run_cli(sweep.main, argv + ["--resume", "--budget-usd", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --budget-usd 10: this sweep's nodes already cost $12.50 (python -m ups_jax.fleet.status "
                   f"--experiment {path}); raise the budget to continue (nothing was changed)")
    assert (path / "fleet_experiment.json").read_text() == record
