"""Connecting to Ray: a clear one-line error for a missing install or an unreachable cluster, never a hang."""

from __future__ import annotations

import os
import socket

from ups_jax.errors import UserError

INSTALL_HINT = "pip install 'ups_jax[fleet]' (ray[default,tune]==2.60)"


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"Ray is not installed; {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, *, local_cpus: int | None = None):
    """``ray.init`` for ``address``: None = inside a Ray job its cluster (RAY_ADDRESS), else a new local instance
    (never a stale one left in /tmp/ray); 'auto' = the cluster running on this machine; 'host:port' = that
    cluster's GCS; 'ray://host:10001' = Ray Client. A cluster address is checked with a TCP connect first, so an
    unreachable head is an error within seconds instead of Ray's minutes of retries."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address and address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: that is the dashboard/jobs address (for ray job submit); pass the "
                        f"cluster's GCS address host:6379, 'auto' on the head node, or submit with ray job submit")
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(address="local", **({"num_cpus": local_cpus} if local_cpus else {}))
        return ray
    target = address or os.environ["RAY_ADDRESS"]
    if target == "auto":
        from ray._private.utils import read_ray_address   # the file `ray start` writes: /tmp/ray/ray_current_cluster

        found = os.environ.get("RAY_ADDRESS") or read_ray_address()
        if not found:
            raise UserError("--address auto: no Ray cluster was started on this machine (ray start --head / ray up); "
                            "pass host:port, or omit --address to run locally")
        check_reachable(found, shown=f"--address auto ({found})")
    else:
        check_reachable(target, shown=f"--address {target}")
    try:
        ray.init(address=address or None)
    except ConnectionError as e:
        raise UserError(f"--address {address}: {str(e).splitlines()[0]}; start a cluster (ray start --head, "
                        f"ray up) or omit --address to run locally") from None
    return ray


def check_reachable(address: str, *, shown: str) -> None:
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{shown}: expected host:port (e.g. 10.0.0.10:6379), ray://host:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"{shown}: no Ray cluster reachable there ({e.strerror or e}); check the head's address "
                        f"(ray status on the head), or omit --address to run locally") from None
