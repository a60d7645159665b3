"""The compiled train step of issue 16 (training/step.py): N updates per dispatch on flat donated state and the
device-resident split change speed, not results; the select-based NaN guard; the config checks of
``runtime.steps_per_dispatch``; the checkpoint format; the HLO counting of benchmarks/gpu_throughput.py."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_training import LOOP, ROOT, _StageHarness, _records, _restore_items

from ups_jax.errors import CheckpointError
from ups_jax.training.loop import LoopOptions

SIX = ("stages.codec.steps=6", "stages.codec.eval_every=3", "stages.codec.log_every=3")


def _run(tmp_path, burgers_file, tag, *, resident, steps_per_dispatch, overrides=SIX):
    h = _StageHarness(burgers_file, *overrides, resident=resident)
    h.run(tmp_path / tag, options=LoopOptions(steps_per_dispatch=steps_per_dispatch))
    items = _restore_items(tmp_path / tag, "codec", 6, ("params", "ema"), nx=h.data.dataset.nx)
    losses = [r["loss"] for r in _records(tmp_path / tag) if r["kind"] == "train"]
    return items, losses


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_steps_per_dispatch_and_resident_data_change_speed_not_results(tmp_path, burgers_file):
    """The same windows in the same order and the RNG from the step index: host batches one update per dispatch,
    device-resident windows one per dispatch, and three per dispatch end at the same weights (to float rounding:
    XLA may fuse a scanned body differently) with the same logged losses."""
    host1, loss_h = _run(tmp_path, burgers_file, "host1", resident=False, steps_per_dispatch=1)
    dev1, loss_1 = _run(tmp_path, burgers_file, "dev1", resident=True, steps_per_dispatch=1)
    dev3, loss_3 = _run(tmp_path, burgers_file, "dev3", resident=True, steps_per_dispatch=3)
    assert len(loss_h) == len(loss_1) == len(loss_3) == 2
    np.testing.assert_allclose(loss_1, loss_h, rtol=1e-5)
    np.testing.assert_allclose(loss_3, loss_1, rtol=1e-5)
    for other in (dev1, dev3):
        for item in ("params", "ema"):
            assert _max_diff(host1[item], other[item]) < 1e-5
    # and the training moved the weights (the comparison above is not between two untouched models)
    fresh = _StageHarness(burgers_file, *SIX)
    from ups_jax.training.loop import param_dict

    assert _max_diff(param_dict(fresh.model), host1["params"]) > 1e-3


def test_nan_guard_skips_inside_a_dispatch_and_counts(tmp_path, burgers_file):
    """A non-finite loss on updates 2 and 3 of a 3-update dispatch: both skipped, counted in the train record,
    and the run goes on with finite losses (the select keeps weights, EMA and optimizer state)."""
    import jax.numpy as jnp

    from ups_jax.data.loader import WindowLoader

    h = _StageHarness(burgers_file, *SIX, resident=True)
    # the same loader order, read ahead: the first window of updates 2 and 3 marks them
    probe = WindowLoader(h.data.dataset, h.data.splits["train"], window=h.loader.window,
                         batch_size=h.loader.batch_size, seed=h.loader.seed, prefetch=0)
    marks = jnp.stack([h.data.prepare_batch(next(probe))["u"][0] for _ in range(3)][1:])
    inner = h.spec.loss_fn

    def poisoned(model, batch, rng):
        loss, terms = inner(model, batch, rng)
        hit = jnp.any(jnp.all(batch["u"][0][None] == marks, axis=(1, 2)))
        return jnp.where(hit, jnp.nan, loss), terms

    h.spec.loss_fn = poisoned
    h.run(tmp_path, options=LoopOptions(steps_per_dispatch=3))
    recs = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert [r["skipped_steps"] for r in recs] == [2, 0]
    assert [r["nonfinite_total"] for r in recs] == [2, 2]
    assert all(np.isfinite(r["loss"]) for r in recs)


@pytest.mark.parametrize("value, message", [
    (4, "runtime.steps_per_dispatch=4 does not divide stages.codec.steps=6"),
    (7, "runtime.steps_per_dispatch=7 is larger than stage codec (6 steps)"),
    (0, "runtime.steps_per_dispatch=0 must be 'auto' or a positive integer"),
    ("many", "runtime.steps_per_dispatch='many' must be 'auto' or a positive integer"),
])
def test_steps_per_dispatch_that_does_not_fit_is_refused_in_one_line(value, message):
    from ups_jax.dispatch import steps_per_dispatch_problem
    from test_training import _cfg

    cfg = _cfg(*SIX)
    assert steps_per_dispatch_problem(value, "codec", cfg.stages.codec).startswith(message)
    assert steps_per_dispatch_problem("auto", "codec", cfg.stages.codec) is None
    assert steps_per_dispatch_problem(3, "codec", cfg.stages.codec) is None


def test_auto_steps_per_dispatch_divides_every_cadence():
    from ups_jax.config import load_config
    from ups_jax.dispatch import auto_steps_per_dispatch

    cfg = load_config(str(ROOT / "configs" / "burgers32.py"))
    assert auto_steps_per_dispatch(cfg.stages.operator) == 25          # 6000 steps, log 50, eval 250
    cpu = load_config(str(ROOT / "configs" / "burgers32.py") + ":cpu")
    assert auto_steps_per_dispatch(cpu.stages.operator) == 25          # 3000, log 100, eval 600
    assert auto_steps_per_dispatch(cpu.stages.operator, checkpoint_every_steps=30) == 10
    fno = load_config(str(ROOT / "configs" / "fno_burgers.py") + ":cpu")
    assert auto_steps_per_dispatch(fno.stages.fno) == 21                # 315, log 21, eval 63


def test_the_train_command_refuses_a_steps_per_dispatch_that_does_not_divide(tmp_path, burgers_file):
    p = subprocess.run([sys.executable, "-m", "ups_jax.train", "--config", str(ROOT / "configs/burgers32.py") + ":test",
                        "--workdir", str(tmp_path / "run"), "--data", str(burgers_file),
                        "--config.runtime.steps_per_dispatch=4"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [x for x in p.stderr.strip().splitlines() if not x.startswith("warning:")]
    assert len(errors) == 1 and "runtime.steps_per_dispatch=4 does not divide stages.codec.steps=6" in errors[0]
    assert not (tmp_path / "run").exists()


def test_a_stage_compiles_everything_at_its_start_and_logs_no_recompile(tmp_path, burgers_file):
    """The loop compiles the validation (on one padded batch), the checkpoint's and the log's programs right after
    the first dispatch and arms the recompile watch there: a real stage then compiles nothing more (its validations
    and checkpoints included), so no "compiled again" line. Without the persistent cache (a cache hit is not a
    compile, and would hide a false line)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE") and
           k != "JAX_COMPILATION_CACHE_DIR"}
    p = subprocess.run([sys.executable, "-m", "ups_jax.train", "--config", str(ROOT / "configs/burgers32.py") + ":test",
                        "--workdir", str(tmp_path / "run"), "--data", str(burgers_file),
                        "--config.runtime.compilation_cache=", "--config.stage_order=('codec',)",
                        "--config.baseline.config=", "--config.eval.ttc_preset="],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert any(r["kind"] == "val" for r in _records(tmp_path / "run"))   # it validated and checkpointed
    assert "[codec] compiled: the first dispatch" in p.stderr + p.stdout
    assert "compiled again" not in p.stderr + p.stdout


def test_a_compile_after_stage_start_is_logged_as_a_recompile(tmp_path, burgers_file, caplog):
    """A validation that calls a compiled function with a new shape every time: its stage-start warm-up compiles
    the first shape, and each real validation (steps 3 and 6) compiles again, which the watch reports once each."""
    import logging

    h = _StageHarness(burgers_file, *SIX, resident=True)
    double = jax.jit(lambda x: 2 * x)
    calls = []

    def validate(model):
        calls.append(None)
        return {"val/crafted": float(np.asarray(double(np.zeros(len(calls), np.float32))).sum()) + 1.0}  # 1 program

    h.spec.validate = validate
    with caplog.at_level(logging.INFO):
        h.run(tmp_path, options=LoopOptions(steps_per_dispatch=3))
    assert len(calls) == 3                                    # the warm-up, then steps 3 and 6
    lines = [r.getMessage() for r in caplog.records if "compiled again" in r.getMessage()]
    assert len(lines) == 2 and all(x.startswith("stage codec: 1 program(s) compiled again") for x in lines)
    assert any(r.getMessage().startswith("[codec] compiled: the first dispatch") for r in caplog.records)


def test_a_checkpoint_of_the_old_train_state_format_is_refused_with_the_reason():
    from ups_jax.training.checkpoints import check_format

    where = "run/checkpoints/operator/6"
    check_format({"format": 3}, where)
    for state, found in (({"step": 6}, 1), ({"format": 2}, 2)):          # format 1 wrote no 'format' key
        with pytest.raises(CheckpointError) as e:
            check_format(state, where, {"decoder/layers/0/attn/qkv/kernel": (16, 48)})
        assert str(e.value) == (
            f"{where}: written with train-state format {found}, this ups_jax reads format 3 (format 2 made the "
            f"optimizer state one flat vector and fused the operator's q/k/v and AdaLN projections, format 3 fused "
            f"the decoder's q/k/v projections; older layouts are not converted); retrain with --fresh (the old run "
            f"is set aside) or use another --workdir")
    # format 3 changed only the decoder's attention: a model without it (:cpu, ns2d, the FNO) reads format 2
    check_format({"format": 2}, where, {"decoder/head/fc1/kernel": (16, 16), "operator/x": (2,)})
    with pytest.raises(CheckpointError):
        check_format({"step": 6}, where, {"decoder/head/fc1/kernel": (16, 16)})


def test_evaluate_and_infer_refuse_a_run_of_the_previous_format_in_one_line(tmp_path, trained_run):
    """A finished :test run (its decoder has an attention layer) whose checkpoints say format 2: ``evaluate`` and
    ``infer`` stop with the format line (exit 2), not with a list of parameter names."""
    import re
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(trained_run[0], workdir)
    for state in workdir.glob("checkpoints/*/*/state/*"):
        if state.is_file() and '"format": 3' in state.read_text():
            state.write_text(state.read_text().replace('"format": 3', '"format": 2'))
    data = trained_run[1].data.paths[0]
    commands = [["-m", "ups_jax.evaluate", "--workdir", str(workdir)],
                ["-m", "ups_jax.infer", "--workdir", str(workdir), "--input", str(data),
                 "--out", str(tmp_path / "pred.h5"), "--steps", "2"]]
    for args in commands:
        p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, (args, p.stderr[-2000:])
        errors = [x for x in p.stderr.strip().splitlines() if not x.startswith("warning:")]
        assert len(errors) == 1 and re.search(r"checkpoints/codec/\d+: written with train-state format 2, this "
                                              r"ups_jax reads format 3 \(", errors[0]), errors
    assert not (tmp_path / "pred.h5").exists()


HLO = """HloModule jit_f

%fused_computation (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %s = f32[4]{0} sine(f32[4]{0} %p)
  ROOT %m = f32[4]{0} multiply(f32[4]{0} %s, f32[4]{0} %s)
}

%body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element((s32[], f32[4]{0}) %t), index=0
  %x = f32[4]{0} get-tuple-element((s32[], f32[4]{0}) %t), index=1
  %f = f32[4]{0} fusion(f32[4]{0} %x), kind=kLoop, calls=%fused_computation
  %one = s32[] constant(1)
  %n = s32[] add(s32[] %i, s32[] %one)
  ROOT %r = (s32[], f32[4]{0}) tuple(s32[] %n, f32[4]{0} %f)
}

%cond (t: (s32[], f32[4])) -> pred[] {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element((s32[], f32[4]{0}) %t), index=0
  %k = s32[] constant(3)
  ROOT %lt = pred[] compare(s32[] %i, s32[] %k), direction=LT
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %z = s32[] constant(0)
  %c = f32[4]{0} copy(f32[4]{0} %a)
  %t0 = (s32[], f32[4]{0}) tuple(s32[] %z, f32[4]{0} %c)
  %w = (s32[], f32[4]{0}) while((s32[], f32[4]{0}) %t0), condition=%cond, body=%body
  ROOT %out = f32[4]{0} get-tuple-element((s32[], f32[4]{0}) %w), index=1
}
"""


def test_hlo_kernel_count_follows_control_flow_not_fusion_bodies():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_throughput import _opcode, count_instructions, count_kernels

    assert _opcode("%w = (s32[], f32[4]{0}) while((s32[], f32[4]{0}) %t0), condition=%cond, body=%body") == "while"
    assert _opcode("ROOT %m = f32[4]{0} multiply(f32[4]{0} %s, f32[4]{0} %s)") == "multiply"
    # entry: copy; body: fusion, add; cond: compare (sine/multiply live in the fusion: one kernel)
    assert count_kernels(HLO) == 4
    assert count_instructions(HLO) == 3 + 7 + 4 + 6
    # executed: the loop's kernels once per iteration when XLA knows the trip count (1 + 3·(2 + 1)), else once
    assert count_kernels(HLO, executed=True) == 4
    known = HLO.replace("body=%body", 'body=%body, backend_config={"known_trip_count":{"n":"3"}}')
    assert count_kernels(known) == 4 and count_kernels(known, executed=True) == 1 + 3 * (2 + 1)


def test_gpu_throughput_prints_rows_and_refuses_an_unknown_row(tmp_path):
    script = str(ROOT / "benchmarks" / "gpu_throughput.py")
    p = subprocess.run([sys.executable, script, "--rows", "nope"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "nope" in p.stderr
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, script, "--rows", "test-config", "--seconds", "0.3", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["steps_per_dispatch"] for r in rows] == [1, 1]            # :test's cadences (2, 3) allow only 1
    assert all(r["row"] == "stage" and r["updates_per_s"] > 0 for r in rows)
    printed = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert printed == json.loads(out.read_text())


def test_a_validation_warmed_on_one_batch_compiles_nothing_for_the_next_batches():
    """The loop warms the validation on one padded batch; the real one runs more batches (e.g. 51 val
    trajectories in batches of 50). Their noise keys start at another trajectory index: that must not compile a
    program of its own (``jnp.arange(50, 100)`` did: a recompile line in every :cpu FNO run)."""
    from flax import nnx

    from test_training import _cfg
    from ups_jax.compilation import compiles
    from ups_jax.eval.rollout import Rollout
    from ups_jax.models import build_model

    cfg = _cfg()
    nx = int(cfg.data.generate.nx) // int(cfg.data.reduced_resolution)
    model = build_model(cfg, num_points=nx, rngs=nnx.Rngs(0))
    rollout = Rollout(model, norm={"mean": 0.0, "std": 1.0}, x01=np.arange(nx) / nx, batch_size=2)
    given = np.random.default_rng(0).normal(size=(5, 1, nx)).astype(np.float32)
    first = rollout(given[:1], 0.01, 0.05, 3)                      # the warm-up: one batch, padded
    before = compiles()[0]
    rest = rollout(given, 0.01, 0.05, 3)                           # three batches, from trajectories 0, 2, 4
    assert compiles()[0] == before
    np.testing.assert_array_equal(rest[:1], first)                 # a trajectory's prediction: batch-independent
