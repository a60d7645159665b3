"""``driver dry-run``: the estimate's parts add up, XLA memory/FLOPs are read, GPU costs follow the price table,
--estimate-only executes nothing, --json parses, a failing config exits 1 with one line.

Runtime: one full dry run of :test with --skip-data (both stages), one on a real file (codec stage only: the
data path is the same for every stage) and one compile-only run (codec only).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ups_jax.config import load_config
from ups_jax.driver import dry_run as dr
from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT / 'configs' / 'burgers32.py'}:test"
H100_PRICE = 5.0


def _cli_json(*argv) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = run_cli(dr.main, ["--config", SPEC, "--json", *argv])
    assert rc == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def skip_report():
    """The CLI in-process: --skip-data, --json and a price override."""
    return _cli_json("--skip-data", f"--config.cost.price_per_hour.H100={H100_PRICE}")


@pytest.fixture(scope="module")
def data_report(burgers_file):
    cfg = load_config(SPEC, [f"data.paths=('{burgers_file}',)", "data.reduced_resolution=1",
                             "stage_order=('codec',)"])
    return dr.dry_run(cfg, timing_steps=5, min_timing_s=0.2), cfg


@pytest.fixture(scope="module")
def estimate_report():
    return _cli_json("--estimate-only", "--config.stage_order=('codec',)")


def _reports(skip_report, data_report):
    return {"skip-data": skip_report, "real data": data_report[0]}


@pytest.mark.parametrize("which", ["skip-data", "real data"])
def test_components_add_up(which, skip_report, data_report):
    r = _reports(skip_report, data_report)[which]
    cfg = load_config(SPEC)
    for name, s in r["stages"].items():
        sc = cfg.stages[name]
        assert s["steps"] == sc.steps                      # optimizer updates (accumulation inside a step)
        assert s["evals"] == math.ceil(s["steps"] / sc.eval_every)
        assert s["timed_steps"] >= 5 and s["step_s"] > 0
        for k in ("setup_s", "compile_s", "val_s", "val_compile_s", "checkpoint_s", "end_s"):
            assert s[k] >= 0, k
        assert s["compile_s"] > 0 and s["checkpoint_s"] > 0
        # compile = the loop's first two jitted steps (compile and any recompile) minus two step times
        assert len(s["first_steps_s"]) == 2
        assert s["compile_s"] == pytest.approx(max(sum(s["first_steps_s"]) - 2 * s["step_s"], 0.0))
        assert s["train_s"] == pytest.approx(s["steps"] * s["step_s"])
        assert s["total_s"] == pytest.approx(s["setup_s"] + s["compile_s"] + s["steps"] * s["step_s"]
                                             + s["val_compile_s"] + s["evals"] * (s["val_s"] + s["checkpoint_s"])
                                             + s["end_s"])
    assert r["startup_s"] > 0 and r["final_eval_s"] > 0
    assert r["total_s"] == pytest.approx(r["startup_s"] + sum(s["total_s"] for s in r["stages"].values())
                                         + r["final_eval_s"])


@pytest.mark.parametrize("which", ["skip-data", "real data"])
def test_memory_and_flops_positive(which, skip_report, data_report):
    r = _reports(skip_report, data_report)[which]
    for s in r["stages"].values():
        assert s["flops_per_step"] > 0
        assert s["argument_bytes"] > 0 and s["peak_bytes"] > 0
        assert s["peak_bytes"] == s["argument_bytes"] + s["output_bytes"] + s["temp_bytes"] - s["alias_bytes"]
    assert r["device_peak_bytes"] == max(s["peak_bytes"] for s in r["stages"].values())
    assert r["predicted_peak_rss_bytes"] > 2**20
    assert r["params"]["total"] == sum(v for k, v in r["params"].items() if k != "total")


def test_each_stage_has_its_own_compiled_analysis(skip_report):
    s = skip_report["stages"]
    assert list(s) == ["codec", "operator", "corrector", "student", "steady"]   # every stage of :test
    for st in s.values():
        assert 0 < st["flops_per_step"] < float("inf") and st["peak_bytes"] > 0
    # different losses and trainable modules compile different programs
    assert s["operator"]["flops_per_step"] != s["codec"]["flops_per_step"]
    assert s["student"]["flops_per_step"] > s["corrector"]["flops_per_step"]   # the teacher's K+1 calls as well


def test_data_modes(skip_report, data_report):
    assert skip_report["synthetic_data"] is True
    assert any("--skip-data" in n for n in skip_report["notes"])
    report, _ = data_report
    assert report["synthetic_data"] is False and report["notes"] == []


def test_gpu_costs_are_hours_times_price(skip_report):
    cfg = load_config(SPEC)
    prices = dict(cfg.cost.price_per_hour) | {"H100": H100_PRICE}
    assert set(skip_report["gpu"]) == set(prices)
    for gpu, e in skip_report["gpu"].items():
        spec = dr.GPU_TABLE[gpu]
        expect_s = sum(s["steps"] * max(s["flops_per_step"] / (spec["tflops"] * 1e12 * cfg.cost.efficiency),
                                        cfg.cost.min_step_s) for s in skip_report["stages"].values())
        assert e["train_s"] == pytest.approx(expect_s)
        assert e["hours"] == pytest.approx(e["train_s"] / 3600)
        assert e["price_per_hour"] == prices[gpu]
        assert e["cost_usd"] == pytest.approx(e["hours"] * e["price_per_hour"])
        assert e["fits"] is True
    cheapest = min(skip_report["gpu"], key=lambda g: skip_report["gpu"][g]["cost_usd"])
    assert skip_report["recommendation"] == cheapest


def test_recommendation_is_cheapest_that_fits():
    cfg = load_config(SPEC, ["cost.price_per_hour.H200=9.0"])
    stage = {"steps": 1000, "flops_per_step": 1e13}
    report = {"stages": {"operator": stage}, "device_peak_bytes": 100 * 2**30}   # only the 141 GB H200 fits
    gpu = dr.gpu_estimates(cfg, report)
    assert [g for g, e in gpu.items() if e["fits"]] == ["H200"]
    assert dr.recommend(gpu) == "H200"
    report["device_peak_bytes"] = 200 * 2**30
    assert dr.recommend(dr.gpu_estimates(cfg, report)) is None
    report["device_peak_bytes"] = 2**30
    gpu = dr.gpu_estimates(cfg, report)
    # the same FLOPs run 3.2x longer on an A100 but cost 1.89 vs 2.89 $/h: the H100 is cheaper here
    assert gpu["A100"]["train_s"] > gpu["H100"]["train_s"]
    assert dr.recommend(gpu) == min(gpu, key=lambda g: gpu[g]["cost_usd"]) == "H100"


def test_estimate_only_executes_no_step(estimate_report):
    r = estimate_report
    assert r["estimate_only"] is True
    s = r["stages"]["codec"]
    assert "step_s" not in s and "total_s" not in s and "val_s" not in s
    assert s["compile_s"] > 0 and s["flops_per_step"] > 0 and s["peak_bytes"] > 0
    assert "first_steps_s" not in s and "timed_steps" not in s
    assert "total_s" not in r and "final_eval_s" not in r
    assert r["recommendation"] in r["gpu"]
    assert "no wall-time prediction" in dr.format_report(r)


def test_text_report(data_report):
    report, _ = data_report
    text = dr.format_report(report)
    assert "predicted wall time" in text and "predicted peak memory" in text
    assert "codec" in text and "recommendation:" in text
    for gpu in report["gpu"]:
        assert f"\n{gpu} " in text


def test_failing_config_exits_1_with_one_line():
    r = subprocess.run([sys.executable, "-m", "ups_jax.driver", "dry-run", "--config", SPEC,
                        "--config.model.operator.num_heads=3"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: config fails validation") and r.stderr.count("\n") == 1, r.stderr
    assert "group % heads" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_are_one_line(capsys):
    for argv in (["--bogus"], ["--config.stages.codec.stepz=3"], ["--steps", "0"]):
        rc = run_cli(dr.main, ["--config", SPEC, *argv])
        out, err = capsys.readouterr()
        assert rc == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    assert run_cli(dr.main, []) == 2
    assert "missing --config" in capsys.readouterr().err
