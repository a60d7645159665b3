"""Issue 18, defect 3: when XLA cannot analyse a compiled program's memory the estimate says "unknown" and why,
never 0 bytes (which read as "fits on every device")."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ups_jax.driver import compiled_step, dry_run


class _NoAnalysis:
    def memory_analysis(self):
        raise NotImplementedError("not on this backend")


class _EmptyAnalysis:
    def memory_analysis(self):
        return None


def test_a_failed_memory_analysis_is_unknown_with_the_reason():
    m = dry_run._memory(_NoAnalysis())
    assert m["peak_bytes"] is None and m["temp_bytes"] is None
    assert m["memory_unknown"] == "XLA's memory_analysis() failed: NotImplementedError: not on this backend"
    assert dry_run._memory(_EmptyAnalysis())["memory_unknown"] == ("XLA's memory_analysis() returned nothing on "
                                                                   "this backend")
    x = jnp.ones((256, 256), jnp.float32)
    real = dry_run._memory(jax.jit(lambda a: a @ a).lower(x).compile())
    assert "memory_unknown" not in real
    assert real["argument_bytes"] == 256 * 256 * 4 and real["output_bytes"] == 256 * 256 * 4
    assert real["peak_bytes"] >= 2 * 256 * 256 * 4


def test_validate_reports_an_unknown_memory_as_a_warning(monkeypatch):
    from ups_jax.checks import Checks
    from ups_jax.driver import validate

    monkeypatch.setattr(compiled_step, "compiled_stage_memory",       # where validate imports it from
                        lambda cfg: {"codec": {**dry_run._memory(_NoAnalysis()), "flops": 1.0}})
    c = Checks()
    validate.check_memory(None, c)
    item, = c.items
    assert (item.name, item.ok, item.severity) == ("codec memory", False, "warning")
    assert item.message == ("compiled codec step: memory unknown (XLA's memory_analysis() failed: "
                            "NotImplementedError: not on this backend)")


def test_the_report_prints_unknown_not_zero():
    stage = {"steps": 6, "setup_s": 0.1, "compile_s": 1.0, "evals": 2, "flops_per_step": 1e6,
             **dry_run._memory(_NoAnalysis())}
    r = {"config": "c", "device": "cpu", "device_kind": "cpu", "params": {"total": 1}, "notes": [],
         "stages": {"codec": stage}, "gpu": {"A100": {"train_s": 1.0, "hours": 0.0, "price_per_hour": 1.0,
                                                      "cost_usd": 0.0, "fits": None}},
         "recommendation": None, "device_peak_bytes": None, "efficiency": 0.3}
    text = dry_run.format_report(r)
    codec_line, = [line for line in text.splitlines() if line.startswith("codec")]
    assert codec_line.rstrip().endswith("unknown") and "0.0 MiB" not in text
    assert any(line.startswith("A100") and line.rstrip().endswith("unknown") for line in text.splitlines())
