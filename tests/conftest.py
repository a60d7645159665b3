"""Shared pytest fixtures. Keep them session-scoped and tiny: the whole suite must stay fast on 2 CPU cores.

Data fixtures (generated once per session by the real JAX solver, PDEBench layout):

* ``burgers_file``: ``1D_Burgers_Sols_Nu0.01.hdf5``, 12 samples x 201 frames x 64 cells on (-1, 1), seed 2022,
  with PDEBench's 202-value ``t-coordinate``. Treat as read-only.
* ``burgers_dir``: a directory with that file and ``1D_Burgers_Sols_Nu0.1.hdf5`` (the same 12 ICs: PDEBench
  uses one seed for every Nu): two viscosities for multi-file / nu-conditioning tests. Treat as read-only.

Run fixture: ``trained_run`` = (workdir, cfg, results) of one finished ``configs/burgers32.py:test`` run on
``burgers_file`` (every stage of :test — codec, operator, corrector, student, steady — the FNO baseline in
``baselines/fno``, the test evaluation and the comparison table), trained once per session in-process. It is read-only for
every test (other modules read it concurrently on the other xdist worker): copy it before changing anything.

Parallel runs (``make test`` = ``pytest -n 2``, pytest-xdist): the data and ``trained_run`` are made once for all
workers (the first worker to need them makes them under a file lock, the others wait and reuse them); each test
module runs whole on one worker (its module fixtures are made once), and the modules that start Ray are one unit,
so that only one Ray cluster runs at a time.
"""

from __future__ import annotations

import os
import shutil

# Every Ray process the tests start binds to 127.0.0.1: Ray resolves "127.0.0.1" to the machine's routable address
# (services.resolve_ip_for_localhost) unless its single-machine mode is on, which must be set before ray is imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import pytest

TINY = dict(samples=12, nx=64, x_min=-1.0, x_max=1.0, chunk=12, progress=False)


# Modules that start a Ray cluster: one xdist unit (two clusters on two cores would each wait for CPUs).
RAY_MODULES = {"test_fleet_ray.py", "test_fleet_node_loss.py"}
# The longest units, handed out first in this order (then xdist's own order, most tests first): the Ray unit
# (~14 min on CI's machine) goes to one worker while the other makes the shared ``trained_run`` inside
# test_reliability.py, so that neither worker waits on the other's lock at the start and the long units do not
# end up last on one worker.
FIRST_UNITS = ("ray modules", "test_reliability.py", "test_dry_run.py", "test_stages.py", "test_benchmarks.py")


@pytest.hookimpl(optionalhook=True)      # a pytest-xdist hook: absent without xdist
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n N``: each test module is one unit of work (its module fixtures are made once), the modules that
    start Ray are one unit together, and the longest units (``FIRST_UNITS``) are handed out first."""
    from pathlib import Path

    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = Path(nodeid.split("::", 1)[0]).name
            return "ray modules" if module in RAY_MODULES else module

        def _assign_work_unit(self, node) -> None:
            # the queue is complete when the first unit is assigned: move the longest units to its front once
            if not getattr(self, "_longest_first", False):
                self._longest_first = True
                for unit in reversed(FIRST_UNITS):
                    if unit in self.workqueue:
                        self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)


def made_once(tmp_path_factory, name: str, make):
    """``make(directory)`` for a session fixture, computed once per test run: without xdist in this process's own
    temporary directory; under xdist by the first worker that asks, under a file lock in the run's shared
    temporary directory, its value pickled for the other workers (which wait, then load it)."""
    import pickle

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / name       # shared by all workers of this run
    value_file = root.parent / f"{name}.value.pkl"
    with FileLock(str(root) + ".lock"):
        if value_file.is_file():
            return pickle.loads(value_file.read_bytes())
        if root.exists():                                     # a worker died while making it: start over
            shutil.rmtree(root)
        root.mkdir()
        value = make(root)
        value_file.write_bytes(pickle.dumps(value))
        return value


def _make_burgers_data(root):
    from ups_jax.data.generate import generate_burgers_file

    two = root / "two_viscosities"
    generate_burgers_file(two, nu=0.01, seed=2022, **TINY)
    generate_burgers_file(two, nu=0.1, seed=2022, **TINY)   # same ICs (as PDEBench)
    # its own directory, so that passing its parent never picks up the second viscosity
    single = root / "single" / "1D_Burgers_Sols_Nu0.01.hdf5"
    single.parent.mkdir()
    shutil.copyfile(two / "1D_Burgers_Sols_Nu0.01.hdf5", single)
    return two, single


@pytest.fixture(scope="session")
def _burgers_data(tmp_path_factory):
    return made_once(tmp_path_factory, "burgers_tiny", _make_burgers_data)


@pytest.fixture(scope="session")
def burgers_dir(_burgers_data):
    return _burgers_data[0]


@pytest.fixture(scope="session")
def burgers_file(_burgers_data):
    return _burgers_data[1]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, burgers_file, jax_compilation_cache):
    """One finished ``configs/burgers32.py:test`` run on ``burgers_file`` (every stage, the FNO baseline, the test
    evaluation and the comparison table), trained in-process once per session: ``(workdir, cfg, results)``. Treat
    as read-only (copy it to modify)."""
    from pathlib import Path

    from ups_jax.config import load_config
    from ups_jax.training.pipeline import train_and_evaluate

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "burgers32.py") + ":test")
    # what train_and_evaluate(data_paths=...) sets in the config it trains; set here too, because on the xdist
    # worker that reuses another worker's run (made_once) train_and_evaluate never runs
    with cfg.unlocked():
        cfg.data.paths = (str(burgers_file),)

    def make(root):
        workdir = root / "w"
        return workdir, train_and_evaluate(cfg, workdir, data_paths=[burgers_file])

    workdir, results = made_once(tmp_path_factory, "run", make)
    return workdir, cfg, results


# ---- JAX persistent compilation cache for the whole test session (added for tests/test_training.py) ----
# The training/CLI tests compile the same tiny programs many times (in-process and in subprocesses); with a
# session cache each distinct program is compiled once. Subprocesses inherit it through the JAX_* variables.
@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    import os

    import jax

    path = str(tmp_path_factory.mktemp("jax_cache"))
    env = {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # if anything compiled before this fixture, the cache was initialised as "off": re-initialise
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ---- Ray head for the fleet tests (tests/test_fleet_ray.py) ----------------------------------------------------
# One local head for the session: 127.0.0.1 only, 2 CPUs, 1 fake GPU (Ray advertises it; trials still run JAX on
# CPU), dashboard on 127.0.0.1 for `ray job submit`, every port chosen free (other Ray instances on the machine
# keep theirs), token auth off (nothing written to ~/.ray). `ray start --block` keeps the head's processes under
# one parent; teardown terminates it and then kills, by pid, any of its descendants still alive.
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_env(jax_compilation_cache):
    """Environment for Ray CLIs and drivers started by the tests (the head's workers inherit it)."""
    import os
    import sys
    from pathlib import Path

    venv_bin = str(Path(sys.executable).parent)
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", JAX_PLATFORMS="cpu",
                WANDB_MODE="disabled", PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture(scope="session")
def ray_head(ray_env, tmp_path_factory):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    import psutil

    ray_bin = str(Path(sys.executable).parent / "ray")
    names = ["port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "ray-client-server-port", "node-manager-port", "object-manager-port", "runtime-env-agent-port",
             "metrics-export-port"]
    ports = {n: _free_port() for n in names}
    cwd = tmp_path_factory.mktemp("ray_head")          # jobs without --working-dir run here
    cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=1",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
           f"--object-store-memory={100 * 2**20}", *[f"--{n}={p}" for n, p in ports.items()]]
    proc = subprocess.Popen(cmd, cwd=cwd, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = []
    for line in proc.stdout:                          # blocks until the head reports it is up (or exits)
        log.append(line)
        if "Ray runtime started" in line:
            break
    else:
        raise RuntimeError("ray start --head failed:\n" + "".join(log[-30:]))
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    deadline = time.monotonic() + 120
    while True:                                       # the dashboard comes up after the GCS: wait until it answers
        try:
            urllib.request.urlopen(dashboard + "/api/version", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("Ray dashboard did not come up:\n" + "".join(log[-30:])) from None
            time.sleep(0.5)
    yield {"address": f"127.0.0.1:{ports['port']}", "dashboard": dashboard, "env": ray_env, "cwd": cwd}
    descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    for p in descendants:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=30)
    # `ray start` wrote its address to /tmp/ray/ray_current_cluster; a later plain ray.init() on this machine would
    # try to join the dead head. Remove it if it still names ours (as `ray stop` would).
    from ray._private.utils import get_ray_address_file

    address_file = Path(get_ray_address_file(None))
    if address_file.is_file() and address_file.read_text().strip().endswith(f":{ports['port']}"):
        address_file.unlink()
