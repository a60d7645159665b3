"""driver analyze / compare on synthetic run directories (tests/run_fixtures.py writes the trainer's format)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from run_fixtures import eval_json, make_config, stage, write_run
from ups_jax.driver import analyze, compare, runlog
from ups_jax.driver.__main__ import main as driver_main
from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv: str) -> int:
    return run_cli(driver_main, [str(a) for a in argv])


def cli_json(capsys, *argv: str) -> dict:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def subprocess_cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "ups_jax.driver", *map(str, argv)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def one_line_error(captured_err: str) -> str:
    lines = captured_err.strip().splitlines()
    assert len(lines) == 1, captured_err
    assert "Traceback" not in captured_err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# analyze


def test_analyze_full_run_statuses_table_and_plots(tmp_path, capsys):
    spec = {"codec": stage(loss=(1.0, 0.05), grad=(1.0, 0.1)),
            "operator": stage(loss=(1.0, 0.9), grad=(1.0, 0.5), grad_max=15.0)}
    run_dir = write_run(tmp_path / "run", spec, eval_=eval_json(0.05, 0.2), samples=True)
    summary = cli_json(capsys, "analyze", "--workdir", run_dir)

    codec, op = summary["stages"]["codec"], summary["stages"]["operator"]
    assert codec["convergence"] == "good convergence"
    assert codec["loss"]["initial"] == pytest.approx(1.0) and codec["loss"]["final"] == pytest.approx(0.05)
    assert codec["loss"]["reduction_pct"] == pytest.approx(95.0)
    assert codec["loss"]["n_records"] == 10
    assert codec["grad"]["status"] == "healthy"
    assert op["convergence"] == "poor convergence"
    assert op["grad"]["status"] == "high gradient norms (possible instability)"
    assert op["grad"]["max"] == pytest.approx(15.0)
    # step time: the first (compilation) window of 200 ms is excluded -> exactly 20 ms
    assert codec["speed"]["first_excluded"] and codec["speed"]["step_time_ms_median"] == pytest.approx(20.0)
    assert codec["speed"]["steps_per_sec_mean"] == pytest.approx(50.0)
    assert codec["lr"]["peak"] >= codec["lr"]["initial"] and codec["lr"]["final"] < codec["lr"]["peak"]
    assert codec["val"]["metric"] == "val/recon_nrmse" and codec["val"]["value"] == pytest.approx(0.1)
    assert codec["val"]["step"] == 100 and codec["val"]["stopped_early"] is False

    ev = summary["evaluation"]["test"]
    assert ev["metrics"]["nrmse"] == {"model": 0.05, "persistence": 0.2, "ratio": pytest.approx(0.25)}
    assert ev["model_beats_persistence"] is True
    assert summary["missing"] == []

    report = (run_dir / "analysis" / "report.md").read_text()
    assert "**Loss: good convergence**" in report and "**Loss: poor convergence**" in report
    assert "high gradient norms (possible instability)" in report
    assert "| nrmse | 0.05 | 0.2 | 0.25 |" in report
    assert "| rel_l2 | 0.055 | 0.22 | 0.25 |" in report
    assert "## Missing" not in report
    recs = summary["recommendations"]
    assert any(r.startswith("stage 'operator': poor convergence") and "stages.operator.steps" in r for r in recs)
    assert any(r.startswith("stage 'operator': gradient norm reached 15") and "grad_clip" in r for r in recs)

    names = {Path(p).name for p in summary["plots"].values()}
    assert names == {"loss_codec.png", "loss_operator.png", "val_codec.png", "val_operator.png", "grad_norm.png",
                     "lr.png", "nrmse_test.png", "xt_test.png"}
    for p in summary["plots"].values():
        assert Path(p).stat().st_size > 1000
    # every image link in the report resolves relative to the report
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert len(links) == len(names)
    assert all((run_dir / "analysis" / link).is_file() for link in links)


def test_the_comparison_table_is_not_taken_for_a_split_evaluation(tmp_path, capsys):
    """A finished run also has eval/table.json (the comparison rows, no "model" block): not a missing item."""
    run_dir = write_run(tmp_path / "run", {"operator": stage(loss=(1.0, 0.05), grad=(1.0, 0.1))},
                        eval_=eval_json(0.05, 0.2))
    (run_dir / "eval" / "table.json").write_text(json.dumps({"split": "test", "rows": [{"row": "operator"}]}))
    summary = cli_json(capsys, "analyze", "--workdir", run_dir)
    assert summary["missing"] == [] and list(summary["evaluation"]) == ["test"]


def test_analyze_clean_run_looks_good_and_stdout_summary(tmp_path, capsys):
    # validation has plateaued (the last evaluation is not better than the previous best by > 1 %)
    spec = {"codec": stage(loss=(1.0, 0.01), val=(0.01, 0.01)), "operator": stage(loss=(1.0, 0.02), val=(0.3, 0.3))}
    run_dir = write_run(tmp_path / "clean", spec, eval_=eval_json(0.05, 0.2))
    assert cli("analyze", "--workdir", run_dir, "--no-plots", "--out", tmp_path / "r.md") == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'r.md'}" in out and "codec: good convergence" in out
    text = (tmp_path / "r.md").read_text()
    assert "- Training looks good" in text
    assert "codec's best reconstruction" not in text  # 0.01 < 0.5 * 0.05


def test_analyze_recommendations_persistence_ttc_val_codec_floor(tmp_path, capsys):
    spec = {"codec": stage(loss=(1.0, 0.3), val=(0.5, 0.2)), "operator": stage(loss=(1.0, 0.05), val=(0.5, 0.1))}
    run_dir = write_run(tmp_path / "r", spec, eval_=eval_json(0.3, 0.2, ttc_nrmse=0.28))
    summary = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots")
    assert summary["stages"]["codec"]["convergence"] == "moderate convergence"
    ev = summary["evaluation"]["test"]
    assert ev["model_beats_persistence"] is False
    assert ev["ttc"]["gain_pct"] == pytest.approx((0.3 - 0.28) / 0.3 * 100)
    assert ev["ttc"]["status"] == "moderate"
    recs = summary["recommendations"]
    assert any(r.startswith("model is not better than persistence: test nRMSE 0.3 vs persistence 0.2") for r in recs)
    assert any(r.startswith("TTC gain is only 6.7%") for r in recs)
    assert any(r.startswith("stage 'operator': val/nrmse was still improving at the end") for r in recs)
    assert any(r.startswith("stage 'codec': the codec's best reconstruction nRMSE 0.2") for r in recs)
    assert any(r.startswith("stage 'codec': moderate convergence") for r in recs)
    report = (run_dir / "analysis" / "report.md").read_text()
    assert "**TTC gain: 6.7% (moderate)**" in report
    assert "| nrmse | 0.3 | 0.2 | 1.5 | 0.28 |" in report


@pytest.mark.parametrize("ttc, status", [(0.21, "excellent"), (0.26, "good"), (0.29, "minimal")])
def test_ttc_status_thresholds(ttc, status):
    gain = (0.3 - ttc) / 0.3 * 100
    assert analyze.ttc_status(gain, analyze.DEFAULT_THRESHOLDS) == status


def test_vanishing_gradients_and_threshold_override(tmp_path, capsys):
    run_dir = write_run(tmp_path / "v", {"operator": stage(loss=(1.0, 0.05), grad=(1.0, 5e-4))},
                        eval_=eval_json())
    s = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots")
    assert s["stages"]["operator"]["grad"]["status"] == "very low final gradients (vanishing/possible early stopping)"
    s = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots", "--threshold", "grad_vanishing=1e-4",
                 "--threshold", "converge_good=0.01")
    assert s["stages"]["operator"]["grad"]["status"] == "healthy"
    assert s["stages"]["operator"]["convergence"] == "moderate convergence"
    assert "| converge_good (overridden) | 0.01 |" in (run_dir / "analysis" / "report.md").read_text()

    assert cli("analyze", "--workdir", run_dir, "--threshold", "grad_hihg=3") == 2
    assert one_line_error(capsys.readouterr().err) == (
        "error: --threshold 'grad_hihg=3': unknown threshold 'grad_hihg' (did you mean 'grad_high'?)")
    assert cli("analyze", "--workdir", run_dir, "--threshold", "grad_high=big") == 2
    assert "is not a number" in one_line_error(capsys.readouterr().err)


def test_analyze_partial_run_reports_missing(tmp_path, capsys):
    spec = {"codec": stage(), "operator": stage(steps=100)}
    run_dir = write_run(tmp_path / "partial", spec, eval_=eval_json(), stop_at=("operator", 50), truncate_last=True)
    n_lines = len((run_dir / "metrics.jsonl").read_text().splitlines())
    assert cli("analyze", "--workdir", run_dir) == 0
    out = capsys.readouterr().out
    assert "incomplete run" in out
    report = (run_dir / "analysis" / "report.md").read_text()
    missing = report.split("## Missing", 1)[1].split("\n## ", 1)[0]
    assert "- stage 'operator' has no stage_end record: the run stopped at step 50 of 100" in missing
    assert f"- last line of metrics.jsonl (line {n_lines}) is truncated (ignored)" in missing
    assert "- no evaluation: eval/test.json not found" in missing
    assert "- no run_end record" in missing
    assert "Status: incomplete (see Missing)" in report
    assert "**Loss: good convergence**" in report  # what is there is still analysed
    assert (run_dir / "analysis" / "plots" / "loss_operator.png").is_file()

    run = runlog.load_run(run_dir)
    assert run.truncated_last_line and not run.finished and "operator" not in run.stage_end
    assert run.last_step("operator") == 50


def test_analyze_stage_never_started_and_corrupt_middle_line(tmp_path, capsys):
    spec = {"codec": stage(), "operator": stage()}
    run_dir = write_run(tmp_path / "p", spec, stop_at=("codec", 30))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines.insert(2, '{"kind": "train", "stage"')
    lines.append('{"kind": "heartbeat", "time": 1}')
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    s = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots")
    assert "stage 'operator' never started (no train/val records)" in s["missing"]
    assert "metrics.jsonl line 3 is not valid JSON (ignored)" in s["missing"]
    assert "ignored 1 record(s) of unknown kind 'heartbeat'" in s["warnings"]
    assert s["stages"]["codec"]["last_step"] == 30


def test_resumed_run_keeps_latest_record_per_step(tmp_path):
    run_dir = write_run(tmp_path / "res", {"operator": stage(steps=40)}, eval_=eval_json())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(ln) for ln in lines]
    again = [dict(r, loss=123.0) for r in recs if r["kind"] == "train" and r["step"] >= 30]
    start = dict(recs[0])
    new = lines[:-1] + [json.dumps(start)] + [json.dumps(r) for r in again] + [lines[-1]]
    (run_dir / "metrics.jsonl").write_text("\n".join(new) + "\n")
    run = runlog.load_run(run_dir)
    assert run.resumed == 1
    steps, loss = run.series("operator", "loss")
    assert steps == [10, 20, 30, 40] and loss[-1] == 123.0


def test_empty_metrics_is_one_line_error(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("\n")
    proc = subprocess_cli("analyze", "--workdir", run_dir)
    assert proc.returncode == 2
    assert one_line_error(proc.stderr) == (
        f"error: {run_dir / 'metrics.jsonl'} contains no records; the run never started logging")
    assert proc.stdout == ""


def test_missing_workdir_is_one_line_error(tmp_path):
    proc = subprocess_cli("analyze", "--workdir", tmp_path / "nope")
    assert proc.returncode == 2
    assert one_line_error(proc.stderr) == f"error: {tmp_path / 'nope'}: run directory not found"


def test_other_unusable_run_dirs(tmp_path, capsys):
    (tmp_path / "nometrics").mkdir()
    assert cli("analyze", "--workdir", tmp_path / "nometrics") == 2
    assert "no metrics.jsonl in it" in one_line_error(capsys.readouterr().err)

    run_dir = write_run(tmp_path / "badcfg", {"operator": stage()})
    (run_dir / "config.json").write_text("{not json")
    assert cli("analyze", "--workdir", run_dir) == 2
    assert one_line_error(capsys.readouterr().err).startswith(f"error: {run_dir / 'config.json'}: not valid JSON")

    only_bad = tmp_path / "onlybad"
    only_bad.mkdir()
    (only_bad / "metrics.jsonl").write_text('{"kind": "run_st')
    assert cli("analyze", "--workdir", only_bad) == 2
    assert "contains no records; the run never started logging" in one_line_error(capsys.readouterr().err)

    assert cli("analyze") == 2
    assert "--workdir" in one_line_error(capsys.readouterr().err)

    if os.geteuid() != 0:  # root reads anything
        run_dir = write_run(tmp_path / "noperm", {"operator": stage()})
        (run_dir / "metrics.jsonl").chmod(0)
        assert cli("analyze", "--workdir", run_dir) == 2
        assert "cannot read" in one_line_error(capsys.readouterr().err)


def test_eval_json_missing_falls_back_to_record(tmp_path, capsys):
    run_dir = write_run(tmp_path / "e", {"operator": stage()}, eval_=eval_json(0.05, 0.2))
    (run_dir / "eval" / "test.json").unlink()
    s = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots")
    assert s["evaluation"]["test"]["metrics"]["nrmse"]["model"] == 0.05
    assert s["evaluation"]["test"]["headline_only"] is True
    assert any("eval/test.json, which is not found" in m for m in s["missing"])


def test_wandb_errors_and_merge(tmp_path, capsys, monkeypatch):
    run_dir = write_run(tmp_path / "w", {"operator": stage(steps=30)}, eval_=eval_json())

    class OfflineApi:
        def __init__(self, *a, **k):
            raise RuntimeError("No API key configured. Use `wandb login` to log in.\nmore detail")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=OfflineApi))
    assert cli("analyze", "--workdir", run_dir, "--no-plots", "--wandb", "ent/proj/abc") == 2
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith("error: --wandb ent/proj/abc: cannot fetch the run from W&B (RuntimeError: No API key")
    assert cli("analyze", "--workdir", run_dir, "--wandb", "abc") == 2
    assert "expected ENTITY/PROJECT/RUN_ID" in one_line_error(capsys.readouterr().err)

    rows = [{"_step": 5, "operator/step": 40, "operator/loss": 0.01, "operator/grad_norm": 0.2},
            {"_step": 6, "operator/step": 10, "operator/loss": 99.0},          # already in metrics.jsonl: ignored
            {"kind": "val", "stage": "operator", "step": 40, "val_metric": "val/nrmse", "val/nrmse": 0.05}]

    class FakeApi:
        def __init__(self, *a, **k):
            pass

        def run(self, path):
            assert path == "ent/proj/abc"
            return types.SimpleNamespace(scan_history=lambda: iter(rows))

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    s = cli_json(capsys, "analyze", "--workdir", run_dir, "--no-plots", "--wandb", "ent/proj/abc")
    assert s["stages"]["operator"]["loss"]["final"] == 0.01
    assert s["stages"]["operator"]["loss"]["initial"] != 99.0
    assert s["stages"]["operator"]["val"]["last_step"] == 40
    assert any("merged 2 train/val record(s)" in w for w in s["warnings"])


# ---------------------------------------------------------------------------------------------------------------
# compare


def _two_runs(tmp_path):
    spec = {"codec": stage(loss=(1.0, 0.05)), "operator": stage(loss=(1.0, 0.1), val=(0.5, 0.2))}
    a = write_run(tmp_path / "A", spec, eval_=eval_json(0.1, 0.2))
    spec_b = {"codec": stage(loss=(1.0, 0.05)), "operator": stage(loss=(1.0, 0.04), val=(0.5, 0.1), lr=5e-4,
                                                                  step_time_ms=25.0)}
    cfg_b = make_config(spec_b, **{"model.latent_dim": 64})
    b = write_run(tmp_path / "B", spec_b, config=cfg_b, eval_=eval_json(0.08, 0.2))
    return a, b


def test_compare_diff_best_and_pct(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    res = cli_json(capsys, "compare", a, b)
    assert set(res["config_diff"]) == {"model.latent_dim", "stages.operator.lr"}
    assert res["config_diff"]["model.latent_dim"] == [32, 64]
    assert res["config_diff"]["stages.operator.lr"] == [1e-3, 5e-4]
    rows = {r["name"]: r for r in res["metrics"]}
    nrmse = rows["test: model nRMSE"]
    assert nrmse["values"] == [0.1, 0.08] and nrmse["best"] == [1]
    assert nrmse["change_pct"][1] == pytest.approx((0.08 - 0.1) / 0.1 * 100)       # -20 %
    assert rows["test: persistence nRMSE"]["best"] == [0, 1]                       # tie: both marked
    assert rows["test: model corr_time"]["best"] == [1]                            # max: 1/0.08 > 1/0.1
    assert rows["operator: mean steps/s"]["best"] == [0]                           # max: 50 > 40
    assert rows["operator: mean steps/s"]["change_pct"][1] == pytest.approx(-20.0)
    assert rows["operator: final train loss"]["best"] == [1]
    assert rows["operator: best val/nrmse"]["values"] == [pytest.approx(0.2), pytest.approx(0.1)]
    assert rows["codec: best val/recon_nrmse"]["change_pct"][1] == pytest.approx(0.0)
    assert rows["test: improvement over persistence"]["best"] == [1]
    assert rows["total wall time (s)"]["best"] == [0]
    assert "Best run overall by test model nRMSE: B (0.08, -20.0% vs A (0.1))." in res["insights"]
    big = [s for s in res["insights"] if s.startswith("Biggest metric change")]
    assert big and "stages.operator.lr 0.001 → 0.0005" in big[0] and "model.latent_dim 32 → 64" in big[0]

    assert cli("compare", a, b, "--out", tmp_path / "c.md") == 0
    md = capsys.readouterr().out
    assert md == (tmp_path / "c.md").read_text() + "\n"
    diff_section = md.split("## Configuration differences", 1)[1].split("## Metrics", 1)[0]
    assert diff_section.count("| `") == 2
    assert "| `model.latent_dim` | 32 | 64 |" in diff_section
    assert "| test: model nRMSE | 0.1 | **0.08** (-20.0%) | B |" in md
    assert "| test: persistence nRMSE | **0.2** | **0.2** (+0.0%) | A, B |" in md


def test_compare_says_when_the_runs_scored_different_rollouts(tmp_path, capsys):
    """eval.refine: one run's headline nRMSE is its corrected rollout, the other's (an evaluation from before the
    key) the operator's; compare says so instead of ranking them silently."""
    spec = {"codec": stage(loss=(1.0, 0.05)), "operator": stage(loss=(1.0, 0.1), val=(0.5, 0.2))}
    a = write_run(tmp_path / "A", spec, eval_=eval_json(0.1, 0.2))
    b = write_run(tmp_path / "B", spec, eval_={**eval_json(0.06, 0.2), "predictor": "operator+corrector"})
    res = cli_json(capsys, "compare", a, b)
    assert res["predictors"] == ["operator", "operator+corrector"]
    assert ("The test model nRMSE scores different rollouts: A operator, B operator+corrector (eval.refine); the "
            "operator alone of a refined run is in its eval/table.json.") in res["insights"]
    same = cli_json(capsys, "compare", a, write_run(tmp_path / "C", spec, eval_=eval_json(0.09, 0.2)))
    assert not any("different rollouts" in s for s in same["insights"])


def test_compare_different_stage_sets_and_partial(tmp_path, capsys):
    a = write_run(tmp_path / "A", {"codec": stage(), "operator": stage()}, eval_=eval_json(0.1, 0.2))
    b = write_run(tmp_path / "B", {"operator": stage(), "diffusion": stage()}, stop_at=("diffusion", 20))
    res = cli_json(capsys, "compare", a, b)
    assert res["common_stages"] == ["operator"]
    assert res["only_in"] == {"codec": ["A"], "diffusion": ["B"]}
    names = [r["name"] for r in res["metrics"]]
    assert not any(n.startswith(("codec:", "diffusion:")) for n in names)
    assert any("different stage sets" in s and "stage 'codec' only in A" in s and "stage 'diffusion' only in B" in s
               for s in res["insights"])
    assert any(s.startswith("Incomplete run(s): B") for s in res["insights"])
    nrmse = next(r for r in res["metrics"] if r["name"] == "test: model nRMSE")
    assert nrmse["values"] == [0.1, None] and nrmse["best"] == []
    wall = next(r for r in res["metrics"] if r["name"] == "total wall time (s)")
    assert wall["partial"] == [False, True] and wall["best"] == []  # B's elapsed time is not final: never "best"
    diff = res["config_diff"]
    assert diff["stage_order"] == [["codec", "operator"], ["operator", "diffusion"]]
    assert diff["stages.codec.lr"] == [1e-3, compare.ABSENT]


def test_compare_needs_two_runs_and_pct_guard(tmp_path, capsys):
    a = write_run(tmp_path / "A", {"operator": stage()})
    assert cli("compare", a) == 2
    assert one_line_error(capsys.readouterr().err).startswith(
        "error: compare needs at least two run directories (got 1)")
    assert cli("compare", a, tmp_path / "missing") == 2
    assert one_line_error(capsys.readouterr().err) == f"error: {tmp_path / 'missing'}: run directory not found"
    assert compare.pct_change(1.0, 0.0) is None
    assert compare.pct_change(0.0, 0.0) == 0.0
    assert compare.pct_change(3.0, -2.0) == pytest.approx(250.0)
    assert compare.pct_change(None, 1.0) is None


def test_compare_same_basename_and_identical_configs(tmp_path, capsys):
    a = write_run(tmp_path / "x" / "run", {"operator": stage()}, eval_=eval_json())
    b = write_run(tmp_path / "y" / "run", {"operator": stage()}, eval_=eval_json(0.04, 0.2))
    assert cli("compare", a, b) == 0
    md = capsys.readouterr().out
    assert "The configs are identical." in md
    assert f"| {a} |" in md and f"| {b} |" in md
    assert "the configs do not differ" in md


def test_old_eval_json_is_read_with_a_note_and_compare_flags_mixed_definitions(tmp_path, capsys):
    """Eval JSONs without a ``conventions`` block (equal-weight batch means) are still read, with a note."""
    new_eval = eval_json(0.05, 0.2)
    new_eval["conventions"] = {"version": 2, "frmse_Lx": 1.0}
    old = write_run(tmp_path / "old", {"operator": stage()}, eval_=eval_json(0.05, 0.2))
    new = write_run(tmp_path / "new", {"operator": stage()}, eval_=new_eval)
    s_old = cli_json(capsys, "analyze", "--workdir", old, "--no-plots")
    s_new = cli_json(capsys, "analyze", "--workdir", new, "--no-plots")
    assert s_old["evaluation"]["test"]["metric_definition"] == "batch_mean"
    assert s_old["evaluation"]["test"]["metrics"]["nrmse"]["model"] == 0.05
    assert s_new["evaluation"]["test"]["metric_definition"] == "per_trajectory"
    assert cli("analyze", "--workdir", old, "--no-plots", "--out", tmp_path / "old.md") == 0
    assert "predates per-trajectory headline metrics" in (tmp_path / "old.md").read_text()
    assert f"python -m ups_jax.evaluate --workdir {old}" in (tmp_path / "old.md").read_text()
    capsys.readouterr()
    res = cli_json(capsys, "compare", old, new)
    assert any(i.startswith("The evaluation of old predates per-trajectory") for i in res["insights"])
