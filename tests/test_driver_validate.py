"""``driver validate``: every check passes on the :test config and fails (with its severity and a message naming
the value) when one key is set wrong; --workdir shape checks against a real tiny run; the CLI contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_jax.config import load_config
from ups_jax.driver import validate
from ups_jax.driver.validate import errors, run_checks
from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT / 'configs' / 'burgers32.py'}:test"


# The checks read the data files when they exist: point the default data dir at a path that never does, so that
# the generator settings are what is checked even where `data/burgers_test` was generated in the checkout.
NO_DATA = f"data.default_dir={ROOT / 'tests' / 'no-such-data-dir'}"


def cfg_with(*overrides: str):
    return load_config(SPEC, [NO_DATA, *overrides])


def named(checks, name):
    found = [c for c in checks if c.name == name]
    assert found, f"no check named {name!r} in {[c.name for c in checks]}"
    return found[0]


@pytest.fixture(scope="module")
def default_checks():
    return run_checks(cfg_with())


def data_args(path) -> list[str]:
    """:test on a conftest file: 64 cells without reduction (the :test grid), so no other check changes."""
    return [f"data.paths=('{path}',)", "data.reduced_resolution=1"]


# (overrides, check name, severity, substring of the message, present in the default :test config)
CASES = [
    (["model.operator.hidden_dim=20"], "hidden % group", "error", "not a multiple of group_size=8", True),
    (["model.operator.num_heads=3"], "group % heads", "error", "num_heads=3", True),
    (["model.operator.num_heads=0"], "operator widths", "error", "num_heads=0", True),
    (["model.decoder.num_heads=3"], "decoder heads", "error", "num_heads=3", True),
    (["model.latent_tokens=6"], "tokens divide grid", "error", "model.latent_tokens=6", True),
    (["model.operator.depths=(0, 0)"], "depths", "error", "(0, 0)", True),
    (["model.latent_dim=0"], "latent_dim", "error", "model.latent_dim=0", True),
    (["model.decoder.fourier_freqs=(1, 2, 32)"], "decoder Nyquist", "warning", "Nyquist frequency 32", True),
    (["model.encoder.fourier_freqs=(1, 40)"], "encoder Nyquist", "warning", "max=40", True),
    (["data.test_fraction=0.6", "data.val_fraction=0.4"], "split fractions", "error", "test_fraction=0.6", True),
    (["data.val_fraction=0.0"], "split fractions", "error", "val_fraction=0.0", True),
    (["data.generate.samples=2"], "splits non-empty", "error", "split is empty", True),
    (["data.generate.nx=250"], "generator grid", "error", "not a multiple of data.reduced_resolution=4", True),
    (["eval.initial_step=41"], "eval.initial_step", "error", "41 frames", True),
    (["eval.initial_step=0"], "eval.initial_step", "error", "eval.initial_step=0", True),
    (["eval.split=valid"], "eval.split", "error", "'valid'", True),
    (["eval.rollout_mode=euler"], "eval.rollout_mode", "error", "'euler'", True),
    (["eval.batch_size=0"], "eval sizes", "error", "eval.batch_size=0", True),
    (["eval.refine=diffusion"], "eval.refine", "error", "eval.refine='diffusion'", True),
    (["stages.operator.recon_windows=first"], "operator recon windows", "error", "recon_windows='first'", True),
    (["eval.refine=corrector", "stage_order=('codec', 'operator')"], "eval.refine stage", "info",
     "the headline evaluation is the operator alone", False),
    (["stage_order=('codec', 'diffusion')"], "diffusion defined", "error", "no such section", False),
    (["stage_order=()"], "stage_order", "error", "stage_order=[]", True),
    (["stages.codec.trainable=('encoder', 'decodr')"], "codec trainable", "error", "unknown ['decodr']", True),
    (["stages.codec.losses.recon=0.0"], "codec losses", "error", "'recon': 0.0", True),
    (["stages.operator.losses.latent=-1.0"], "operator losses", "error", "'latent': -1.0", True),
    # frozen teacher: the operator stage decodes with a decoder no earlier stage trained
    (["stage_order=('operator',)", "stages.operator.trainable=('encoder', 'operator')"], "operator frozen decoder",
     "error", "no earlier stage trains it", True),
    (["stages.operator.trainable=('encoder', 'decoder')"], "operator frozen operator", "error",
     "no earlier stage trains it", False),
    (["stage_order=('operator',)", "stages.operator.trainable=('operator',)"], "operator frozen encoder", "error",
     "no earlier stage trains it", True),
    (["stage_order=('operator',)", "stages.operator.trainable=('operator',)"], "codec trained", "error",
     "no stage trains the encoder and decoder", True),
    (["stages.codec.lr=0.0"], "codec lr > 0", "error", "stages.codec.lr=0.0", True),
    (["stages.codec.lr=-0.001"], "codec lr > 0", "error", "lr=-0.001", True),
    (["stages.codec.lr=0.5"], "codec lr range", "warning", "outside [1e-5, 1e-2]", True),
    (["stages.operator.grad_clip=-1.0"], "operator grad clip", "error", "grad_clip=-1.0", True),
    (["stages.operator.grad_clip=50.0"], "operator grad clip range", "warning", "outside [0.1, 10]", True),
    (["stages.codec.weight_decay=-0.1"], "codec weight decay", "error", "weight_decay=-0.1", True),
    (["stages.codec.weight_decay=0.5"], "codec weight decay range", "warning", "> 0.1", True),
    (["stages.codec.ema_decay=1.0"], "codec ema", "error", "ema_decay=1.0", True),
    (["stages.codec.ema_decay=-0.5"], "codec ema", "error", "ema_decay=-0.5", True),
    (["stages.codec.warmup_steps=10"], "codec warmup length", "warning", "never reaches its peak", True),
    (["stages.codec.warmup_steps=-1"], "codec warmup", "error", "warmup_steps=-1", True),
    (["stages.codec.steps=0"], "codec steps", "error", "steps=0", True),
    (["stages.codec.batch_size=0"], "codec batch", "error", "batch_size=0", True),
    (["stages.codec.accum_steps=0"], "codec batch", "error", "accum_steps=0", True),
    (["stages.codec.batch_size=10000"], "codec batch vs windows", "error", "exceeds the 480 training windows", True),
    (["stages.codec.eval_every=0"], "codec cadence", "error", "eval_every=0", True),
    (["stages.codec.log_every=0"], "codec cadence", "error", "log_every=0", True),
    (["stages.codec.eval_every=100"], "codec evals", "info", "validated only at the end", True),
    (["stages.codec.patience=-1"], "codec patience", "error", "patience=-1", True),
    (["stages.codec.end_lr_factor=2.0"], "codec lr decay", "error", "end_lr_factor=2.0", True),
    (["stages.codec.b2=1.0"], "codec adam betas", "error", "b2=1.0", True),
    (["stages.codec.optimizer=sgd"], "codec optimizer", "error", "optimizer='sgd'", True),
    (["stages.codec.schedule=step"], "codec step schedule", "error", "lr_step_every=0", False),
    (["stages.operator.rollout_steps=41"], "operator window", "error", "does not fit in 41 frames", True),
    (["stages.operator.rollout_steps=0"], "operator rollout", "error", "rollout_steps=0", True),
    (["stages.operator.query_points=65"], "operator query points", "error", "65 of 64 grid points", True),
    (["stages.operator.query_points=-1"], "operator query points", "error", "query_points=-1", True),
    (["logging.wandb_mode=cloud"], "wandb mode", "error", "'cloud'", True),
    (["logging.wandb_mode=offline", "logging.wandb_project="], "wandb project", "warning", "is empty", True),
    (["checkpoint.keep_latest=0"], "retention", "error", "keep_latest=0", True),
    (["checkpoint.keep_best=0"], "retention", "error", "keep_best=0", True),
    (["data.reduced_resolution=0"], "reduction", "error", "reduced_resolution=0", True),
    (["data.prefetch=-1"], "prefetch", "error", "prefetch=-1", True),
]


@pytest.mark.parametrize("overrides,name,severity,text,in_default", CASES,
                         ids=[f"{c[1]}:{'|'.join(c[0])}" for c in CASES])
def test_check_fails_with_severity_and_message(overrides, name, severity, text, in_default, default_checks):
    checks = run_checks(cfg_with(*overrides))
    check = named(checks, name)
    assert not check.ok, check
    assert check.severity == severity and check.status == severity.upper()
    assert text in check.message, check.message
    assert "\n" not in check.message
    if severity != "error":
        assert check.fix or severity == "info"
    else:
        assert check in errors(checks)
    # the default :test config passes the same check (or does not need it)
    same = [c for c in default_checks if c.name == name]
    assert bool(same) == in_default
    assert all(c.ok for c in same), same


def test_default_test_config_has_no_failure(default_checks):
    assert [c for c in default_checks if not c.ok] == []
    assert {c.category for c in default_checks} >= {"architecture", "data", "stages", "hyper-parameters",
                                                     "logging", "hardware"}


def test_pass_rows_state_the_value_not_a_problem(default_checks):
    problem_words = ("outside", "is empty", "> 0.1", "exceeds", "not a multiple", "not divisible", "does not",
                     "never", "only at the end", "at or above", "frozen but")
    for c in default_checks:
        assert not any(w in c.message for w in problem_words), c
    assert named(default_checks, "wandb project").message == "logging.wandb_project='ups_jax'"
    assert "in [1e-5, 1e-2]" in named(default_checks, "codec lr range").message
    table = validate.format_table(default_checks)
    assert "0 error(s), 0 warning(s)" in table


def test_checks_grouped_by_category_in_table_order(default_checks):
    order = [validate.CATEGORIES.index(c.category) for c in default_checks]
    assert order == sorted(order)


def test_frozen_teacher_passes_after_codec_stage():
    checks = run_checks(cfg_with("stages.operator.trainable=('operator',)"))
    for module in ("encoder", "decoder"):
        c = named(checks, f"operator frozen {module}")
        assert c.ok and "trained by stage 'codec'" in c.message
    assert not errors(checks)


def test_lr_out_of_range_is_only_a_warning():
    checks = run_checks(cfg_with("stages.codec.lr=0.5", "stages.operator.grad_clip=50.0"))
    assert not errors(checks)
    assert {c.name for c in checks if not c.ok} == {"codec lr range", "operator grad clip range"}


def test_grad_clip_zero_means_off():
    c = named(run_checks(cfg_with("stages.codec.grad_clip=0.0")), "codec grad clip range")
    assert c.ok and "(off)" in c.message


def test_wandb_online_without_key_is_a_warning_never_an_error(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    checks = run_checks(cfg_with("logging.wandb_mode=online"))
    c = named(checks, "wandb key")
    assert not c.ok and c.severity == "warning" and "WANDB_API_KEY" in c.message
    assert not errors(checks)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    checks = run_checks(cfg_with("logging.wandb_mode=online"))
    assert not [c for c in checks if c.name == "wandb key"]
    assert named(checks, "wandb").ok


# ---- data files ----

def test_data_files_exist_and_pass_validate_data(burgers_file):
    checks = run_checks(cfg_with(*data_args(burgers_file)))
    assert named(checks, "files exist").ok
    c = named(checks, "validate-data")
    assert c.ok and "NaN/Inf scan" in c.message
    assert not [c for c in checks if not c.ok]


def test_missing_data_file(tmp_path):
    missing = tmp_path / "nope.hdf5"
    checks = run_checks(cfg_with(*data_args(missing)))
    c = named(checks, "files exist")
    assert not c.ok and c.severity == "error" and str(missing) in c.message


def test_nan_file_fails_validate_data(burgers_file, tmp_path):
    bad = tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5"
    shutil.copyfile(burgers_file, bad)
    with h5py.File(bad, "r+") as f:
        f["tensor"][3, 7, 5] = np.nan
    checks = run_checks(cfg_with(*data_args(bad)))
    c = named(checks, "validate-data")
    assert not c.ok and c.severity == "error"
    assert "finite" in c.message and bad.name in c.message
    # later data checks are skipped rather than crashing on the unusable file
    assert not [x for x in checks if x.name == "splits non-empty"]


def test_data_grid_comes_from_the_files(burgers_file):
    # the conftest file has 64 cells: with the :test reduction (4) that is 16, at the decoder's Nyquist (8)
    checks = run_checks(cfg_with(f"data.paths=('{burgers_file}',)"))
    c = named(checks, "decoder Nyquist")
    assert not c.ok and c.severity == "warning" and "Nyquist frequency 8" in c.message
    assert "12 trajectories" in named(checks, "splits non-empty").message


def test_skip_data_reads_no_file(tmp_path):
    checks = run_checks(cfg_with(*data_args(tmp_path / "nope.hdf5")), skip_data=True)
    assert not errors(checks)
    assert named(checks, "data files").message.startswith("skipped")


# ---- --workdir: checkpoint shapes vs config ----

@pytest.fixture(scope="module")
def trained_workdir(burgers_file, tmp_path_factory):
    """A real tiny run interrupted after the codec stage's first checkpoint (step 3): enough for shape checks."""
    from ups_jax.training.pipeline import train_and_evaluate

    wd = tmp_path_factory.mktemp("validate_run") / "run"
    cfg = cfg_with("data.reduced_resolution=1")
    train_and_evaluate(cfg, wd, data_paths=[burgers_file], max_steps=3)
    assert (wd / "checkpoints" / "codec" / "3").is_dir()
    return wd


def test_workdir_matching_config_passes(trained_workdir, burgers_file):
    checks = run_checks(cfg_with(*data_args(burgers_file)), workdir=trained_workdir)
    c = named(checks, "codec shapes")
    assert c.ok and c.category == "checkpoints" and "every parameter shape matches" in c.message
    assert named(checks, "dataset").ok and named(checks, "grid").ok
    assert not [x for x in checks if not x.ok]


def test_workdir_shape_mismatch_names_path_shapes_and_key(trained_workdir, burgers_file):
    checks = run_checks(cfg_with(*data_args(burgers_file), "model.encoder.width=16"), workdir=trained_workdir)
    c = named(checks, "codec shapes")
    assert not c.ok and c.severity == "error" and c in errors(checks)
    assert str(trained_workdir / "checkpoints" / "codec" / "3") in c.message
    m = re.search(r"parameter '(encoder/[^']+)' has shape (\([^)]*\)) in the checkpoint but (\([^)]*\)) from the "
                  r"config \(set by ([^)]+)\)", c.message)
    assert m, c.message
    path, ckpt_shape, cfg_shape, key = m.groups()
    assert "8" in ckpt_shape and "16" in cfg_shape and ckpt_shape != cfg_shape
    assert "model.encoder.width" in key


def test_workdir_trained_without_scale_norm_names_the_key(trained_workdir, burgers_file):
    """Turning model.scale_norm on for a run trained without it: the shape error names the key."""
    checks = run_checks(cfg_with(*data_args(burgers_file), "model.scale_norm=True"), workdir=trained_workdir)
    c = named(checks, "codec shapes")
    assert not c.ok and c.severity == "error" and "model.scale_norm" in c.message, c.message


def test_workdir_other_grid_and_dataset(trained_workdir, burgers_file, burgers_dir):
    other = burgers_dir / "1D_Burgers_Sols_Nu0.1.hdf5"
    checks = run_checks(cfg_with(*data_args(other)), workdir=trained_workdir)
    c = named(checks, "dataset")
    assert not c.ok and "different dataset" in c.message and "nu" in c.message
    checks = run_checks(cfg_with(f"data.paths=('{burgers_file}',)", "data.reduced_resolution=2",
                                 "model.latent_tokens=8"), workdir=trained_workdir)
    c = named(checks, "grid")
    assert not c.ok and "64 cells" in c.message and "32" in c.message


def test_workdir_fresh_is_info(tmp_path):
    checks = run_checks(cfg_with(), workdir=tmp_path / "new")
    c = named(checks, "workdir")
    assert c.ok and c.severity == "info" and "does not exist yet" in c.message


# ---- CLI ----

def cli(capsys, *argv):
    rc = run_cli(validate.main, ["--config", SPEC, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_exit_codes_and_table(capsys):
    rc, out, err = cli(capsys)
    assert rc == 0 and "[architecture]" in out and "0 error(s)" in out
    rc, out, err = cli(capsys, "--config.model.operator.num_heads=3")
    assert rc == 1 and "ERROR   group % heads" in out and "→ make group_size a multiple of num_heads" in out
    rc, out, err = cli(capsys, "--config.stages.codec.lr=0.5")     # a warning only
    assert rc == 0 and "WARNING codec lr range" in out


def test_cli_bad_override_and_flag_are_one_line_errors(capsys):
    for argv in (["--config.model.latent_dimm=4"], ["--config.model.latent_dim=abc"], ["--bogus"]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1, err
    rc, out, err = cli(capsys, "--config.model.latent_dimm=4")
    assert "did you mean 'model.latent_dim'" in err


def test_cli_json(capsys):
    rc, out, _ = cli(capsys, "--json", "--config.stages.codec.lr=0.0")
    rows = json.loads(out)
    assert rc == 1
    assert all({"category", "name", "ok", "severity", "status", "message", "fix"} <= set(r) for r in rows)
    assert {r["status"] for r in rows} >= {"PASS", "ERROR"}
    bad = [r for r in rows if r["name"] == "codec lr > 0"][0]
    assert bad == {**bad, "category": "hyper-parameters", "severity": "error", "status": "ERROR", "ok": False}


def test_cli_subprocess_exit_code_without_traceback():
    """The real entry point: exit 1 on a config error, the table on stdout, no traceback."""
    r = subprocess.run([sys.executable, "-m", "ups_jax.driver", "validate", "--config", SPEC,
                        "--config.model.decoder.num_heads=3"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    assert "ERROR   decoder heads" in r.stdout and "Traceback" not in r.stderr + r.stdout
