"""The corrector in physical space (``model.corrector.kind='field'``, models/field_corrector.py; issue 19 item 2):
its rollout state (z, û), its stage (pushforward pairs of the corrected rollout), TTC and ``infer`` with it, and the
refusals (a student of it, a checkpoint of the other kind, off-grid output).

Runtime: unit tests on a 16-cell :test model; the pipeline tests copy the session's :test run (``trained_run``)
and train only the field corrector stage on it (6 updates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "burgers32.py")
FIELD = ("--config.model.corrector.kind=field", "--config.stage_order=codec,operator,corrector,steady")


def _cfg(*overrides):
    from ups_jax.config import load_config

    return load_config(f"{CONFIG}:test", list(overrides))


def _model(state="carry", h=1):
    from ups_jax.models import build_model

    cfg = _cfg("model.corrector.kind=field", f"model.corrector.field.state={state}", f"model.context_frames={h}")
    return cfg, build_model(cfg, 16, seed=0)


def _inputs(h=1, b=3):
    x01 = jnp.asarray((np.arange(16) + 0.5) / 16, jnp.float32)
    u = jax.random.normal(jax.random.key(0), (b, h, 16))
    return x01, u, jnp.full((b,), 0.05), jnp.full((b,), 0.01)


def _randomise_output(model):
    """The CNN's last layer starts at zero (û = D(z')); give it weights so the correction is not zero."""
    out = model.corrector.cnn.out
    out.kernel.value = 0.1 * jax.random.normal(jax.random.key(5), out.kernel.value.shape)


# ------------------------------------------------------------------------------------------ the rollout
def test_untrained_field_corrector_leaves_the_operators_rollout_unchanged():
    """Zero at init: state 'carry' gives the operator's latent rollout decoded; 'encode' (z = E(û)) gives the
    re-encoding rollout (decode → encode every step), the known answer of variant (a) with û = D(z')."""
    for state, mode in (("carry", "latent"), ("encode", "reencode")):
        _, model = _model(state)
        x01, u, dt, nu = _inputs()
        corrected = model.rollout_fields(u, dt, nu, x01, 6, refine="corrector", rng=jax.random.key(0))
        plain = model.rollout_fields(u, dt, nu, x01, 6, mode=mode)
        np.testing.assert_allclose(np.asarray(corrected), np.asarray(plain), rtol=0, atol=2e-6)
        assert float(jnp.max(jnp.abs(model.corrector.correction(u[:, 0], u[:, 0], nu)))) == 0.0


@pytest.mark.parametrize("state", ["carry", "encode"])
def test_field_rollout_is_the_hand_written_z_u_loop(state):
    """State (z, û) with h = 2 context frames: z' = F(z), d = D(z'), û' = d + C([û, d]), then z = E(window) or z'."""
    _, model = _model(state, h=2)
    _randomise_output(model)
    x01, u, dt, nu = _inputs(h=2)
    got = model.rollout_fields(u, dt, nu, x01, 4, refine="corrector", rng=jax.random.key(0))
    z, window, want = model.encode_frames(u, x01), u, []
    for _ in range(4):
        z_pred = model.operator(z, dt, nu)
        d = model.decoder(z_pred, x01)[..., 0]
        cnn_in = jnp.stack([window[:, -1], d], -1)
        u_new = d + model.corrector.cnn(cnn_in, nu)
        window = jnp.concatenate([window[:, 1:], u_new[:, None]], 1)
        z = model.encode_frames(window, x01) if state == "encode" else z_pred
        want.append(u_new)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jnp.stack(want, 1)), rtol=1e-5, atol=1e-5)
    plain = model.rollout_fields(u, dt, nu, x01, 4)
    assert float(jnp.max(jnp.abs(got - plain))) > 1e-3          # the correction is in the output


def test_field_corrector_has_no_latent_rollout_and_no_student():
    cfg, model = _model()
    assert model.student is None and model.corrector.calls == 1
    x01, u, dt, nu = _inputs()
    with pytest.raises(ValueError, match="rollout state is \\(z, û\\)"):
        model.rollout(model.encode_frames(u, x01), dt, nu, 2, refine="corrector", rng=jax.random.key(0))


def test_field_corrector_loss_trains_on_corrected_pushforward_pairs():
    """The stage's loss falls when the corrector is fitted (frozen encoder/operator/decoder), and the same pairs'
    uncorrected loss (diag) is what an untrained corrector scores."""
    import optax

    from ups_jax.training.loop import trainable_filter
    from ups_jax.training.refiner_losses import make_field_corrector_loss

    _, model = _model()
    x = (np.arange(16) + 0.5) / 16
    k = np.arange(1, 9)[:, None, None] % 3 + 1
    t = np.arange(4)[None, :, None] * 0.05
    u = np.sin(2 * np.pi * k * (x[None, None] - 0.3 * t)) * np.exp(-t)
    batch = {"u": jnp.asarray(u, jnp.float32), "dt": jnp.full((8,), 0.05), "nu": jnp.full((8,), 0.01)}
    loss_fn = make_field_corrector_loss(x01=jnp.asarray(x, jnp.float32), context_frames=1, pushforward_steps=2,
                                        rollout_loss="rel_l2", norm={"mean": 0.0, "std": 1.0})
    loss0, terms0 = loss_fn(model, batch, jax.random.key(0))
    assert float(loss0) == pytest.approx(float(terms0["diag/uncorrected"]), rel=1e-6)
    graphdef, params, rest = nnx.split(model, trainable_filter(("corrector",)), ...)
    tx = optax.adam(3e-3)
    keys = jax.random.split(jax.random.key(1), 4)

    def mean_loss(p):
        return jnp.mean(jax.vmap(lambda key: loss_fn(nnx.merge(graphdef, p, rest), batch, key)[0])(keys))

    @jax.jit
    def step(p, opt):
        upd, opt = tx.update(jax.grad(mean_loss)(p), opt, p)
        return optax.apply_updates(p, upd), opt

    before, opt = float(mean_loss(params)), tx.init(params)
    for _ in range(60):
        params, opt = step(params, opt)
    after = float(mean_loss(params))
    assert after < 0.8 * before, (before, after)      # measured: 1.26 → 0.90


def test_field_ttc_costs_and_candidates():
    from ups_jax.inference.field_ttc import correction_scales, field_step_cost
    from ups_jax.inference.ttc import make_plan

    np.testing.assert_allclose(correction_scales(4), [0, 0.5, 1, 1.5])
    np.testing.assert_allclose(correction_scales(3), [0.5, 1, 1.5])
    np.testing.assert_allclose(correction_scales(1), [1])
    assert field_step_cost(4, 3, 2, encode=False) == 9 + 12 * 3
    assert field_step_cost(4, 3, 2, encode=True) == 9 + 12 + 12 * 4
    cfg = _cfg()
    plan = make_plan(cfg.ttc, "default", 1, "corrector", kind="field")
    assert plan.evaluations_per_step == field_step_cost(plan.candidates, plan.beam_width, plan.horizon, False)


# ------------------------------------------------------------------------------------------ config refusals
def _train_cli(*args) -> int:
    from ups_jax.train import main

    return run_cli(main, [str(a) for a in args])


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def test_student_stage_with_the_field_corrector_is_refused(tmp_path, burgers_file, capsys):
    wd = tmp_path / "w"
    code = _train_cli("--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file,
                      "--config.model.corrector.kind=field")
    assert code == 2 and not wd.exists()
    assert _error_line(capsys.readouterr().err) == (
        "error: [stages] student with the field corrector: stage_order has 'student' but "
        "model.corrector.kind='field': the field corrector is one deterministic network call per step, there is "
        "nothing to distil → remove student from stage_order (e.g. "
        "--config.stage_order=operator,corrector,steady), or use model.corrector.kind='latent'")


# ------------------------------------------------------------------------------------------ on a trained run
@pytest.fixture(scope="module")
def field_run(trained_run, burgers_file, tmp_path_factory):
    """A copy of the session's :test run whose corrector stage is retrained as the field kind (the latent one's
    checkpoint removed first); returns (workdir, the latent run's copy)."""
    from ups_jax.training.stages import stage_finished

    src, _, _ = trained_run
    root = tmp_path_factory.mktemp("field_run")
    latent, wd = root / "latent", root / "field"
    shutil.copytree(src, latent)
    shutil.copytree(src, wd)
    for stage in ("corrector", "student"):
        shutil.rmtree(wd / "checkpoints" / stage)
    # eval.refine: the headline evaluation (eval/test.json) is the corrected rollout, as :cpu's
    assert _train_cli("--config", f"{CONFIG}:test", "--workdir", wd, "--data", burgers_file, *FIELD,
                      "--config.eval.refine=corrector") == 0
    assert stage_finished(wd, "corrector")
    return wd, latent


def test_field_corrector_stage_runs_in_the_pipeline_and_the_table(field_run):
    import json

    wd, _ = field_run
    rows = {r["row"]: r for r in json.loads((wd / "eval" / "table.json").read_text())["rows"]}
    assert list(rows) == ["operator", "+corrector", "+TTC(default)", "FNO", "persistence"]
    assert rows["+corrector"]["evaluations_per_step"] == 3                # operator, decoder, CNN
    ttc = rows["+TTC(default)"]["ttc"]                                     # :test's preset 4 × 2 × H1: 3·2 + 1
    assert "field corrector" in ttc["description"] and ttc["evaluations_per_step_max"] == 6
    losses = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    field = [r for r in losses if r.get("stage") == "corrector" and "loss/field" in r]
    assert field and all(np.isfinite(r["loss/field"]) for r in field)


def test_headline_evaluation_is_the_refined_rollout_named_by_eval_refine(field_run, caplog):
    """eval.refine='corrector': eval/test.json scores the operator + field corrector, the same rollout as the
    table's +corrector row; ``python -m ups_jax.evaluate`` reproduces it; a run whose corrector is not finished
    falls back to the operator alone and says so."""
    import json
    import logging

    from ups_jax.config import load_config
    from ups_jax.training.pipeline import eval_refiner, evaluate_workdir

    wd, latent = field_run
    head = json.loads((wd / "eval" / "test.json").read_text())
    rows = {r["row"]: r for r in json.loads((wd / "eval" / "table.json").read_text())["rows"]}
    assert head["predictor"] == "operator+corrector"
    assert head["model"]["nrmse"] == pytest.approx(rows["+corrector"]["protocol"]["nrmse"], rel=1e-6)
    assert head["model"]["nrmse"] != pytest.approx(rows["operator"]["protocol"]["nrmse"], rel=1e-6)
    again = evaluate_workdir(wd)
    assert again["predictor"] == "operator+corrector"
    assert again["model"]["nrmse"] == pytest.approx(head["model"]["nrmse"], rel=1e-6)
    assert evaluate_workdir(latent)["predictor"] == "operator"       # its config: eval.refine='none'
    fno = json.loads((wd / "baselines" / "fno" / "eval" / "test.json").read_text())
    assert fno["predictor"] == "fno"                                   # the baseline's own run: its model kind
    cfg = load_config(f"{CONFIG}:test", ["eval.refine=corrector"])
    with caplog.at_level(logging.INFO, logger="ups_jax.training.pipeline"):
        assert eval_refiner(cfg, {"codec", "operator"}) == "none"
    assert "stage 'corrector' is not finished: the operator alone is evaluated" in caplog.text
    assert eval_refiner(cfg, {"codec", "operator", "corrector"}) == "corrector"


def test_corrector_kind_mismatch_is_one_line_and_writes_nothing(field_run, burgers_file, capsys):
    wd, latent = field_run
    for workdir, flags, found, want in ((latent, FIELD, "latent", "field"),
                                        (wd, ("--config.model.corrector.kind=latent",), "field", "latent")):
        before = {str(p): p.stat().st_mtime for p in workdir.rglob("*")}
        code = _train_cli("--config", f"{CONFIG}:test", "--workdir", workdir, "--data", burgers_file, *flags)
        err = _error_line(capsys.readouterr().err)
        step = sorted((workdir / "checkpoints" / "corrector").glob("[0-9]*"))[-1].name
        assert code == 2 and err == (
            f"error: {workdir}/checkpoints/corrector/{step}: holds a {found} corrector but the config asks for "
            f"model.corrector.kind='{want}' (a checkpoint from before the field corrector existed is 'latent'); "
            f"pass --config.model.corrector.kind={found}, or train the {want} corrector in another --workdir "
            f"(nothing was overwritten)")
        assert {str(p): p.stat().st_mtime for p in workdir.rglob("*")} == before


def _infer(*args) -> int:
    from ups_jax.infer import main

    return run_cli(main, [str(a) for a in args])


def test_infer_and_ttc_with_the_field_corrector(field_run, burgers_file, tmp_path, capsys):
    """infer --refine corrector writes the field rollout (the evaluation's Rollout gives the same frames); --ttc
    runs the beam search over (z, û) within its budget; off-grid output is refused in one line."""
    import json

    from ups_jax.data.pdebench import PDEBenchDataset
    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    wd, _ = field_run
    out, ttc = tmp_path / "field.h5", tmp_path / "ttc.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--refine", "corrector",
                  "--out", out) == 0
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--ttc", "default", "--out", ttc) == 0
    ds = PDEBenchDataset([out])
    pred = ds.read(np.arange(ds.num_trajectories))
    ds.close()
    cfg, data, model, _, _ = load_run(wd)
    given = pred[:, 0]
    ref = Rollout(model, norm=data.norm, x01=data.x01, batch_size=8, refine="corrector")(given, 0.01, 0.05, 3)
    np.testing.assert_allclose(pred[:, 1:], ref, rtol=1e-4, atol=1e-4)
    log = json.loads(Path(str(ttc) + ".ttc.json").read_text())
    assert "field corrector" in log["summary"]["description"]
    assert log["summary"]["evaluations_per_step_max"] <= log["summary"]["budget"]
    capsys.readouterr()
    bad = tmp_path / "fine.h5"
    assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--refine", "corrector", "--nx-out", 64,
                  "--out", bad) == 2
    assert _error_line(capsys.readouterr().err) == (
        "error: the field corrector (model.corrector.kind='field') predicts on the training grid only; drop "
        "--x-query/--nx-out (or out_x01), or use --refine none")
    assert not bad.exists()


def test_infer_defaults_to_the_refiner_the_run_was_scored_with(field_run, burgers_file, tmp_path):
    """Without --refine, infer predicts what the run's evaluation scored (eval.refine='corrector' here): the same
    frames as --refine corrector; off the grid, where the field corrector is undefined, the operator alone."""
    import h5py

    wd, _ = field_run

    def run(name, *flags):
        out = tmp_path / f"{name}.h5"
        assert _infer("--workdir", wd, "--input", burgers_file, "--steps", 3, "--out", out, *flags) == 0
        with h5py.File(out, "r") as f:
            return f["tensor"][...], f.attrs["refine"]

    default, refine = run("default")
    corrected, _ = run("corrected", "--refine", "corrector")
    operator, _ = run("operator", "--refine", "none")
    assert refine == "corrector"
    np.testing.assert_array_equal(default, corrected)
    assert np.abs(default[:, 1:] - operator[:, 1:]).max() > 1e-4      # the corrector changed the rollout
    fine, refine = run("fine", "--nx-out", 128)
    assert refine == "none" and fine.shape[-1] == 128


def test_ttc_ceiling_benchmark_reproduces_the_corrected_row_and_bounds_the_search(field_run, capsys):
    """benchmarks/ttc_ceiling.py: 'fixed' is the table's +corrector row; with one candidate every choice is that
    rollout; over one step the oracle's error is the smallest a choice can have (α = 1 is a candidate), per
    trajectory; the solver-scored choice runs on the data's own flux; bad flags are one line, exit 2."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ttc_ceiling

    from ups_jax.training.restore import load_run

    wd, latent = field_run
    out = ttc_ceiling.measure(wd, [0.0, 0.5, 1.0, 1.5], ("fixed", "oracle", "solver8"))
    c = out["choices"]
    assert c["fixed"]["nrmse"] == pytest.approx(out["table_corrector_nrmse"], rel=1e-5)
    assert c["fixed"]["mean_alpha"] == 1.0 and 0.0 <= c["oracle"]["mean_alpha"] <= 1.5
    assert np.isfinite(c["solver8"]["nrmse"])
    single = ttc_ceiling.measure(wd, [1.0], ("fixed", "reward", "oracle"))["choices"]
    assert single["oracle"]["nrmse"] == pytest.approx(single["fixed"]["nrmse"], rel=1e-6)
    assert single["reward"]["nrmse"] == pytest.approx(single["fixed"]["nrmse"], rel=1e-6)

    cfg, data, model, _, _ = load_run(wd)
    traj, nu = data.trajectories("test", cfg.eval.max_trajectories)
    one = {}
    for choice in ("fixed", "oracle"):
        r = ttc_ceiling.ChoiceRollout(model, norm=data.norm, x01=data.x01, alphas=[0.0, 0.5, 1.0, 1.5],
                                      choice=choice, weights={}, traj=traj)
        one[choice] = np.sum((r(traj[:, :1], nu, float(data.dataset.dt), 1) - traj[:, 1:2]) ** 2, axis=(1, 2))
    assert np.all(one["oracle"] <= one["fixed"] * (1 + 1e-5)) and np.any(one["oracle"] < one["fixed"])

    assert run_cli(ttc_ceiling.main, [str(wd), "--alphas", "a,b"]) == 2
    assert "--alphas 'a,b': give numbers" in capsys.readouterr().err
    assert run_cli(ttc_ceiling.main, [str(wd), "--solver-cells", "7"]) == 2
    assert "--solver-cells 7 needs a cell count dividing the grid's 16 cells" in capsys.readouterr().err
    assert run_cli(ttc_ceiling.main, [str(latent)]) == 2             # the latent corrector: no such candidates
    assert "its corrector is not the field kind" in capsys.readouterr().err
    assert run_cli(ttc_ceiling.main, [str(wd / "nowhere")]) == 2
    assert "not a finished run directory (no config.json)" in capsys.readouterr().err
