"""The kill/preemption test hook of the stage loop (tests/test_reliability.py, benchmarks/resume_kill.py, the Ray
fault test): ``UPS_JAX_TEST_FAULT="<stage>:<step>:<KILL|TERM>[@save]"`` sends that signal to this process right
after optimizer update <step> of <stage> (or, with @save, right after the checkpoint of that step has been handed
to orbax, while it is still being written). Unset, it costs one comparison per dispatch."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "UPS_JAX_TEST_FAULT"


def fault_from_env():
    """(stage, step, 'step' | 'save', signal) from ``UPS_JAX_TEST_FAULT``, or None."""
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    stage, step, sig = spec.split(":")
    sig, _, where = sig.partition("@")
    return stage, int(step), where or "step", {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[sig.upper()]


def inject_fault(fault, stage: str, step: int, where: str) -> None:
    if fault is not None and fault[:3] == (stage, step, where):
        os.kill(os.getpid(), fault[3])
