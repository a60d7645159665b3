"""Preflight of a sweep: before ``Tuner.fit``, one Ray task with a trial's resources runs where a trial would
and checks what every trial needs from its node, so that a cluster that cannot work fails in seconds with one
line instead of after ``max_failures`` retries of every trial.

On the worker the task writes, reads back and deletes a marker in the sweep's storage (with the worker's own
credentials: Ray's launchers give the head's IAM role / service account to the head only), and reports the JAX
backend and the memory-fraction variable it sees (``fleet.env``). It then leaves a second marker that the driver
must see: a local path that is not shared between the nodes (a multi-node cluster without NFS) is refused.
"""

from __future__ import annotations

import os
import socket
import uuid

from ups_jax.errors import UserError

TIMEOUT_S = float(os.environ.get("UPS_JAX_PREFLIGHT_TIMEOUT_S", 900))   # a GPU node may have to be started first
MARKER = ".ups_jax_preflight"
CREDENTIALS_FIX = ("give the worker nodes access to the storage (AWS: IamInstanceProfile in the worker node type's "
                   "node_config; GCP: serviceAccounts in its node_config; see docs/fleet.md, 'Credentials')")


def check_node(storage_uri: str, gpus: float, token: str) -> dict:
    """Runs as the Ray task on a worker (module-level, so Ray pickles it by reference)."""
    from ups_jax.fleet import storage as st
    from ups_jax.fleet.env import MEM_FRACTION_VARS, configure_jax

    configure_jax(gpus)                               # as a trial would, before JAX starts a backend
    import ray

    out = {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
           "hostname": socket.gethostname(), "storage_error": None}
    probe = st.join(storage_uri, f"{MARKER}-{token}-probe")
    try:
        st.write_text(probe, token)
        if st.read_text(probe) != token:
            raise UserError(f"{probe}: read back other content than written")
        st.delete(probe)
        st.write_text(st.join(storage_uri, f"{MARKER}-{token}"), token)   # for the driver to see
    except st.StorageError as e:
        out["storage_error"] = e.cause
    except UserError as e:
        out["storage_error"] = str(e)
    import jax

    out["platform"] = jax.devices()[0].platform
    out["env"] = {v: os.environ[v] for v in ("JAX_PLATFORMS", *MEM_FRACTION_VARS) if v in os.environ}
    return out


def run(storage_uri: str, *, cpus: float, gpus: float, allow_cpu_fallback: bool, timeout_s: float = TIMEOUT_S) -> dict:
    """The driver's side: one task, one line on failure (UserError), the worker's record on success."""
    import ray

    from ups_jax.fleet import storage as st

    token = uuid.uuid4().hex[:12]
    task = ray.remote(check_node).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    ref = task.remote(storage_uri, gpus, token)
    try:
        info = ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise UserError(f"preflight: no node with a trial's resources (cpu={cpus:g}, gpu={gpus:g}) ran a task within "
                        f"{timeout_s:g} s; check the cluster's node types and `ray status`") from None
    except ray.exceptions.RayError as e:
        raise UserError(f"preflight: the check task failed ({st.first_line(e)}); see the worker's log") from None
    where = f"preflight on node {info['node_ip']} ({info['hostname']})"
    if info["storage_error"]:
        raise UserError(f"{where}: cannot use the sweep's storage {storage_uri} from a worker "
                        f"({info['storage_error']}); {CREDENTIALS_FIX}")
    marker = st.join(storage_uri, f"{MARKER}-{token}")
    seen = st.read_text(marker)
    st.delete(marker)
    if seen != token:
        raise UserError(f"{where}: the storage {storage_uri} is not shared: a file the worker wrote there is not "
                        f"visible to the driver on {socket.gethostname()}; on a cluster of several nodes use "
                        f"s3://..., gs://... or a file system mounted on every node")
    if gpus > 0 and info["platform"] != "gpu" and not allow_cpu_fallback:
        raise UserError(f"{where}: a trial holds {gpus:g} GPU(s) but JAX sees only {info['platform']} devices "
                        f"({info['env']}); install jax[cuda12] on the workers (worker_setup_commands) or set "
                        f"resources gpu=0")
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items()) or "JAX defaults"
    print(f"preflight: node {info['node_ip']} ({info['hostname']}) reads and writes {storage_uri}; JAX backend "
          f"{info['platform']}, {env}", flush=True)
    return info
