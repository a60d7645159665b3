"""Training loop, checkpoints, resume, the train/evaluate command lines and their one-line errors.

Cost control (2 CPU cores): one tiny ``:test`` run is trained once per module (``run_dir``) and shared; every
other full-pipeline run compiles the same programs, which the session's persistent compilation cache
(tests/conftest.py) serves without recompiling, also to the subprocesses. Loop-level tests drive
``run_stage`` on the codec stage only (its step compiles in seconds).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "burgers32.py")


# ----------------------------------------------------------------------------------------------- helpers
def _cfg(*overrides):
    """:test with the core stages only (the loop mechanics; tests/test_stages.py runs every stage)."""
    from ups_jax.config import load_config

    core = ["stage_order=('codec', 'operator')", "baseline.config=", "eval.ttc_preset="]
    return load_config(f"{CONFIG}:test", core + list(overrides))


def _records(workdir) -> list[dict]:
    from ups_jax.training.logging import read_jsonl

    records, bad = read_jsonl(Path(workdir) / "metrics.jsonl")
    assert bad == 0
    return records


def _steps_on_disk(workdir, stage) -> list[int]:
    d = Path(workdir) / "checkpoints" / stage
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_trees_equal(a, b, *, exact=True, rtol=1e-6, atol=1e-7):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    assert fa, "empty tree"
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape, k
        if exact:
            assert np.array_equal(fa[k], fb[k]), f"{k} differs"
        else:
            np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


def _restore_items(workdir, stage, step, items=("params", "ema", "state"), nx=None) -> dict:
    """Restores a checkpoint of ``workdir`` into a freshly built :test model's structure (``nx`` cells; default:
    the run's run_meta.json)."""
    from flax import nnx

    from ups_jax.models import build_model
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import param_dict

    nx = nx or json.loads((Path(workdir) / "run_meta.json").read_text())["nx"]
    like = param_dict(build_model(_cfg(), num_points=nx, rngs=nnx.Rngs(0)))
    mngr = ckpt.open_manager(workdir, stage, read_only=True)
    try:
        return ckpt.restore(mngr, step, params_like=like, items=items)
    finally:
        mngr.close()


def _snapshot(root) -> dict[str, tuple]:
    """Every file under ``root`` with its size, mtime and content hash: 'nothing was written'."""
    import hashlib

    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
    return out


def _cli(module: str, *args, timeout=300) -> subprocess.CompletedProcess:
    """Runs ``python -m module args`` in a fresh process (inherits the session's JAX compilation cache)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exactly one ``error:`` line, the last on stderr (status lines and ``warning:`` lines may precede it: the
    loggers write to stderr), no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _raw_split(h5file, cfg, split: str) -> np.ndarray:
    """The split's trajectories straight from the HDF5 file with numpy: PDEBench layout, reduced like the reader
    (every reduced_resolution_t-th frame, every reduced_resolution-th cell), test = first, val = next fraction."""
    with h5py.File(h5file, "r") as f:
        u = np.asarray(f["tensor"], np.float64)
    u = u[:, ::cfg.data.reduced_resolution_t, ::cfg.data.reduced_resolution]
    n = u.shape[0]
    n_test = int(math.floor(n * cfg.data.test_fraction + 1e-9))
    n_val = int(math.floor(n * cfg.data.val_fraction + 1e-9))
    return {"test": u[:n_test], "val": u[n_test:n_test + n_val], "train": u[n_test + n_val:]}[split]


def _numpy_nrmse(pred: np.ndarray, true: np.ndarray) -> float:
    """PDEBench nRMSE per sample and step, sqrt(mean_x err²)/sqrt(mean_x true²), averaged over all trajectories
    and steps (the headline definition: every trajectory weighs the same)."""
    return float(np.mean(np.sqrt(np.mean((pred - true) ** 2, -1)) / np.sqrt(np.mean(true ** 2, -1))))


# Every loop-level test trains the codec stage with these settings, so they share one compiled train step.
LOOP = ("stages.codec.steps=6", "stages.codec.eval_every=3", "stages.codec.log_every=1")


class _StageHarness:
    """One stage of the :test config wired to ``run_stage`` like the pipeline does, with a step counter (one
    ``prepare_batch`` call per micro-step), a record of the batches seen and an optional crafted validator."""

    def __init__(self, h5file, *overrides, stage="codec", val_by_step=None, start_step=0, resident=False):
        from flax import nnx

        from ups_jax.data.loader import WindowLoader
        from ups_jax.models import build_model
        from ups_jax.training.losses import make_ups_loss
        from ups_jax.training.loop import StageSpec
        from ups_jax.training.run_data import RunData

        self.cfg = cfg = _cfg(*overrides)
        self.data = data = RunData(cfg, [h5file])
        self.model = build_model(cfg, num_points=data.dataset.nx, rngs=nnx.Rngs(cfg.seed))
        sc = self.sc = cfg.stages[stage]
        self.step, self.seen = start_step, []
        self.val_by_step = val_by_step or {}
        self.spec = StageSpec(name=stage, cfg=sc, val_metric="val/crafted", validate=self._validate,
                              trainable=tuple(sc.trainable),
                              loss_fn=make_ups_loss(sc.losses, x01=jnp.asarray(data.x01),
                                                    rollout_steps=sc.rollout_steps, query_points=sc.query_points))
        # not cached (default): the loop then takes prepared host batches (one prepare call per micro-batch,
        # counted above); ``resident``: window indices into the device-resident split (the pipeline's path)
        self.loader = WindowLoader(data.dataset, data.splits["train"], window=sc.rollout_steps + 1,
                                   batch_size=sc.batch_size, seed=cfg.seed + 1000, prefetch=cfg.data.prefetch,
                                   cache_in_memory=resident)

    def _validate(self, model):
        return {"val/crafted": float(self.val_by_step.get(self.step, 1.0 - 0.01 * self.step))}

    def prepare(self, batch):
        self.step += 1
        self.seen.append(np.array(batch["u"]))
        return self.data.prepare_batch(batch)

    def run(self, workdir, **kw):
        from ups_jax.training.logging import RunLogger
        from ups_jax.training.loop import run_stage

        try:
            with RunLogger(workdir, wandb_mode="disabled") as logger:
                return run_stage(self.model, self.spec, self.loader, prepare_batch=self.prepare, workdir=workdir,
                                 logger=logger, seed=self.cfg.seed, progress=False, **kw)
        finally:
            self.loader.close()


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_dir(trained_run):
    """The session's finished :test run (every stage; tests/conftest.py::trained_run)."""
    return trained_run


# ----------------------------------------------------------------------------------------------- 1. the loop learns
def test_stage_loop_drives_the_loss_down(tmp_path, burgers_file):
    h = _StageHarness(burgers_file, "stages.codec.steps=40", "stages.codec.lr=0.01", "stages.codec.warmup_steps=1",
                      "stages.codec.log_every=1", "stages.codec.eval_every=40")
    res = h.run(tmp_path)
    losses = [r["loss"] for r in _records(tmp_path) if r["kind"] == "train"]
    assert len(losses) == 40 and res.steps_done == 40 and not res.skipped
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.4 * first, (first, last)


# ----------------------------------------------------------------------------------------------- 2. save/restore
def test_save_restore_is_bitwise_and_gives_the_same_next_step(tmp_path, burgers_file):
    from flax import nnx

    from ups_jax.models import build_model
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import load_param_dict, param_dict, trainable_filter
    from ups_jax.training.optim import make_optimizer
    from ups_jax.training.step import StageStep

    h = _StageHarness(burgers_file, *LOOP)
    sc, filt = h.sc, trainable_filter(h.spec.trainable)
    tx = make_optimizer(sc)

    def runner_for(model):    # as run_stage builds it
        return StageStep(model, filt, h.spec.loss_fn, tx, float(sc.ema_decay), loader=h.loader,
                         prepare_batch=h.data.prepare_batch)

    run1 = runner_for(h.model)
    key = jax.random.key(3)
    state, _ = run1.run(run1.initial_state(), key, 0, run1.next_inputs(2))
    xs3 = run1.next_inputs(1)
    h.loader.close()

    mngr = ckpt.open_manager(tmp_path, "codec")
    rest = run1.rest_state()
    ckpt.save(mngr, 2, params=param_dict(nnx.merge(run1.graphdef, run1.unravel(state.params), rest)),
              ema=param_dict(nnx.merge(run1.graphdef, run1.unravel(state.ema), rest)), opt_state=state.opt,
              state={"step": 2}, val=0.5)
    mngr.wait_until_finished()
    mngr.close()

    # restore into a model with *different* initial weights, through a new manager
    model2 = build_model(h.cfg, num_points=h.data.dataset.nx, rngs=nnx.Rngs(h.cfg.seed + 17))
    assert not np.array_equal(runner_for(model2).params_flat.vector, state.params)
    mngr = ckpt.open_manager(tmp_path, "codec", read_only=True)
    r = ckpt.restore(mngr, 2, params_like=param_dict(model2), opt_state_like=run1.abstract_opt(),
                     items=("params", "ema", "opt", "state"))
    mngr.close()
    assert r["state"] == {"step": 2}
    ema_model = nnx.merge(*nnx.split(model2), copy=True)
    load_param_dict(ema_model, r["ema"])
    load_param_dict(model2, r["params"])
    run2 = runner_for(model2)
    state2 = run2.state_from(nnx.split(model2, filt, ...)[1], nnx.split(ema_model, filt, ...)[1], r["opt"], (0, 0))

    np.testing.assert_array_equal(state2.params, state.params)
    np.testing.assert_array_equal(state2.ema, state.ema)
    _assert_trees_equal(state2.opt, state.opt)
    assert jax.tree.structure(state2.opt) == jax.tree.structure(state.opt)
    assert not np.array_equal(state.ema, state.params)

    # one more step from the original and from the restored state: same loss, same params, same EMA
    a_state, a_out = run1.run(state, key, 2, xs3)
    b_state, b_out = run2.run(state2, key, 2, xs3)
    assert float(a_out["loss"][0]) == float(b_out["loss"][0])
    for x, y in zip(jax.tree.leaves(a_state), jax.tree.leaves(b_state)):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------------------------- 3. resume
def test_run_stage_resume_continues_the_same_step_sequence(tmp_path, burgers_file):
    """Kill at a step between checkpoints, resume: same batches, same RNG state, same losses, params and EMA,
    and the same best-step choice as an uninterrupted run, even if a validation at the kill step would have
    looked best (val 0.1 there)."""
    ov = LOOP
    vals = {4: 0.1}
    full = _StageHarness(burgers_file, *ov, val_by_step=vals)
    res_full = full.run(tmp_path / "full")

    part = _StageHarness(burgers_file, *ov, val_by_step=vals)
    res_part = part.run(tmp_path / "resumed", max_steps=4)
    assert res_part.steps_done == 4 and not res_part.skipped
    assert _steps_on_disk(tmp_path / "resumed", "codec")[-1] == 4      # the resume point was written
    resumed = _StageHarness(burgers_file, *ov, val_by_step=vals, start_step=4)
    res_resumed = resumed.run(tmp_path / "resumed")

    # the data loader continued where it stopped
    assert len(part.seen) == 4 and len(resumed.seen) == 2
    for got, want in zip(part.seen + resumed.seen, full.seen):
        np.testing.assert_array_equal(got, want)
    recs = _records(tmp_path / "resumed")
    assert [r["step"] for r in recs if r["kind"] == "resume"] == [4]
    train_full = {r["step"]: r["loss"] for r in _records(tmp_path / "full") if r["kind"] == "train"}
    train_res = {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}
    assert train_res.keys() == train_full.keys()
    np.testing.assert_allclose([train_res[k] for k in sorted(train_res)],
                               [train_full[k] for k in sorted(train_full)], rtol=1e-6)

    # same final live params and EMA (so the optimizer state was restored too), RNG and loader position
    a = _restore_items(tmp_path / "full", "codec", 6, ("params", "ema", "state"), nx=full.data.dataset.nx)
    b = _restore_items(tmp_path / "resumed", "codec", 6, ("params", "ema", "state"), nx=full.data.dataset.nx)
    _assert_trees_equal(a["params"], b["params"], exact=False)
    _assert_trees_equal(a["ema"], b["ema"], exact=False)
    for key in ("rng", "loader", "step", "best_step", "best_val", "evals_since_best", "finished"):
        assert a["state"][key] == b["state"][key], key
    # the stage hands on the same best EMA weights
    assert res_full.best_step == res_resumed.best_step == 6
    from ups_jax.training.loop import param_dict

    _assert_trees_equal(param_dict(full.model), param_dict(resumed.model), exact=False)


def test_pipeline_resume_after_interruption_matches_the_uninterrupted_run(run_dir, tmp_path, burgers_file):
    from ups_jax.training.pipeline import train_and_evaluate

    ref, cfg, ref_results = run_dir
    sc = cfg.stages.codec
    total = int(sc.steps) * int(sc.accum_steps)
    kill = next(k for k in range(total - 1, 0, -1) if k % int(sc.eval_every))    # between two checkpoints
    wd = tmp_path / "w"
    out = train_and_evaluate(_cfg(), wd, data_paths=[burgers_file], max_steps=kill)
    assert "eval" not in out and not (wd / "checkpoints" / "operator").exists()
    assert _steps_on_disk(wd, "codec")[-1] == kill

    out = train_and_evaluate(_cfg(), wd, data_paths=[burgers_file])
    recs = _records(wd)
    assert [(r["stage"], r["step"]) for r in recs if r["kind"] == "resume"] == [("codec", kill)]
    assert [r["kind"] for r in recs].count("run_start") == 2
    for stage in _cfg().stage_order:        # the core stages (run_dir also trained the refine stages)
        last = int(cfg.stages[stage].steps) * int(cfg.stages[stage].accum_steps)
        a = _restore_items(ref, stage, last)
        b = _restore_items(wd, stage, last)
        _assert_trees_equal(a["params"], b["params"], exact=False)
        _assert_trees_equal(a["ema"], b["ema"], exact=False)
        for key in ("rng", "loader", "best_step", "finished"):
            assert a["state"][key] == b["state"][key], (stage, key)
        assert out["stages"][stage]["best_step"] == ref_results["stages"][stage]["best_step"]
    np.testing.assert_allclose(out["eval"]["model"]["nrmse"], ref_results["eval"]["model"]["nrmse"], rtol=1e-5)


# ----------------------------------------------------------------------------------------------- 4. re-run
def test_rerunning_a_finished_run_skips_training_and_reevaluates(run_dir, tmp_path, burgers_file):
    from ups_jax.training.pipeline import train_and_evaluate

    ref, cfg, ref_results = run_dir
    wd = tmp_path / "w"
    shutil.copytree(ref, wd)
    before = _snapshot(wd / "checkpoints")
    n_before = len(_records(wd))
    (wd / "eval" / "test.json").unlink()

    out = train_and_evaluate(_cfg(), wd, data_paths=[burgers_file])
    new = _records(wd)[n_before:]
    kinds = [r["kind"] for r in new]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    core = list(_cfg().stage_order)          # run_dir also trained the refine stages; _cfg() runs the core only
    assert [r["stage"] for r in new if r["kind"] == "stage_skip"] == core
    assert not {"train", "val", "resume", "stage_end"} & set(kinds)
    assert kinds.count("eval") == 1
    assert all(out["stages"][s]["skipped"] for s in core)
    assert _snapshot(wd / "checkpoints") == before                        # nothing re-trained or re-saved
    evaluated = json.loads((wd / "eval" / "test.json").read_text())
    np.testing.assert_allclose(evaluated["model"]["nrmse"], ref_results["eval"]["model"]["nrmse"], rtol=1e-6)


# ----------------------------------------------------------------------------------------------- 5 + 7. retention, best
@pytest.mark.parametrize("keep, expected", [((1, 1), [2, 6]), ((2, 2), [1, 2, 5, 6])])
def test_retention_keeps_latest_and_best_and_best_is_chosen_by_val_metric(tmp_path, burgers_file, keep, expected):
    """Validation after every step; the val metric is best at step 2 and worst at the last step (the resume
    point); training loss plays no part."""
    from ups_jax.training.loop import param_dict

    vals = {1: 0.5, 2: 0.1, 3: 0.9, 4: 0.8, 5: 0.7, 6: 0.95}
    h = _StageHarness(burgers_file, *LOOP, "stages.codec.eval_every=1", val_by_step=vals)
    res = h.run(tmp_path, keep_latest=keep[0], keep_best=keep[1])
    assert _steps_on_disk(tmp_path, "codec") == expected
    assert res.best_step == 2 and res.best_val == pytest.approx(0.1)
    recs = _records(tmp_path)
    assert [r["step"] for r in recs if r["kind"] == "val" and r["is_best"]] == [1, 2]
    end = next(r for r in recs if r["kind"] == "stage_end")
    assert end["best_step"] == 2 and end["val_metric"] == "val/crafted"
    # the model now holds the EMA params of step 2, not the latest EMA or the live params
    nx = h.data.dataset.nx
    c2 = _restore_items(tmp_path, "codec", 2, ("ema",), nx=nx)["ema"]
    c6 = _restore_items(tmp_path, "codec", 6, ("params", "ema"), nx=nx)
    _assert_trees_equal(param_dict(h.model), c2)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(c2), jax.tree.leaves(c6["ema"])))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(c2), jax.tree.leaves(c6["params"])))


# ----------------------------------------------------------------------------------------------- 6. metadata
def test_checkpoint_root_metadata_holds_config_norm_fingerprint_version(run_dir, burgers_file):
    import ups_jax
    from ups_jax.data.pdebench import PDEBenchDataset
    from ups_jax.training import checkpoints as ckpt

    wd, cfg, _ = run_dir
    train = _raw_split(burgers_file, cfg, "train")
    fingerprint = PDEBenchDataset([burgers_file], reduced_resolution=cfg.data.reduced_resolution,
                                  reduced_resolution_t=cfg.data.reduced_resolution_t).fingerprint()
    assert fingerprint["files"][0]["size_bytes"] == os.path.getsize(burgers_file)
    for stage in cfg.stage_order:
        raw = json.loads((wd / "checkpoints" / stage / "metadata" / "_ROOT_METADATA").read_text())
        md = raw["custom_metadata"]
        mngr = ckpt.open_manager(wd, stage, read_only=True)
        assert mngr.metadata().custom_metadata == md                   # what orbax itself reads back
        mngr.close()
        assert md["config"] == json.loads(json.dumps(cfg.to_dict()))   # the full config (paths as used)
        assert md["config"]["data"]["paths"] == [str(burgers_file)]
        assert md["version"] == ups_jax.__version__
        assert md["fingerprint"] == fingerprint
        np.testing.assert_allclose(md["norm"]["mean"], train.mean(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(md["norm"]["std"], train.std(), rtol=1e-6)
        assert md["nx"] == train.shape[-1]
    assert json.loads((wd / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))


# ----------------------------------------------------------------------------------------------- 8. evaluation
def test_evaluate_cli_writes_physical_space_report_for_test_and_val(run_dir, burgers_file, tmp_path):
    from ups_jax import evaluate as evaluate_cli
    from ups_jax.errors import run_cli

    ref, cfg, ref_results = run_dir
    wd = tmp_path / "w"       # its own copy: the shared run is read by other modules on the other xdist worker
    shutil.copytree(ref, wd)
    for split in ("test", "val"):
        (wd / "eval" / f"{split}.json").unlink(missing_ok=True)
        if split == "test":   # the real command, in a fresh process
            proc = _cli("ups_jax.evaluate", "--workdir", wd)
            assert proc.returncode == 0, proc.stderr
        else:                 # the same entry point in-process (saves a process start)
            assert run_cli(evaluate_cli.main, ["--workdir", str(wd), "--split", "val"]) == 0
        res = json.loads((wd / "eval" / f"{split}.json").read_text())
        raw = _raw_split(burgers_file, cfg, split)
        assert res["split"] == split and res["n_trajectories"] == raw.shape[0]
        assert res["protocol"] == {"initial_step": cfg.eval.initial_step, "dt": pytest.approx(0.05),
                                   "nx": raw.shape[-1], "steps": raw.shape[1] - cfg.eval.initial_step,
                                   "context_frames_read": cfg.model.context_frames}
        for section in ("model", "persistence"):
            for key in ("nrmse", "rmse", "crmse", "brmse", "max_error", "rel_l2", "nrmse_per_step", "corr_time"):
                assert key in res[section], (section, key)
            assert len(res[section]["nrmse_per_step"]) == res["protocol"]["steps"]
        # persistence metrics in physical units, recomputed with numpy from the raw HDF5 data
        s = cfg.eval.initial_step - 1
        want = _numpy_nrmse(np.repeat(raw[:, s:s + 1], raw.shape[1] - s - 1, 1), raw[:, s + 1:])
        np.testing.assert_allclose(res["persistence"]["nrmse"], want, rtol=1e-5)
        want_full = _numpy_nrmse(np.repeat(raw[:, :1], raw.shape[1] - 1, 1), raw[:, 1:])
        np.testing.assert_allclose(res["full_horizon"]["persistence"]["nrmse"], want_full, rtol=1e-5)
        assert res["improvement_over_persistence"] == pytest.approx(res["persistence"]["nrmse"]
                                                                    / res["model"]["nrmse"])
        for png in (f"{split}_nrmse_vs_step.png", f"{split}_xt_0.png"):
            assert (wd / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        samples = np.load(wd / "eval" / f"{split}_samples.npz")
        np.testing.assert_allclose(samples["true"][0], raw[0, s + 1:], rtol=1e-6, atol=1e-6)   # physical
        if split == "test":  # a fresh process restores the same weights the training run evaluated
            np.testing.assert_allclose(res["model"]["nrmse"], ref_results["eval"]["model"]["nrmse"], rtol=1e-6)


def test_evaluation_model_metrics_are_in_physical_space(run_dir, burgers_file):
    """The model nRMSE in eval/test.json equals a numpy nRMSE of the de-normalised predictions vs the raw data."""
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    wd, cfg, ref_results = run_dir
    cfg2, data, model, stage, _ = load_run(wd)
    assert stage == cfg.stage_order[-1]
    raw = _raw_split(burgers_file, cfg, "test")
    s = cfg.eval.initial_step - 1
    rollout = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(raw)),
                      mode=cfg.eval.rollout_mode)
    pred = rollout(raw[:, s].astype(np.float32), np.full(len(raw), 0.01, np.float32), 0.05, raw.shape[1] - s - 1)
    want = _numpy_nrmse(pred.astype(np.float64), raw[:, s + 1:])
    np.testing.assert_allclose(ref_results["eval"]["model"]["nrmse"], want, rtol=1e-4)
    # the stored normalisation is not the identity, so a normalised-space metric would differ
    assert abs(data.norm["std"] - 1.0) > 1e-3 or abs(data.norm["mean"]) > 1e-3


# ----------------------------------------------------------------------------------------------- 9. bad input
def test_evaluate_missing_workdir_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope"
    _assert_one_line_error(_cli("ups_jax.evaluate", "--workdir", missing), str(missing), "not found")
    assert not missing.exists()


def test_evaluate_on_another_grid_is_refused_without_writing(run_dir, tmp_path):
    from ups_jax.data.generate import generate_burgers_file

    wd, cfg, _ = run_dir
    other = generate_burgers_file(tmp_path, nu=0.01, seed=5, samples=6, nx=32, x_min=-1.0, x_max=1.0, chunk=6,
                                  progress=False)
    before = _snapshot(wd)
    msg = _assert_one_line_error(_cli("ups_jax.evaluate", "--workdir", wd, "--data", other), "grid")
    assert "8" in msg and "16" in msg                     # 32 // 4 cells vs the 64 // 4 the model was trained on
    assert _snapshot(wd) == before


def _variant(src, dst, *, scale=1.0, x_shift=0.0):
    """A copy of ``src`` with its values times ``scale`` and its x-coordinate shifted by ``x_shift``."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        f["tensor"][...] = f["tensor"][...] * scale
        f["x-coordinate"][...] = f["x-coordinate"][...] + x_shift
    return dst


@pytest.mark.parametrize("kind, needles", [
    ("domain", ("grid covers x in [0, 2)", "[-1, 1)")),
    ("units", ("values have mean", "training stds", "units and scale")),
])
def test_evaluate_refuses_data_that_does_not_fit_the_run(run_dir, burgers_file, tmp_path, capsys, kind, needles):
    from ups_jax import evaluate as evaluate_cli
    from ups_jax.errors import run_cli

    wd, _, _ = run_dir
    other = _variant(burgers_file, tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5",
                     **({"x_shift": 1.0} if kind == "domain" else {"scale": 10.0}))
    before = _snapshot(wd)
    assert run_cli(evaluate_cli.main, ["--workdir", str(wd), "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(other) in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert _snapshot(wd) == before


def test_evaluate_warns_when_the_data_differ_from_training(run_dir, tmp_path, capsys):
    from ups_jax import evaluate as evaluate_cli
    from ups_jax.data.generate import generate_burgers_file
    from ups_jax.errors import run_cli

    wd = tmp_path / "w"
    shutil.copytree(run_dir[0], wd)
    other = generate_burgers_file(tmp_path / "data", nu=0.01, seed=11, samples=10, nx=64, chunk=10, progress=False)
    assert run_cli(evaluate_cli.main, ["--workdir", str(wd), "--data", str(other)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "differ from the training data" in warnings[0], out
    assert "num_trajectories" in warnings[0] and "files" in warnings[0]
    assert json.loads((wd / "eval" / "test.json").read_text())["n_trajectories"] == 2


def test_train_into_a_workdir_of_another_architecture_names_the_parameter(run_dir, burgers_file):
    from flax import nnx

    from ups_jax.models import build_model, param_shapes

    wd, cfg, _ = run_dir
    before = _snapshot(wd)
    proc = _cli("ups_jax.train", "--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file,
                "--config.model.latent_dim=16")
    msg = _assert_one_line_error(proc)
    assert _snapshot(wd) == before
    nx = json.loads((wd / "run_meta.json").read_text())["nx"]
    old = param_shapes(build_model(cfg, num_points=nx, rngs=nnx.Rngs(0)))
    new = param_shapes(build_model(_cfg("model.latent_dim=16"), num_points=nx, rngs=nnx.Rngs(0)))
    # the first differing parameter among the modules the first (finished) stage trained: a finished stage hands on
    # only those, so only those are compared (training/checkpoint_layout.py)
    trained = tuple(cfg.stages[cfg.stage_order[0]].trainable)
    path = next(p for p in sorted(set(old) & set(new)) if old[p] != new[p] and p.split("/")[0] in trained)
    assert f"'{path}'" in msg and str(old[path]) in msg and str(new[path]) in msg, msg
    assert "model.latent_dim" in msg


def test_train_into_a_workdir_of_other_data_is_refused(run_dir, burgers_dir):
    wd, _, _ = run_dir
    before = _snapshot(wd)
    proc = _cli("ups_jax.train", "--config", f"{CONFIG}:test", "--workdir", wd, "--data",
                burgers_dir / "1D_Burgers_Sols_Nu0.1.hdf5")
    _assert_one_line_error(proc, "different dataset", "--fresh")
    assert _snapshot(wd) == before


def test_fresh_sets_the_old_run_aside_and_trains_anew(run_dir, tmp_path, burgers_file, monkeypatch):
    from ups_jax import train as train_cli
    from ups_jax.training import pipeline
    from ups_jax.training.pipeline import train_and_evaluate

    ref, cfg, _ = run_dir
    wd = tmp_path / "w"
    shutil.copytree(ref, wd)
    old_steps = {s: _steps_on_disk(wd, s) for s in cfg.stage_order}
    old_metrics = (wd / "metrics.jsonl").read_text()
    old_eval = (wd / "eval" / "test.json").read_text()
    # trains anew (stopped after one step to save time: a resumed run would have skipped the finished stages)
    train_and_evaluate(_cfg(), wd, data_paths=[burgers_file], fresh=True, max_steps=1)
    (old,) = list(wd.glob("old-*"))
    assert (old / "metrics.jsonl").read_text() == old_metrics
    assert (old / "eval" / "test.json").read_text() == old_eval
    for stage, steps in old_steps.items():
        assert _steps_on_disk(old, stage) == steps
    first = cfg.stage_order[0]
    assert _steps_on_disk(wd, first) == [1]
    assert not (wd / "eval").exists()
    kinds = [r["kind"] for r in _records(wd)]
    assert kinds[0] == "run_start" and kinds.count("run_start") == 1
    assert "stage_skip" not in kinds and "resume" not in kinds and "train" in kinds

    # and the command line's --fresh reaches train_and_evaluate
    seen = {}
    monkeypatch.setattr(pipeline, "train_and_evaluate", lambda cfg, workdir, **kw: seen.update(kw, workdir=workdir))
    argv = ["--config", f"{CONFIG}:test", "--workdir", str(wd), "--data", str(burgers_file)]
    assert train_cli.main(argv + ["--fresh"]) == 0 and seen["fresh"] is True and seen["workdir"] == str(wd)
    assert train_cli.main(argv) == 0 and seen["fresh"] is False


# ----------------------------------------------------------------------------------------------- 10. GPU -> CPU
def test_checkpoint_from_another_device_restores_onto_this_one(run_dir, tmp_path):
    """Rewrites a run's orbax sharding files to say 'cuda:0' (a checkpoint written on a GPU): restoring without
    an explicit target sharding fails with a topology mismatch; our restore (and evaluate's load_run) works and
    gives the same arrays, placed on this machine's device."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from ups_jax.models import build_model
    from ups_jax.training import checkpoints as ckpt
    from ups_jax.training.loop import abstract_opt_state, param_dict
    from ups_jax.training.optim import make_optimizer
    from ups_jax.training.restore import load_run

    ref, cfg, _ = run_dir
    wd = tmp_path / "gpu_run"
    shutil.copytree(ref, wd, ignore=shutil.ignore_patterns("eval"))
    n = 0
    for f in wd.rglob("_sharding"):
        text = f.read_text()
        assert "cpu:0" in text
        f.write_text(text.replace("cpu:0", "cuda:0"))
        n += 1
    assert n
    stage = cfg.stage_order[-1]
    step = _steps_on_disk(wd, stage)[0]
    model = build_model(cfg, num_points=16, rngs=nnx.Rngs(0))
    like = param_dict(model)

    mngr = ckpt.open_manager(wd, stage, read_only=True)
    bare = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
    with pytest.raises(ValueError, match="(?i)topology"):
        mngr.restore(step, args=ocp.args.Composite(ema=ocp.args.StandardRestore(bare)))
    opt_like = abstract_opt_state(model, tuple(cfg.stages[stage].trainable), make_optimizer(cfg.stages[stage]))
    got = ckpt.restore(mngr, step, params_like=like, opt_state_like=opt_like, items=("params", "ema", "opt", "state"))
    mngr.close()
    want = _restore_items(ref, stage, step, ("params", "ema", "state"))
    _assert_trees_equal(got["params"], want["params"])
    _assert_trees_equal(got["ema"], want["ema"])
    assert got["state"] == want["state"]
    assert jax.tree.structure(got["opt"]) == jax.tree.structure(opt_like)
    for leaf in jax.tree.leaves(got):
        if isinstance(leaf, jax.Array):
            assert leaf.devices() == {jax.devices()[0]}

    # the evaluation path restores the GPU-written run too
    _, _, m, st, best = load_run(wd)
    _, _, m_ref, _, best_ref = load_run(ref)
    assert st == stage and best == best_ref
    _assert_trees_equal(param_dict(m), param_dict(m_ref))
