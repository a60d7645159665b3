"""The fleet against a real local Ray head (tests/conftest.py ``ray_head``: 127.0.0.1, 2 CPUs, 1 fake GPU).

Cost control: two sweeps are run once per module and shared by the tests that read them.

* ``smoke``: the README's flow. ``ray job submit`` of ``experiments/smoke.py`` (4 trials of ``:test`` under
  ASHA) with half a fake GPU per trial, and the first trial's worker SIGKILLed after its report at global step 6:
  the retry must resume from that checkpoint. Then ``fleet.pull`` and ``evaluate``.
* ``interrupted``: two cheap codec-only trials, one of which raises (its data path does not exist); the driver
  is interrupted (SIGINT) mid-sweep and ``--resume`` finishes the other trial from its checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fleet_helpers import (ROOT, fleet_cli, interrupt_experiment, one_line_error, run, sigterm_experiment,
                           smoke_experiment, trial_rows)


@pytest.fixture(scope="module")
def smoke(ray_head, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    exp = smoke_experiment(tmp / "smoke_test.py", data_dir=tmp / "data", kill_marker=tmp / "killed.pid")
    storage = tmp / "sweeps"
    proc = run([Path(sys.executable).parent / "ray", "job", "submit", "--address", ray_head["dashboard"], "--",
                "python", "-m", "ups_jax.fleet.sweep", "--experiment", exp, "--storage", storage],
               env=ray_head["env"], timeout=1500)
    summary_file = storage / "smoke" / "fleet_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    return {"proc": proc, "dir": storage / "smoke", "summary": summary, "tmp": tmp}


def _by_id(summary, suffix):
    [row] = [r for r in summary["trials"] if r["trial_id"].endswith(suffix)]
    return row


def test_smoke_sweep_via_ray_job_submit(smoke):
    proc, s = smoke["proc"], smoke["summary"]
    assert proc.returncode == 0 and s is not None, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "| total " in proc.stdout and "best: " in proc.stdout          # the table, in the job's log
    states = [r["state"] for r in s["trials"]]
    assert len(states) == 4 and set(states) <= {"done", "stopped early"}
    assert "done" in states
    # lr=1e-6 starts last (2 at a time) and reaches the first rung (global step 12) after >= 2 others: stopped
    last = _by_id(s, "_00003")
    assert last["config"] == {"stages.operator.lr": 1e-6}
    assert last["state"] == "stopped early" and last["global_step"] == 12
    for r in s["trials"]:                           # a trial's share = GPU-hours (time x 0.5 GPU) x the A100 price
        assert r["device_hours"] == pytest.approx(r["time_total_s"] * 0.5 / 3600)
        assert r["cost"] == pytest.approx(r["device_hours"] * 1.89)
    t = s["totals"]
    assert t["trial_cost"] == pytest.approx(sum(r["cost"] for r in s["trials"]))
    # the bill: the one (fake-GPU) node, whole, while any trial held it; no accelerator_type resource here, so
    # the experiment's accelerator prices it
    [node] = s["nodes"]["nodes"].values()
    assert node["accelerator"] == "A100" and node["gpus"] == 1 and node["price_per_hour"] == pytest.approx(1.89)
    assert t["cost"] == pytest.approx(node["busy_hours"] * 1.89)
    assert node["busy_hours"] * 3600 >= max(r["time_total_s"] for r in s["trials"]) - 2   # timestamps: 1 s
    assert t["cost"] >= t["trial_cost"] * 0.95       # two half-GPU trials at a time: the node costs at least both
    assert s["device"] == "GPU" and s["accelerator"] == "A100"


def test_killed_worker_resumes_from_its_checkpoint(smoke):
    """The worker dies right after reporting global step 6. Tune calls result callbacks before it registers that
    report's checkpoint, so the retry resumes from the one at step 3 -- mid-stage: optimizer, EMA, RNG and data
    order restored -- and must recompute step 6 exactly, then run to the end."""
    killed_pid = int((smoke["tmp"] / "killed.pid").read_text())
    assert _by_id(smoke["summary"], "_00000")["failures"] == 1
    rows = trial_rows(smoke["dir"], "_00000")
    before = [r for r in rows if r["pid"] == killed_pid]
    after = [r for r in rows if r["pid"] != killed_pid]
    assert [r["global_step"] for r in before] == [3, 6]
    assert [r["global_step"] for r in after] == [6, 12, 18, 24, 30]     # not from scratch (that would start at 3)
    assert after[0]["codec/val/recon_nrmse"] == before[1]["codec/val/recon_nrmse"]   # same step sequence
    assert after[0]["time_total_s"] > before[1]["time_total_s"]          # trial time accumulates over restarts


def test_trials_see_cpu_jax_with_the_gpu_share(smoke):
    row = trial_rows(smoke["dir"], "_00001")[0]
    assert row["worker/platform"] == "cpu"          # the fake GPU: allow_cpu_fallback=True in the test experiment
    assert row["worker/cuda_visible_devices"] == "0"  # Ray assigned the (fake) GPU
    from ups_jax.fleet.env import MEM_FRACTION_VARS, mem_fraction_var

    var = mem_fraction_var()                        # the installed jaxlib's name (renamed in jaxlib 0.12)
    assert row[f"worker/{var}"] == "0.4"            # 0.8 x the 0.5 share
    [other] = [v for v in MEM_FRACTION_VARS if v != var]
    assert other not in json.dumps(row)             # jaxlib 0.12 refuses both at once


def test_trials_share_one_copy_of_the_data(smoke):
    files = sorted((smoke["tmp"] / "data").rglob("*.hdf5"))
    assert [f.name for f in files] == ["1D_Burgers_Sols_Nu0.01.hdf5"]
    log = smoke["proc"].stdout + smoke["proc"].stderr
    assert log.count("generating the default dataset") == 1              # by the driver, before the trials


def test_status_prints_the_saved_table(smoke):
    proc = fleet_cli("ups_jax.fleet.status", "--experiment", smoke["dir"], env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == (smoke["dir"] / "fleet_summary.md").read_text()


def test_pull_best_then_evaluate_on_another_machine(smoke, tmp_path):
    s = smoke["summary"]
    best = min((r for r in s["trials"] if r["best"] is not None), key=lambda r: r["best"])
    dest = tmp_path / "best"
    proc = fleet_cli("ups_jax.fleet.pull", "--experiment", smoke["dir"], "--to", dest, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"pulled trial {best['trial_id']}" in proc.stdout
    pulled = json.loads((dest / "pulled.json").read_text())
    assert pulled["trial_id"] == best["trial_id"] and pulled["best"] == pytest.approx(best["best"])
    assert {p.name for p in (dest / "checkpoints").iterdir()} == {"codec", "operator"}
    # "another machine": the recorded data path does not exist there -> one line asking for --data
    meta = json.loads((dest / "run_meta.json").read_text())
    data_file = meta["data_paths"][0]
    meta["data_paths"] = ["/nonexistent/elsewhere/1D_Burgers_Sols_Nu0.01.hdf5"]
    (dest / "run_meta.json").write_text(json.dumps(meta))
    proc = fleet_cli("ups_jax.evaluate", "--workdir", dest, env=_env())
    err = one_line_error(proc)
    assert proc.returncode == 2 and "is not on this machine (trained on host" in err and "pass --data" in err
    assert not (dest / "eval").exists()
    proc = fleet_cli("ups_jax.evaluate", "--workdir", dest, "--data", data_file, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((dest / "eval" / "test.json").read_text())
    assert result["n_trajectories"] == 4 and result["model"]["nrmse"] > 0


def test_pull_refuses_a_non_empty_target_and_unknown_trial(smoke, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    proc = fleet_cli("ups_jax.fleet.pull", "--experiment", smoke["dir"], "--to", tmp_path, env=_env())
    assert "exists and is not empty; pull into a new directory" in one_line_error(proc)
    assert (tmp_path / "keep.txt").read_text() == "x"
    proc = fleet_cli("ups_jax.fleet.pull", "--experiment", smoke["dir"], "--trial", "nope", "--to",
                     tmp_path / "new", env=_env())
    assert "--trial nope: no trial matches; trials: " in one_line_error(proc)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------- interrupted and failed
@pytest.fixture(scope="module")
def interrupted(ray_head, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupted")
    exp = interrupt_experiment(tmp / "interrupt_test.py", data_dir=tmp / "data", bad_data="/nonexistent/x.hdf5",
                               interrupt_marker=tmp / "interrupted")
    storage = tmp / "sweeps"
    args = ["--experiment", exp, "--storage", storage, "--address", ray_head["address"]]
    first = fleet_cli("ups_jax.fleet.sweep", *args, env=ray_head["env"])
    pull = fleet_cli("ups_jax.fleet.pull", "--experiment", storage / "interrupted", "--to", tmp / "pulled",
                     env=ray_head["env"])
    second = fleet_cli("ups_jax.fleet.sweep", *args, "--resume", env=ray_head["env"])
    return {"first": first, "pull": pull, "second": second, "dir": storage / "interrupted", "tmp": tmp}


def test_interrupted_sweep_exits_130_and_says_resume(interrupted):
    err = one_line_error(interrupted["first"], ray_logs=True)
    assert interrupted["first"].returncode == 130, interrupted["first"].stderr[-3000:]
    assert "sweep interrupted with" in err and "continue with --resume" in err


def test_pull_with_no_finished_trial(interrupted):
    err = one_line_error(interrupted["pull"])
    assert interrupted["pull"].returncode == 2
    assert "no finished trial with a finite val/recon_nrmse yet" in err and "--trial ID" in err
    assert not (interrupted["tmp"] / "pulled").exists()


def test_resume_finishes_from_checkpoints_and_reports_the_failed_trial(interrupted):
    proc = interrupted["second"]
    err = one_line_error(proc, ray_logs=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert err.startswith("error: 1 of 2 trial(s) failed; ") and "_00001 (" in err
    assert "ConfigError: [data] files exist: data.paths not found: /nonexistent/x.hdf5" in err
    assert "error.txt); fix the cause and rerun the errored trials with --resume" in err
    rows = trial_rows(interrupted["dir"], "_00000")
    first_pid = rows[0]["pid"]
    before = [r for r in rows if r["pid"] == first_pid]
    after = [r for r in rows if r["pid"] != first_pid]
    # interrupted right after reporting step 6, before Tune registered that checkpoint: resumed from step 3's
    assert [r["global_step"] for r in before] == [3, 6] and [r["global_step"] for r in after] == [6, 9, 12]
    assert after[0]["codec/val/recon_nrmse"] == before[1]["codec/val/recon_nrmse"]   # same step sequence
    summary = json.loads((interrupted["dir"] / "fleet_summary.json").read_text())
    assert [r["state"] for r in summary["trials"]] == ["done", "error"]
    assert summary["trials"][1]["failures"] == 2       # failed in the first run, and again after --resume


# ---------------------------------------------------------------------------------------------- SIGTERM
def test_sigterm_to_a_trial_worker_checkpoints_and_the_trial_resumes_there(ray_head, tmp_path):
    """The trial's worker process gets SIGTERM after its 5th update (sent by the process to itself from the
    training thread through the loop's fault hook, UPS_JAX_TEST_FAULT, set for this job only). Tune trains in a
    thread, so the signal reaches the loop only through the handler the trial installed on the main thread: the
    loop checkpoints at the step it is at, reports it, and the retry resumes from exactly that step."""
    exp = sigterm_experiment(tmp_path / "sigterm_test.py", data_dir=tmp_path / "data")
    storage = tmp_path / "sweeps"
    runtime_env = json.dumps({"env_vars": {"UPS_JAX_TEST_FAULT": "codec:5:TERM"}})
    proc = run([Path(sys.executable).parent / "ray", "job", "submit", "--address", ray_head["dashboard"],
                "--runtime-env-json", runtime_env, "--", "python", "-m", "ups_jax.fleet.sweep", "--experiment", exp,
                "--storage", storage], env=ray_head["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((storage / "sigterm" / "fleet_summary.json").read_text())
    assert [(r["state"], r["failures"]) for r in summary["trials"]] == [("done", 1)]
    rows = trial_rows(storage / "sigterm", "_00000")
    first_pid = rows[0]["pid"]
    before = [r for r in rows if r["pid"] == first_pid]
    after = [r for r in rows if r["pid"] != first_pid]
    [trial_dir] = [d for d in (storage / "sigterm").iterdir() if d.name.startswith("trial_")]
    # the first attempt ended with the loop's Preempted, naming the step it was at (the signal is handled on the
    # main thread while the training thread runs on: that step is 5 or a little later)
    import re

    [stopped_at] = [int(m) for m in re.findall(r"Preempted: SIGTERM at stage codec step (\d+): checkpoint \S+/codec/"
                                               r"\1 is complete", (trial_dir / "error.txt").read_text())]
    assert 5 <= stopped_at < 12
    newest = max(trial_dir.glob("checkpoint_*"), key=lambda d: int(d.name.split("_")[-1]))
    log = [json.loads(line) for line in (newest / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "resume"] == [stopped_at]   # the retry started there
    last_reported = max(r.get("global_step", r.get("checkpoint_step")) for r in before)
    assert last_reported == stopped_at                             # that checkpoint had been reported to Tune
    if stopped_at % 3:                                             # off the eval grid: a 'preempt' report
        assert before[-1]["checkpoint_kind"] == "preempt" and "global_step" not in before[-1]
    assert [r["global_step"] for r in after] == [s for s in (6, 9, 12) if s > stopped_at]


# ---------------------------------------------------------------------------------------- long-run actor
def test_actor_restarts_after_its_process_is_killed_and_resumes(ray_head, tmp_path, monkeypatch):
    import os
    import signal

    import ray

    from ups_jax.config import load_config
    from ups_jax.fleet.actor import start_trainer

    for k, v in ray_head["env"].items():
        monkeypatch.setenv(k, v)
    cfg = load_config(f"{ROOT}/configs/burgers32.py:test", ["stage_order=codec", f"data.default_dir={tmp_path}"])
    ray.init(address=ray_head["address"], log_to_driver=False)
    try:
        trainer = start_trainer(cfg, tmp_path / "run", cpus=1, max_restarts=1)
        first = ray.get(trainer.fit.remote(max_steps=3), timeout=600)
        assert first["stages"]["codec"]["steps_done"] == 3 and first["test"] is None
        os.kill(first["pid"], signal.SIGKILL)           # the actor's process dies (node loss, OOM kill)
        second = ray.get(trainer.fit.remote(max_steps=5), timeout=600)   # (stops before the test evaluation)
    finally:
        ray.shutdown()
    assert second["pid"] != first["pid"]                 # restarted actor
    assert second["stages"]["codec"]["steps_done"] == 5
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "resume"] == [3]


def _env():
    import os

    return dict(os.environ, JAX_PLATFORMS="cpu")

