"""The stages after the operator (corrector, student, steady prior), the whole :test pipeline with the FNO
baseline and the comparison table, stage selection and teacher checks, and ``python -m ups_jax.infer``.

Runtime: the session's end-to-end run of ``configs/burgers32.py:test`` (``trained_run``: every stage, the baseline,
the table), shared by the integration and inference tests; the unit tests train tiny refiners on one fixed batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "burgers32.py")
ROWS = ["operator", "+corrector", "+student", "+TTC(default)", "FNO", "persistence"]


def _cfg(*overrides):
    from ups_jax.config import load_config

    return load_config(f"{CONFIG}:test", list(overrides))


# ------------------------------------------------------------------------------------------ unit: refiners
@pytest.fixture(scope="module")
def tiny():
    """A :test model on a 16-cell grid and one fixed batch of advected sine waves (normalised units)."""
    from ups_jax.models import build_model

    cfg = _cfg()
    model = build_model(cfg, 16, seed=0)
    x = (np.arange(16) + 0.5) / 16
    k = np.arange(1, 9)[:, None, None] % 3 + 1
    t = np.arange(3)[None, :, None] * 0.05
    u = np.sin(2 * np.pi * k * (x[None, None] - 0.3 * t)) * np.exp(-t)
    batch = {"u": jnp.asarray(u, jnp.float32), "dt": jnp.full((8,), 0.05), "nu": jnp.full((8,), 0.01)}
    return cfg, model, jnp.asarray(x, jnp.float32), batch


def _fit(model, name, loss_fn, batch, steps, lr, eval_keys, train_keys=None):
    """Adam on submodule ``name`` only (the others are frozen teachers); returns (loss before, after) averaged
    over the fixed ``eval_keys`` (noise, levels, pushforward depths). Training draws fresh keys, or cycles
    ``train_keys``."""
    from ups_jax.training.loop import trainable_filter

    graphdef, params, rest = nnx.split(model, trainable_filter((name,)), ...)
    tx = optax.adam(lr)

    def loss(p, key):
        return loss_fn(nnx.merge(graphdef, p, rest), batch, key)[0]

    @jax.jit
    def step(p, opt, key):
        val, g = jax.value_and_grad(loss)(p, key)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt

    mean_loss = jax.jit(lambda p: jnp.mean(jax.vmap(lambda k: loss(p, k))(eval_keys)))
    before = float(mean_loss(params))
    opt = tx.init(params)
    keys = jax.random.split(jax.random.key(1), steps) if train_keys is None else \
        [train_keys[i % len(train_keys)] for i in range(steps)]
    for key in keys:
        params, opt = step(params, opt, key)
    nnx.update(model, params)
    return before, float(mean_loss(params))


def test_corrector_training_reduces_its_denoising_loss(tiny):
    from ups_jax.training.refiner_losses import make_corrector_loss

    cfg, model, x01, batch = tiny
    loss_fn = make_corrector_loss(x01=x01, context_frames=1, pushforward_steps=1)
    before, after = _fit(model, "corrector", loss_fn, batch, 150, 3e-3, jax.random.split(jax.random.key(7), 16))
    assert after < 0.5 * before, (before, after)


def test_student_matches_its_teacher_on_fixed_inputs_after_training(tiny):
    from ups_jax.models.corrector import copy_weights
    from ups_jax.training.refiner_losses import make_student_loss, pushforward_pairs

    cfg, model, x01, batch = tiny
    assert model.student.calls == 1 and model.corrector.calls == 3
    loss_fn = make_student_loss(x01=x01, context_frames=1, pushforward_steps=1)
    graphdef, _ = nnx.split(model)

    @jax.jit
    def rel_error(state, key):   # the fixed inputs: pushforward states and level-0 noise drawn from ``key``
        m = nnx.merge(graphdef, state)
        r_p, r_n = jax.random.split(key)
        z_t, z_pred, _ = pushforward_pairs(m, batch, r_p, x01=x01, context_frames=1, pushforward_steps=1)
        args = (z_t, z_pred, batch["dt"], batch["nu"], jax.random.normal(r_n, z_pred.shape))
        t, s = m.corrector.clean_estimate(*args), m.student.clean_estimate(*args)
        return jnp.linalg.norm(s - t) / jnp.linalg.norm(t)

    copy_weights(model.corrector, model.student)          # as the student stage starts
    keys = jax.random.split(jax.random.key(3), 4)
    start = max(float(rel_error(nnx.state(model), k)) for k in keys)
    _fit(model, "student", loss_fn, batch, 300, 1e-3, keys, train_keys=keys)
    end = max(float(rel_error(nnx.state(model), k)) for k in keys)
    # measured after the corrector test trained the shared model: 0.43 → 0.065 in 300 steps (150 steps reached
    # 0.105 with the fused-attention parameter layout's initial draws, 0.048 with the old layout's)
    assert end < 0.1 and end < start / 3, (start, end)


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def full_run(trained_run):
    """The session's :test run (tests/conftest.py): every stage of :test, the FNO baseline and the table."""
    wd, _, results = trained_run
    return wd, results


def test_test_config_runs_every_stage_and_ends_with_the_table(full_run):
    from ups_jax.training.stages import stage_finished

    wd, results = full_run
    cfg = _cfg()
    assert list(cfg.stage_order) == ["codec", "operator", "corrector", "student", "steady"]
    assert list(results["stages"]) == list(cfg.stage_order)
    assert all(stage_finished(wd, s) for s in cfg.stage_order)
    assert stage_finished(wd / "baselines" / "fno", "fno")
    table = json.loads((wd / "eval" / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ROWS
    K = cfg.model.corrector.refine_steps
    evals = {r["row"]: r["evaluations_per_step"] for r in table["rows"]}
    assert evals["operator"] == 2 and evals["+corrector"] == K + 3 and evals["+student"] == 3
    for r in table["rows"]:
        for block in ("protocol", "full_horizon"):
            assert np.isfinite(r[block]["nrmse"]) and r[block]["nrmse"] > 0, (r["row"], block)
        assert r["wall_s_per_trajectory"] >= 0
    ttc = next(r for r in table["rows"] if r["row"].startswith("+TTC"))["ttc"]
    assert ttc["budget"] == 100 and ttc["evaluations_per_step_max"] <= 100
    assert ttc["evaluations_per_step_max"] == 18        # :test's preset: beam 2 × (1 + 4 candidates × (1 + 1))
    assert evals["+TTC(default)"] == 19                 # + the decode of the chosen state
    steady = table["steady"]
    assert [r["row"] for r in steady["rows"]] == ["steady prior", "operator rollout (final step)",
                                                  "persistence (initial state)"]
    md = (wd / "eval" / "table.md").read_text()
    assert "| +TTC(default) |" in md and "| FNO |" in md and "steady prior" in md
    # the operator row is the same evaluation as eval/test.json (the evaluation's own result dicts)
    test_json = json.loads((wd / "eval" / "test.json").read_text())
    assert table["rows"][0]["protocol"]["nrmse"] == pytest.approx(test_json["model"]["nrmse"])


def _train_cli(*args) -> int:
    from ups_jax.train import main

    return run_cli(main, [str(a) for a in args])


def _error_line(err: str) -> str:
    """The one ``error:`` line of a refused command (preflight warnings, e.g. the :test grid's Nyquist, may
    precede it); it must be the last line."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def test_baseline_gets_this_runs_seed_data_and_protocol_but_its_own_model():
    from ups_jax.training.pipeline import baseline_config

    cfg = _cfg("seed=2", "eval.initial_step=5", "data.test_fraction=0.3")
    bcfg = baseline_config(cfg, cfg.baseline.config)
    assert bcfg.seed == 2 and bcfg.model.kind == "fno" and bcfg.stage_order == ("fno",)
    assert bcfg.data.to_dict() == cfg.data.to_dict() and bcfg.eval.initial_step == 5
    assert bcfg.eval.ttc_preset == "" and bcfg.baseline.config == ""


def test_stage_without_its_trained_teacher_is_refused_before_anything_is_written(tmp_path, burgers_file, capsys):
    wd = tmp_path / "run"
    code = _train_cli("--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file,
                      "--config.stages=corrector")
    err = _error_line(capsys.readouterr().err)
    assert code == 2, err
    assert "stage 'corrector' needs the trained encoder" in err and "stage 'codec' has no finished checkpoint" in err
    assert not (wd / "config.json").exists() and not (wd / "checkpoints").exists()
    assert _train_cli("--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file,
                      "--stages", "codec,diffusion") == 2
    assert "--stages names 'diffusion'" in capsys.readouterr().err


def test_teacher_checkpoint_of_another_architecture_is_refused(full_run, burgers_file, capsys):
    wd, _ = full_run
    before = sorted(str(p) for p in (wd / "checkpoints").rglob("*"))
    code = _train_cli("--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file,
                      "--config.model.corrector.hidden_dim=32", "--stages", "student")
    err = _error_line(capsys.readouterr().err)
    assert code == 2 and "corrector/" in err and "model.corrector" in err, err
    assert sorted(str(p) for p in (wd / "checkpoints").rglob("*")) == before


# ------------------------------------------------------------------------------------------ infer
def _infer(*args) -> int:
    from ups_jax.infer import main

    return run_cli(main, [str(a) for a in args])


def _read(path):
    from ups_jax.data.pdebench import PDEBenchDataset

    ds = PDEBenchDataset([path])
    try:
        return ds.read(np.arange(ds.num_trajectories)), ds
    finally:
        ds.close()


def test_infer_round_trips_pdebench_layout(full_run, burgers_file, tmp_path):
    wd, _ = full_run
    cfg = _cfg()
    reference, ref_ds = _read(burgers_file)
    given = reference[:, ::cfg.data.reduced_resolution_t, ::cfg.data.reduced_resolution]   # the training grid
    out = tmp_path / "pred.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 5, "--out", out) == 0
    pred, ds = _read(out)
    assert pred.shape == (12, 6, 16) and ds.dt == pytest.approx(0.05) and float(ds.nu[0]) == pytest.approx(0.01)
    np.testing.assert_allclose(ds.x, ref_ds.x[::cfg.data.reduced_resolution], atol=1e-6)
    np.testing.assert_array_equal(pred[:, 0], given[:, 0])
    # the output is a valid input: continue from its last frame; and a .npy of the same states gives the same
    out2 = tmp_path / "more.h5"
    assert _infer("--workdir", wd, "--input", out, "--frame", 5, "--steps", 5, "--out", out2) == 0   # compiled
    assert _read(out2)[0].shape == (12, 6, 16)
    np.save(tmp_path / "u0.npy", given[:, 0])
    out3 = tmp_path / "npy.h5"
    assert _infer("--workdir", wd, "--input", tmp_path / "u0.npy", "--nu", 0.01, "--steps", 5, "--out", out3) == 0
    np.testing.assert_allclose(_read(out3)[0], pred, rtol=1e-5, atol=1e-6)


def test_infer_super_resolution_ttc_and_steady(full_run, burgers_file, tmp_path):
    """Known answers: output at query points that are the training grid's cell centres is the ordinary
    prediction (the decoder is read at those points); the TTC's logged reward of each chosen step is the reward of
    the frames it wrote; the steady prior's written state scores the comparison table's final-frame nRMSE."""
    from ups_jax.inference.rewards import reward

    wd, _ = full_run
    cfg = _cfg()
    reference, _ = _read(burgers_file)
    given = reference[:, ::cfg.data.reduced_resolution_t, ::cfg.data.reduced_resolution]
    plain, fine, at_grid = tmp_path / "plain.h5", tmp_path / "fine.h5", tmp_path / "grid.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--refine", "student", "--out", plain) == 0
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--nx-out", 64, "--refine", "student",
                  "--out", fine) == 0
    pred, ds = _read(fine)
    assert pred.shape == (12, 4, 64) and np.all(np.isfinite(pred))
    np.testing.assert_allclose(ds.x, -1 + (np.arange(64) + 0.5) * 2 / 64, atol=1e-6)
    coarse, coarse_ds = _read(plain)
    np.save(tmp_path / "x.npy", np.asarray(coarse_ds.x))
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--x-query", tmp_path / "x.npy",
                  "--refine", "student", "--out", at_grid) == 0
    np.testing.assert_allclose(_read(at_grid)[0][:, 1:], coarse[:, 1:], rtol=1e-5, atol=1e-5)

    ttc = tmp_path / "ttc.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--ttc", "default", "--out", ttc) == 0
    log = json.loads(Path(str(ttc) + ".ttc.json").read_text())
    assert max(max(b) for b in log["evaluations_per_step"]) <= 100
    chosen = np.array(log["chosen_reward"])
    assert chosen.shape == (12, 3)
    frames = jnp.asarray(_read(ttc)[0], jnp.float32)            # frame 0 is the given frame, 1.. the chosen path
    mean_ref = jnp.mean(jnp.asarray(given[:, 0], jnp.float32), -1)
    weights = dict(cfg.ttc.weights)
    for t in (1, 2):           # step 0 is scored against the decoded given frame, which is not written
        want = np.asarray(reward(frames[:, t + 1], frames[:, t], mean_ref, weights))
        np.testing.assert_allclose(chosen[:, t], want, rtol=1e-3, atol=1e-5)

    steady = tmp_path / "steady.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--mode", "steady", "--out", steady) == 0
    state = _read(steady)[0]
    assert state.shape == (12, 2, 16)
    table = json.loads((wd / "eval" / "table.json").read_text())["steady"]
    n = table["n_trajectories"]                         # the test split: the first trajectories of the file
    final = given[:n, -1]
    got = np.mean(np.sqrt(np.mean((state[:n, 1] - final) ** 2, -1)) / np.sqrt(np.mean(final ** 2, -1)))
    want = [r["final_nrmse"] for r in table["rows"] if r["row"] == "steady prior"][0]
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("case,needle", [
    ("grid", "17 cells but the model was trained on 16"),
    ("channels", "2 channels but the model has 1"),
    ("preset", "unknown TTC preset 'turbo'"),
    ("exists", "already exists; choose another --out"),
    ("h5 grid", "40 cells but the model was trained on 16 (or a grid it was reduced from by an integer factor)"),
    ("h5 x", "x-coordinate (every 4th of 64 cells) differs from the training grid (16 points on"),
])
def test_infer_bad_input_is_one_line_exit_2_and_writes_nothing(full_run, burgers_file, tmp_path, capsys, case,
                                                                needle):
    wd, _ = full_run
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 16), np.float32) + 0.1)
    if case.startswith("h5"):   # PDEBench layout from the training file: 40 cells, or 64 cells on a shifted grid
        import h5py

        with h5py.File(burgers_file, "r") as f:
            u, x, t, nu = f["tensor"][:2], f["x-coordinate"][()], f["t-coordinate"][()], f.attrs["Nu"]
        if case == "h5 grid":
            u, x = u[..., :40], x[:40]
        else:
            x = x + 0.25 * (x[1] - x[0])
        good = tmp_path / "good.h5"
        with h5py.File(good, "w") as f:
            f["tensor"], f["x-coordinate"], f["t-coordinate"] = u, x, t
            f.attrs["Nu"] = nu
    args = ["--workdir", wd, "--input", good, "--nu", 0.01, "--steps", 2]
    out = tmp_path / "out.h5"
    if case == "grid":
        np.save(good, np.zeros((2, 17), np.float32))
    elif case == "channels":
        np.save(good, np.zeros((2, 1, 16, 2), np.float32))
    elif case == "preset":
        args += ["--ttc", "turbo"]
    elif case == "exists":
        out.write_text("keep me")
    assert _infer(*args, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert (out.read_text() == "keep me") if case == "exists" else not out.exists()
