"""Compile once: the persistent XLA compilation cache for the command lines, and a count of the programs compiled
while a stage trains (so that a recompile — a batch shape or dtype that changed — is a log line, not a silent
minute lost every time).

``runtime.compilation_cache`` (configs/burgers32.py): 'auto' = ``$XDG_CACHE_HOME/ups_jax/jax`` (default
``~/.cache/ups_jax/jax``), a directory, or '' to turn the cache off. Set before the first compile; a directory
already chosen by the caller (``JAX_COMPILATION_CACHE_DIR``, e.g. the test suite's) wins.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import jax

log = logging.getLogger(__name__)

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"   # jax._src.dispatch.BACKEND_COMPILE_EVENT
_lock = threading.Lock()
_compiles = {"count": 0, "seconds": 0.0}
_listening = False


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ups_jax" / "jax"


def enable_cache(setting: str = "auto") -> str | None:
    """Turns the persistent compilation cache on (``setting``: 'auto', a directory, '' = off); returns the
    directory in use, or None. Programs that compile in under a second are not cached (not worth the disk)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    setting = str(setting or "").strip()
    if not setting:
        return None
    path = default_cache_dir() if setting == "auto" else Path(setting).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:     # a cache is an optimisation: say so and go on without it
        log.warning(f"runtime.compilation_cache={setting!r}: cannot create {path} ({e.strerror}); compiling "
                    f"without a persistent cache")
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return str(path)


def enable_cache_from_config(cfg) -> str | None:
    runtime = cfg.get("runtime") if hasattr(cfg, "get") else None
    return enable_cache(runtime.get("compilation_cache", "auto") if runtime is not None else "auto")


def _on_event(event: str, duration: float, **_) -> None:
    if event == _COMPILE_EVENT:
        with _lock:
            _compiles["count"] += 1
            _compiles["seconds"] += float(duration)


def compiles() -> tuple[int, float]:
    """(programs compiled by XLA in this process so far, their total compile seconds); cache hits excluded."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening = True
    with _lock:
        return _compiles["count"], _compiles["seconds"]


class RecompileWatch:
    """``arm()`` once everything a stage runs has compiled (its first dispatch and validation); ``check()`` then
    logs one line per new batch of compiles."""

    def __init__(self, where: str):
        self.where, self.base = where, None
        compiles()          # start listening now

    def arm(self) -> None:
        self.base = compiles()

    def check(self) -> int:
        if self.base is None:
            return 0
        now = compiles()
        new = now[0] - self.base[0]
        if new:
            log.warning(f"{self.where}: {new} program(s) compiled again during training ({now[1] - self.base[1]:.1f} "
                        f"s): a shape or dtype changed between calls; JAX_EXPLAIN_CACHE_MISSES=1 says which")
            self.base = now
        return new
