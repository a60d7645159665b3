"""Config loading, variants and --config.x=y overrides: every mistake is a one-line ConfigError."""

import subprocess
import sys

import pytest

from ups_jax.config import apply_override, flatten, load_config, split_config_args
from ups_jax.errors import ConfigError

CFG = "configs/burgers32.py"


def test_variants_differ_and_mirror_the_original():
    full, cpu, test = (load_config(f"{CFG}{v}") for v in ("", ":cpu", ":test"))
    assert (full.model.latent_dim, full.model.operator.hidden_dim, full.model.operator.num_heads) == (32, 96, 6)
    assert tuple(full.model.operator.depths) == (1, 1, 1) and full.model.operator.group_size == 12
    assert test.model.latent_dim < full.model.latent_dim
    assert cpu.stages.operator.steps < full.stages.operator.steps
    refine = ["corrector", "student", "steady"]          # the stages on the frozen core (issue 8)
    assert list(full.stage_order) == ["codec", "operator", "steady"]   # issue 19: no refiner that did not pay
    assert list(test.stage_order) == ["codec", "operator"] + refine
    assert list(cpu.stage_order) == ["operator", "corrector"]   # issue 19: the field corrector paid on :cpu


def test_overrides_are_typed():
    cfg = load_config(CFG, ["model.latent_dim=16", "stages.codec.lr=3e-4", "model.operator.depths=(2,2,2)",
                            "logging.progress=false", "data.paths=a.h5,b.h5"])
    assert cfg.model.latent_dim == 16 and isinstance(cfg.model.latent_dim, int)
    assert cfg.stages.codec.lr == pytest.approx(3e-4)
    assert tuple(cfg.model.operator.depths) == (2, 2, 2)
    assert cfg.logging.progress is False
    assert tuple(cfg.data.paths) == ("a.h5", "b.h5")


@pytest.mark.parametrize("override, message", [
    ("model.latnt_dim=3", "unknown config key 'model.latnt_dim' (did you mean 'model.latent_dim'?)"),
    ("model.latent_dim=abc", "--config.model.latent_dim=abc: bad value for a int field"),
    ("model=3", "is a section, not a value"),
    ("novalue", "expected --config.key.path=value"),
])
def test_bad_overrides(override, message):
    cfg = load_config(CFG)
    with pytest.raises(ConfigError, match=None) as e:
        apply_override(cfg, override)
    assert message in str(e.value)


def test_locked_config_rejects_new_fields():
    cfg = load_config(CFG)
    with pytest.raises(AttributeError):
        cfg.model.new_field = 1


def test_missing_file_and_unknown_variant():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("configs/nope.py")
    with pytest.raises(ConfigError, match="unknown variant 'gpu'"):
        load_config(f"{CFG}:gpu")


def test_split_config_args():
    spec, ov, rest = split_config_args(["--config", "c.py:cpu", "--config.a.b=1", "--config.c", "2", "--fresh"])
    assert (spec, ov, rest) == ("c.py:cpu", ["a.b=1", "c=2"], ["--fresh"])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_train_cli_bad_override_is_one_line():
    r = subprocess.run([sys.executable, "-m", "ups_jax.train", "--config", f"{CFG}:test", "--config.model.nope=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {CFG}: unknown config key 'model.nope'"
    assert "Traceback" not in r.stderr


def test_run_name_is_the_default_workdir_and_the_benchmarks_run_name():
    from ups_jax.config import run_name
    from ups_jax.train import default_workdir

    assert run_name("configs/burgers32.py:cpu") == "burgers32_cpu" and run_name("configs/fno_burgers.py") == "fno_burgers"
    assert default_workdir("configs/burgers32.py:cpu") == str(__import__("pathlib").Path("runs") / "burgers32_cpu")


def test_default_pipeline_keeps_only_the_refine_stages_that_improved_the_rollout():
    """Issue 19: a refine stage is in the default pipeline only if it measurably improves the rollout; the latent
    corrector and its student did not, the field corrector (z = E(û)) did on :cpu (docs/benchmarks.md), so :cpu
    trains the operator and the field corrector and scores the corrected rollout, the full config the core and the
    steady prior; :test still trains every stage (each is tested)."""
    from pathlib import Path

    spec = str(Path(__file__).resolve().parents[1] / "configs" / "burgers32.py")
    assert tuple(load_config(spec).stage_order) == ("codec", "operator", "steady")
    cpu = load_config(spec + ":cpu")
    assert tuple(cpu.stage_order) == ("operator", "corrector")   # the field corrector: -39 ± 9 % on :cpu
    assert (cpu.model.corrector.kind, cpu.model.corrector.field.state, cpu.eval.refine) == ("field", "encode",
                                                                                            "corrector")
    assert load_config(spec).eval.refine == "none"
    assert tuple(load_config(spec + ":test").stage_order) == ("codec", "operator", "corrector", "student", "steady")
    full = load_config(spec, ["stage_order=codec,operator,corrector,student,steady"])
    assert full.model.corrector.kind == "latent" and "student" in full.stage_order
