"""Reliability (issue 10): exact resume after SIGKILL, SIGTERM preemption, a damaged newest checkpoint, the NaN
guard, the optimizer state as a pytree, cadences under accumulation, interval-mean losses, W&B run id and steps,
bf16 compute, 2-device data parallel, and the package's hygiene (no import cycle, no global side effects on import,
--help). The malformed-input corpus is tests/test_malformed_input.py.

Cost (2 CPU cores): loop-level tests drive ``run_stage`` on the codec stage of :test (one compiled step shared
with tests/test_training.py through the session's compilation cache); the kill/preempt test runs the real command
four times in subprocesses against the session's finished reference run (``trained_run`` in conftest.py).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from test_training import CONFIG, LOOP, ROOT, _StageHarness, _assert_trees_equal, _cfg, _records, _restore_items, \
    _snapshot, _steps_on_disk

from ups_jax.errors import CheckpointError, Preempted, TrainingDiverged
from ups_jax.training import preemption
from ups_jax.training.faults import FAULT_ENV
from ups_jax.training.loop import LoopOptions, param_dict


def _env(**extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop(FAULT_ENV, None)
    env.update(extra)
    return env


def _train(workdir, data, fault=None, timeout=600) -> subprocess.CompletedProcess:
    env = _env(**({FAULT_ENV: fault} if fault else {}))
    return subprocess.run([sys.executable, "-m", "ups_jax.train", "--config", f"{CONFIG}:test", "--workdir",
                           str(workdir), "--data", str(data)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _assert_same_final_run(ref, wd, cfg, ref_results) -> None:
    """Every stage's final weights bitwise equal, the same RNG / loader / best step, and the same test nRMSE."""
    for stage in cfg.stage_order:
        a, b = _final_items(ref, cfg, stage), _final_items(wd, cfg, stage)
        _assert_trees_equal(a["params"], b["params"])                  # bitwise
        _assert_trees_equal(a["ema"], b["ema"])
        for key in ("rng", "loader", "best_step", "best_val", "finished"):
            assert a["state"][key] == b["state"][key], (stage, key)
    got = json.loads((wd / "eval" / "test.json").read_text())
    assert got["model"]["nrmse"] == ref_results["eval"]["model"]["nrmse"]


def _final_items(workdir, cfg, stage):
    return _restore_items(workdir, stage, int(cfg.stages[stage].steps), ("params", "ema", "state"))


# ------------------------------------------------------------------------------------- 1+2. kill, preempt, resume
def test_sigkill_and_sigterm_at_chosen_steps_resume_bitwise(trained_run, tmp_path, burgers_file):
    """The real command, killed three times (SIGKILL between checkpoints, SIGTERM, SIGKILL while the final
    checkpoint is being written) and re-run: every stage ends bitwise equal to the uninterrupted run."""
    ref, cfg, ref_results = trained_run
    wd = tmp_path / "w"
    p = _train(wd, burgers_file, "codec:4:KILL")
    assert p.returncode == -signal.SIGKILL, p.stderr
    p = _train(wd, burgers_file, "operator:2:TERM")
    assert p.returncode == 75, p.stderr
    last = [line for line in p.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("preempted: SIGTERM at stage operator step 2: checkpoint ") and "resume" in last
    assert "Traceback" not in p.stderr
    assert _steps_on_disk(wd, "operator")[-1] == 2                     # the checkpoint at the current step
    assert _restore_items(wd, "operator", 2, ("state",))["state"]["step"] == 2
    p = _train(wd, burgers_file, f"operator:{cfg.stages.operator.steps}:KILL@save")
    assert p.returncode == -signal.SIGKILL, p.stderr
    p = _train(wd, burgers_file)
    assert p.returncode == 0, p.stderr

    _assert_same_final_run(ref, wd, cfg, ref_results)
    kinds = [(r["kind"], r.get("stage")) for r in _records(wd)]
    assert ("preempted", "operator") in kinds and ("resume", "operator") in kinds
    assert not list((wd / "checkpoints").rglob("*orbax-checkpoint-tmp*"))   # the killed save was cleaned up


def test_preemption_checkpoints_the_current_step_calls_the_hook_and_resumes_bitwise(tmp_path, burgers_file):
    full = _StageHarness(burgers_file, *LOOP)
    full.run(tmp_path / "full")

    seen = []

    class Preempting(_StageHarness):
        def prepare(self, batch):
            if self.step == 3:          # during step 4 (after the validation checkpoint of step 3)
                preemption.request("SIGTERM")
            return super().prepare(batch)

    part = Preempting(burgers_file, *LOOP)
    try:
        with pytest.raises(Preempted, match="SIGTERM at stage codec step 4: checkpoint .*/codec/4 is complete"):
            part.run(tmp_path / "w", on_checkpoint=seen.append)
    finally:
        preemption.clear()
    assert [(i["step"], i["kind"]) for i in seen] == [(3, "eval"), (4, "preempt")]
    assert seen[-1]["dir"] == str(tmp_path.absolute() / "w" / "checkpoints" / "codec")
    assert _steps_on_disk(tmp_path / "w", "codec") == [3, 4]     # complete when the hook ran: restorable
    _restore_items(tmp_path / "w", "codec", 4, ("params", "ema", "state"), nx=part.data.dataset.nx)

    resumed = _StageHarness(burgers_file, *LOOP, start_step=4)
    resumed.run(tmp_path / "w", on_checkpoint=seen.append)
    assert [(i["step"], i["kind"]) for i in seen[2:]] == [(6, "end")]
    nx = full.data.dataset.nx
    a = _restore_items(tmp_path / "full", "codec", 6, ("params", "ema"), nx=nx)
    b = _restore_items(tmp_path / "w", "codec", 6, ("params", "ema"), nx=nx)
    _assert_trees_equal(a["params"], b["params"])
    _assert_trees_equal(a["ema"], b["ema"])
    _assert_trees_equal(param_dict(full.model), param_dict(resumed.model))


def test_resume_points_every_n_steps_are_never_best(tmp_path, burgers_file):
    seen = []
    h = _StageHarness(burgers_file, *LOOP, val_by_step={3: 0.5, 6: 0.9})
    res = h.run(tmp_path, keep_latest=10, on_checkpoint=seen.append, options=LoopOptions(checkpoint_every_steps=2))
    assert [(i["step"], i["kind"]) for i in seen] == [(2, "resume_point"), (3, "eval"), (4, "resume_point"),
                                                     (6, "end")]
    assert _steps_on_disk(tmp_path, "codec") == [2, 3, 4, 6]
    assert res.best_step == 3 and [r["step"] for r in _records(tmp_path) if r["kind"] == "val"] == [3, 6]


# ------------------------------------------------------------------------------------- 3. damaged checkpoints
def _truncate_arrays(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and f.parent.name == "d" and f.stat().st_size > 16:
            with open(f, "r+b") as fh:
                fh.truncate(f.stat().st_size // 2)


def test_unreadable_newest_checkpoint_falls_back_and_is_set_aside(tmp_path, burgers_file):
    full = _StageHarness(burgers_file, *LOOP)
    full.run(tmp_path / "full")
    wd = tmp_path / "w"
    _StageHarness(burgers_file, *LOOP).run(wd, max_steps=5)
    assert _steps_on_disk(wd, "codec") == [3, 5]
    _truncate_arrays(wd / "checkpoints" / "codec" / "5")
    (wd / "checkpoints" / "codec" / "6.orbax-checkpoint-tmp-123").mkdir()     # a save killed half-way

    resumed = _StageHarness(burgers_file, *LOOP, start_step=3)
    resumed.run(wd)
    assert len(resumed.seen) == 3                                  # steps 4..6: resumed from step 3
    recs = _records(wd)
    warn = [r for r in recs if r["kind"] == "checkpoint_unreadable"]
    assert len(warn) == 1 and "/codec/5 is damaged (ValueError: OUT_OF_RANGE" in warn[0]["message"]
    assert "resuming from step 3" in warn[0]["message"]
    assert [r["step"] for r in recs if r["kind"] == "resume"] == [3]
    assert (wd / "checkpoints_unreadable" / "codec" / "5").is_dir()          # kept for a post-mortem
    assert not (wd / "checkpoints" / "codec" / "6.orbax-checkpoint-tmp-123").exists()
    nx = full.data.dataset.nx
    a = _restore_items(tmp_path / "full", "codec", 6, ("params", "ema"), nx=nx)
    b = _restore_items(wd, "codec", 6, ("params", "ema"), nx=nx)
    _assert_trees_equal(a["params"], b["params"])
    _assert_trees_equal(a["ema"], b["ema"])


def test_the_only_checkpoint_unreadable_is_an_error_and_nothing_is_touched(tmp_path, burgers_file):
    wd = tmp_path / "w"
    _StageHarness(burgers_file, *LOOP).run(wd, max_steps=3)
    _truncate_arrays(wd / "checkpoints" / "codec" / "3")
    before = _snapshot(wd / "checkpoints")
    with pytest.raises(CheckpointError,
                       match=r"no readable checkpoint \(1 damaged; step 3: ValueError: OUT_OF_RANGE: .*\); use --fresh"):
        _StageHarness(burgers_file, *LOOP).run(wd)
    assert _snapshot(wd / "checkpoints") == before


# The ways a step directory gets damaged, one per stage of :test, so that one resumed command covers them all
def _truncate_all(d: Path) -> None:                     # the whole step, metrics JSON included (issue 18's case)
    for f in d.rglob("*"):
        if f.is_file():
            os.truncate(f, 7)


DAMAGE = {
    "codec": lambda d: (d / "metrics" / "metrics").write_text('{"val": 0.'),        # the metrics JSON
    "operator": _truncate_all,
    "corrector": lambda d: _truncate_arrays(d / "params"),                            # array files
    "student": lambda d: os.truncate(d / "params" / "_METADATA", 100),                # an item's metadata
    "steady": lambda d: (d / "params" / "manifest.ocdbt").unlink(),                  # a missing file
}


def test_damaged_newest_checkpoints_fall_back_through_the_command_and_end_bitwise(trained_run, tmp_path,
                                                                                  burgers_file):
    """Issue 18: the finished reference run with every stage's newest checkpoint damaged in another way, resumed
    by the real command: one warning line per damaged step, each moved aside, every stage retrained from its
    previous checkpoint, and the run ends bitwise equal to the uninterrupted one."""
    ref, cfg, ref_results = trained_run
    wd = tmp_path / "w"
    shutil.copytree(ref, wd)
    shutil.rmtree(wd / "eval")
    newest = {stage: _steps_on_disk(wd, stage)[-1] for stage in DAMAGE}
    assert set(DAMAGE) == set(cfg.stage_order) and all(len(_steps_on_disk(wd, s)) == 2 for s in DAMAGE)
    for stage, damage in DAMAGE.items():
        damage(wd / "checkpoints" / stage / str(newest[stage]))

    p = _train(wd, burgers_file)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    warned = [line for line in p.stderr.splitlines() if " is damaged (" in line]
    assert len(warned) == len(DAMAGE), p.stderr
    for stage in DAMAGE:
        line, = [w for w in warned if f"/checkpoints/{stage}/{newest[stage]} is damaged" in w]
        assert line.startswith("warning: checkpoint ") and "resuming from step 3" in line, line
        assert (wd / "checkpoints_unreadable" / stage / str(newest[stage])).is_dir()     # kept, out of the way
    assert any("/codec/6 is damaged (metrics/metrics is not valid JSON" in w for w in warned)
    for stage in cfg.stage_order:
        assert _steps_on_disk(wd, stage) == _steps_on_disk(ref, stage)
    _assert_same_final_run(ref, wd, cfg, ref_results)


def test_a_read_error_that_is_not_damage_stops_with_one_line_and_moves_nothing(tmp_path, burgers_file, monkeypatch):
    """Issue 18: a failure that does not mean "this checkpoint is damaged" (here a bug, injected into the restore)
    never sets the newest good checkpoint aside: one-line CheckpointError, every file where it was."""
    from ups_jax.training import checkpoints as ckpt

    wd = tmp_path / "w"
    _StageHarness(burgers_file, *LOOP).run(wd, max_steps=5)
    before = _snapshot(wd / "checkpoints")
    real = ckpt.restore

    def failing(mngr, step, **kw):
        if step == 5 and "params" in kw.get("items", ()):
            raise RuntimeError("injected: not a damaged file")
        return real(mngr, step, **kw)

    monkeypatch.setattr(ckpt, "restore", failing)
    with pytest.raises(CheckpointError, match=r"/codec/5: reading the checkpoint failed \(RuntimeError: injected: "
                                             r"not a damaged file\); that is not a sign of a damaged checkpoint, so "
                                             r"every checkpoint was left in place"):
        _StageHarness(burgers_file, *LOOP).run(wd)
    assert _snapshot(wd / "checkpoints") == before
    assert not (wd / "checkpoints_unreadable").exists()


@pytest.mark.parametrize("error, damage", [
    (ValueError('DATA_LOSS: Error reading "x" in OCDBT database'), True),
    (ValueError('OUT_OF_RANGE: Error reading byte range [0, 37320) of local file "d/88a4"'), True),
    (ValueError('NOT_FOUND: Error opening "zarr" driver'), True),
    (FileNotFoundError(2, "No such file or directory", "ema"), True),
    (json.JSONDecodeError("Expecting value", "{", 1), True),
    (ValueError('PERMISSION_DENIED: Error opening "zarr" driver'), False),
    (PermissionError(13, "Permission denied", "params/_METADATA"), False),
    (OSError(5, "Input/output error"), False),
    (RuntimeError("a bug"), False),
    (KeyError("step"), False),
])
def test_only_damage_counts_as_a_damaged_checkpoint(error, damage):
    from ups_jax.training.checkpoints import is_damage

    assert is_damage(error) is damage
    try:                                        # also when orbax wraps it
        raise RuntimeError("restore failed") from error
    except RuntimeError as wrapped:
        assert is_damage(wrapped) is damage


# ------------------------------------------------------------------------------------- 4. NaN guard
class _Poisoned(_StageHarness):
    """Feeds NaN fields at the given (1-based) steps."""

    def __init__(self, *args, bad=(), **kw):
        super().__init__(*args, **kw)
        self.bad = set(bad)

    def prepare(self, batch):
        out = super().prepare(batch)
        if self.step in self.bad:
            out = dict(out, u=out["u"] * np.nan)
        return out


def test_a_nan_batch_is_skipped_counted_and_logged(tmp_path, burgers_file):
    h = _Poisoned(burgers_file, *LOOP, bad={2})
    res = h.run(tmp_path, options=LoopOptions(max_nonfinite_steps=3))
    assert res.steps_done == 6 and res.nonfinite_steps == 1
    train = {r["step"]: r for r in _records(tmp_path) if r["kind"] == "train"}
    assert train[2]["skipped_steps"] == 1 and train[2]["loss"] == "nan" and train[2]["nonfinite_total"] == 1
    assert all(train[s]["skipped_steps"] == 0 and np.isfinite(train[s]["loss"]) for s in (1, 3, 4, 5, 6))
    end = next(r for r in _records(tmp_path) if r["kind"] == "stage_end")
    assert end["nonfinite_total"] == 1
    for step in (3, 6):
        items = _restore_items(tmp_path, "codec", step, ("params", "ema"), nx=h.data.dataset.nx)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(items))


def test_consecutive_nan_steps_stop_the_run_with_stage_and_step(tmp_path, burgers_file):
    h = _Poisoned(burgers_file, *LOOP, bad=range(2, 100))
    with pytest.raises(TrainingDiverged) as e:
        h.run(tmp_path, options=LoopOptions(max_nonfinite_steps=3))
    msg = str(e.value)
    assert e.value.exit_code == 1 and "\n" not in msg
    assert msg.startswith("stage codec: 3 consecutive non-finite steps (steps 2..4, each skipped; "
                          "runtime.max_nonfinite_steps=3); the newest checkpoint is step 3"), msg
    assert _steps_on_disk(tmp_path, "codec") == [3]                # nothing written after the divergence
    items = _restore_items(tmp_path, "codec", 3, ("params", "ema"), nx=h.data.dataset.nx)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(items))


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    from ups_jax.training import checkpoints as ckpt

    mngr = ckpt.open_manager(tmp_path, "codec")
    good, bad = {"w": np.ones(3, np.float32)}, {"w": np.array([1.0, np.inf, 0.0], np.float32)}
    with pytest.raises(FloatingPointError, match="refusing to checkpoint non-finite parameters at step 1"):
        ckpt.save(mngr, 1, params=good, ema=bad, opt_state={}, state={}, val=0.0)
    mngr.close()
    assert _steps_on_disk(tmp_path, "codec") == []


# ------------------------------------------------------------------------------------- 6. review defects
def test_optimizer_state_is_saved_as_its_pytree_and_a_mismatch_is_one_line(tmp_path, burgers_file):
    import orbax.checkpoint as ocp

    h = _StageHarness(burgers_file, *LOOP)
    h.run(tmp_path, max_steps=4)
    tree = ocp.StandardCheckpointer().metadata(tmp_path / "checkpoints" / "codec" / "4" / "opt").item_metadata.tree
    from ups_jax.models import param_shapes

    n_params = sum(int(np.prod(v)) for v in param_shapes(h.model).values())
    n_trained = sum(int(np.prod(v)) for k, v in param_shapes(h.model).items() if k.split("/")[0] in ("encoder",
                                                                                                    "decoder"))
    assert n_trained < n_params
    assert tree[1][0]["mu"].shape == tree[1][0]["nu"].shape == (n_trained,)   # adam's moments: one flat vector each
    before = _snapshot(tmp_path / "checkpoints")
    other = _StageHarness(burgers_file, *LOOP, "stages.codec.trainable=('encoder',)")
    with pytest.raises(CheckpointError) as e:
        other.run(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "/codec/4: the saved optimizer state does not fit this config" in msg
    assert "stages.codec.trainable: [\"encoder\", \"decoder\"] → [\"encoder\"]" in msg and "--fresh" in msg
    assert _snapshot(tmp_path / "checkpoints") == before


def test_accumulation_counts_optimizer_updates_and_equals_the_larger_batch(tmp_path, burgers_file):
    """accum_steps=2 × batch 2 = one update over the same 4 windows as batch 4: the same losses and gradient norms
    step by step (to float rounding; parameters are not compared: Adam turns the rounding noise of gradients that
    are zero in exact arithmetic, e.g. attention key biases, into full-size updates), and every cadence (steps,
    logs, validations, checkpoints) in optimizer updates."""
    big = _StageHarness(burgers_file, *LOOP, "stages.codec.batch_size=4")
    big.run(tmp_path / "big")
    acc = _StageHarness(burgers_file, *LOOP, "stages.codec.batch_size=2", "stages.codec.accum_steps=2")
    res = acc.run(tmp_path / "acc")
    assert res.steps_done == 6 and len(acc.seen) == 12               # 6 updates of 2 micro-batches
    recs = _records(tmp_path / "acc")
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in recs if r["kind"] == "val"] == [3, 6]
    assert _steps_on_disk(tmp_path / "acc", "codec") == [3, 6]
    for b_batch, a_batch in zip(big.seen, np.concatenate(acc.seen).reshape(6, 4, *acc.seen[0].shape[1:])):
        np.testing.assert_array_equal(b_batch, a_batch)                # the same windows per update
    want = [r for r in _records(tmp_path / "big") if r["kind"] == "train"]
    got = [r for r in recs if r["kind"] == "train"]
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-4, err_msg=key)


def test_the_logged_training_loss_is_the_interval_mean(tmp_path, burgers_file):
    every = _StageHarness(burgers_file, *LOOP)                     # log_every=1: each step's loss
    every.run(tmp_path / "a")
    per_step = {r["step"]: r for r in _records(tmp_path / "a") if r["kind"] == "train"}
    thirds = _StageHarness(burgers_file, *LOOP, "stages.codec.log_every=3")
    thirds.run(tmp_path / "b")
    logged = {r["step"]: r for r in _records(tmp_path / "b") if r["kind"] == "train"}
    assert sorted(logged) == [3, 6]
    for end in (3, 6):
        for key in ("loss", "loss/recon", "grad_norm"):
            want = np.mean([per_step[s][key] for s in range(end - 2, end + 1)])
            np.testing.assert_allclose(logged[end][key], want, rtol=1e-6, err_msg=key)


def test_wandb_run_id_is_stored_and_reused_and_every_log_has_a_step(tmp_path, monkeypatch):
    import types

    from ups_jax.training.logging import RunLogger

    calls = {"init": [], "log": []}

    class Run:
        def log(self, data, step=None):
            calls["log"].append((data, step))

        def finish(self):
            pass

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or Run(),
                                 util=types.SimpleNamespace(generate_id=iter(["id-one", "id-two"]).__next__))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    offsets = {"codec": 0, "operator": 6}
    for session in range(2):          # the first run, then a resumed one
        with RunLogger(tmp_path, wandb_mode="offline", stage_offsets=offsets) as lg:
            lg.log("run_start", stages=["codec", "operator"])
            lg.log("train", stage="codec", step=3, loss=1.0)
            lg.log("stage_end", stage="codec", step=6, best_step=3)
            lg.log("train", stage="operator", step=2, loss=0.5)
            lg.log("eval", split="test", **{"model/nrmse": 0.1})
    assert json.loads((tmp_path / "wandb.json").read_text())["id"] == "id-one"
    assert [kw["id"] for kw in calls["init"]] == ["id-one", "id-one"]
    assert all(kw["resume"] == "allow" for kw in calls["init"])
    steps = [step for _, step in calls["log"]]
    assert steps == [3, 6, 8, 8] * 2                                # codec 3, codec end 6, operator 6+2, eval
    assert all(step is not None for step in steps)


# The package's layers, lowest first. A module imports only modules of its own package or of a lower layer
# (imports inside functions count too: a lazy import is still a dependency). The order follows the data's path
# through the code (data → models → training → driver → fleet, entry points on top) and what the code needs:
# ``eval`` (rollouts, metrics, reports) sits below ``training`` because training validates with eval's rollouts
# and scores; ``inference`` (test-time computing) builds on eval's Rollout; the config checks read the data, the
# models, the static stage table and the TTC presets, and ``training.pipeline`` runs them before it starts; the
# end-of-run comparison table (training/comparison.py) uses eval and inference and lives with the pipeline.
LAYERS = (
    ("ups_jax", "errors", "paths", "files",    # the package root (version) and helpers importing no ups_jax module
     "compilation", "dispatch"),               # the XLA cache / recompile log; steps_per_dispatch rules
    ("config",),                               # config files, overrides, the W&B mode
    ("cli",),                                  # the argument parser every command shares
    ("data",),                                 # PDEBench files, the solver, the loaders
    ("models",),
    ("stage_kinds",),                          # the static stage table (what each stage trains, its window)
    ("eval",),                                 # rollouts, metrics, reports
    ("inference",),                            # test-time computing (TTC), on eval's Rollout
    ("checks",),                               # the config checks (train's preflight, driver validate)
    ("training",),                             # stages, loop, checkpoints, the pipeline and its comparison table
    ("driver",),                               # validate / validate-data / dry-run / analyze / compare
    ("fleet",),                                # Ray: the pipeline on a cluster
    ("train", "evaluate", "infer"),            # entry points: none imports another
)


def _import_graph(root: Path, package: str = "ups_jax") -> tuple[dict, dict]:
    """({module: {imported ups_jax modules}}, {module: [(imported module, name), ...] of from-imports}) of every
    ``.py`` under ``root/package`` (module names dotted from ``root``), every import statement included."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (root / package).rglob("*.py")}
    known = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in (ROOT / "ups_jax").rglob("*.py")}
    graph, names_from = {m: set() for m in mods}, {m: [] for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                names_from[m] += [(node.module, a.name) for a in node.names]
            graph[m] |= {n for n in names if n in known and n != m}
    return graph, names_from


def _package(module: str) -> str:
    """``ups_jax`` for the root, else the first name below it (``ups_jax.driver.analyze`` → ``driver``)."""
    parts = module.split(".")
    return parts[0] if len(parts) == 1 or parts[0] != "ups_jax" else parts[1]


def test_import_graph_has_no_cycle_and_every_package_imports_only_lower_layers():
    """Module-level import graph of ups_jax (every import statement, also inside functions) is acyclic, and each
    package imports only itself and the packages of lower layers (LAYERS)."""
    graph, names_from = _import_graph(ROOT)
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    layer = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}
    assert sorted({_package(m) for m in graph} - set(layer)) == [], "a package without a layer: add it to LAYERS"
    upward = sorted(f"{m} imports {d} ({_package(m)} is layer {layer[_package(m)]}, {_package(d)} is layer "
                    f"{layer[_package(d)]})" for m, deps in graph.items() for d in deps
                    if _package(d) != _package(m) and layer[_package(d)] >= layer[_package(m)])
    assert upward == []
    # no private name (``_x``) crosses a package boundary, from the package or from the benchmarks
    _, bench_from = _import_graph(ROOT, "benchmarks")
    private = sorted(f"{m} imports {name} from {src}" for m, pairs in {**names_from, **bench_from}.items()
                     for src, name in pairs if src.startswith("ups_jax") and name.startswith("_")
                     and not name.startswith("__") and _package(src) != _package(m))
    assert private == []


def test_importing_ups_jax_changes_no_global_state():
    """What ups_jax itself changes: its dependencies are imported first (orbax, for one, adds a root handler)."""
    code = textwrap.dedent("""
        import importlib, logging, pkgutil, matplotlib
        import flax.nnx, h5py, jax, ml_collections, optax, orbax.checkpoint, tqdm   # their own side effects
        backend = matplotlib.rcParams._get_backend_or_none()
        root = list(logging.getLogger().handlers)
        import ups_jax
        names = [m.name for m in pkgutil.walk_packages(ups_jax.__path__, "ups_jax.") if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        assert len(names) > 30, names
        assert matplotlib.rcParams._get_backend_or_none() == backend, matplotlib.rcParams._get_backend_or_none()
        assert logging.getLogger("absl").level == logging.NOTSET
        assert logging.getLogger().handlers == root
        assert not logging.getLogger("ups_jax").handlers
        import sys
        assert "matplotlib.pyplot" not in sys.modules
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr


@pytest.mark.parametrize("module, argv", [("ups_jax.train", []), ("ups_jax.driver.validate", []),
                                          ("ups_jax.driver.dry_run", []), ("ups_jax.evaluate", [])])
def test_help_shows_config_variants_and_debug(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--debug" in out and "traceback" in out
    if module != "ups_jax.evaluate":
        assert "--config FILE[:VARIANT]" in out and "--config.KEY VALUE" in out
        assert "configs/burgers32.py:cpu" in out and "configs/burgers32.py:test" in out


def test_the_variant_cannot_be_overridden():
    from ups_jax.config import load_config
    from ups_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--config.variant=cpu: 'variant' cannot be overridden; choose the "
                                          r"variant with --config FILE:VARIANT"):
        load_config(CONFIG, ["variant=cpu"])


# ------------------------------------------------------------------------------------- 7. data parallel
@pytest.mark.parametrize("setting, devices, want", [
    ("off", 4, (1, None)), ("auto", 1, (1, None)), ("auto", 4, (4, None)), ("auto", 3, (2, None)),
    ("2", 4, (2, None)), ("3", 2, (1, "runtime.data_parallel=3 but this machine has 2 local device(s)")),
    ("3", 4, (1, "runtime.data_parallel=3 does not divide the batch size 4 (each device gets an equal share)")),
    ("many", 4, (1, "runtime.data_parallel='many': choose auto, off or a device count")),
])
def test_data_parallel_setting(setting, devices, want):
    from ups_jax.checks import data_parallel_size

    assert data_parallel_size(setting, [4, 8], devices) == want


DATA_PARALLEL_SCRIPT = """
import sys, json
sys.path.insert(0, {tests!r})
import jax, numpy as np
assert jax.local_device_count() == 2, jax.devices()
from test_training import _StageHarness, LOOP, _restore_items
from ups_jax.training import loop
from ups_jax.training.loop import LoopOptions
meshes = []
orig = loop.make_mesh
loop.make_mesh = lambda n: (meshes.append(orig(n)), meshes[-1])[1]
out, losses = {{}}, {{}}
for n in (1, 2):
    h = _StageHarness({data!r}, *LOOP, "stages.codec.accum_steps=2")
    h.run({tmp!r} + f"/dp{{n}}", options=LoopOptions(data_parallel=n))
    out[n] = _restore_items({tmp!r} + f"/dp{{n}}", "codec", 6, ("params", "ema"), nx=h.data.dataset.nx)
    recs = [json.loads(line) for line in open({tmp!r} + f"/dp{{n}}/metrics.jsonl")]
    losses[n] = [(r["loss"], r["grad_norm"]) for r in recs if r["kind"] == "train"]
assert meshes[0] is None and meshes[-1].devices.size == 2, meshes[-1]
assert len(losses[1]) == 6
np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)
worst = 0.0
for item in ("params", "ema"):
    for a, b in zip(jax.tree.leaves(out[1][item]), jax.tree.leaves(out[2][item])):
        worst = max(worst, float(np.max(np.abs(a - b))))
print(json.dumps({{"max_abs_diff": worst, "losses": losses}}))
"""


def test_two_host_devices_give_the_one_device_result(tmp_path, burgers_file):
    """The batch split over 2 XLA host devices: the same losses and gradient norms step by step as on one device
    (rtol 1e-4: only the order of the reductions differs) and parameters within 1e-3 after 6 Adam steps of lr 2e-3
    (Adam turns the rounding noise of gradients that are zero in exact arithmetic into lr-sized updates)."""
    script = DATA_PARALLEL_SCRIPT.format(tests=str(ROOT / "tests"), data=str(burgers_file), tmp=str(tmp_path))
    env = _env(XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["max_abs_diff"] < 1e-3


# ------------------------------------------------------------------------------------- 8. mixed precision
def test_bf16_compute_is_finite_close_to_f32_and_keeps_f32_state(tmp_path, burgers_file):
    f32 = _StageHarness(burgers_file, *LOOP)
    f32.run(tmp_path / "f32")
    bf16 = _StageHarness(burgers_file, *LOOP)
    bf16.run(tmp_path / "bf16", options=LoopOptions(compute_dtype="bfloat16"))
    a = [r["loss"] for r in _records(tmp_path / "f32") if r["kind"] == "train"]
    b = [r["loss"] for r in _records(tmp_path / "bf16") if r["kind"] == "train"]
    assert len(a) == len(b) == 6 and np.all(np.isfinite(b))
    np.testing.assert_allclose(b, a, rtol=0.05)
    assert b != a                                                   # it did compute in bf16
    import orbax.checkpoint as ocp

    for item in ("params", "ema", "opt"):
        md = ocp.StandardCheckpointer().metadata(tmp_path / "bf16" / "checkpoints" / "codec" / "6" / item)
        dtypes = {str(m.dtype) for m in jax.tree.leaves(md.item_metadata.tree)}
        assert "bfloat16" not in dtypes and ("float32" in dtypes), (item, dtypes)
