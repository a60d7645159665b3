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
    """``ray.init`` for ``address``: None = inside a Ray job (RAY_ADDRESS) or a new local instance; 'auto' = the
    cluster running on this machine; 'host:port' = that cluster's GCS (checked with a TCP connect first, so an
    unreachable head is an error within seconds instead of Ray's minute of retries); 'ray://host:10001' = Ray
    Client."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address and address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: that is the dashboard/jobs address (for ray job submit); pass the "
                        f"cluster's GCS address host:6379, 'auto' on the head node, or submit with ray job submit")
    if address and address != "auto":
        host_port = address.removeprefix("ray://")
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--address {address}: expected host:port (e.g. 10.0.0.10:6379), ray://host:10001 "
                            f"or auto")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise UserError(f"--address {address}: no Ray cluster reachable there ({e.strerror or e}); check the "
                            f"head's address (ray status on the head), or omit --address to run locally") from None
    kwargs = {}
    if not address and not os.environ.get("RAY_ADDRESS"):
        kwargs = dict(num_cpus=local_cpus) if local_cpus else {}
    try:
        ray.init(address=address or None, **kwargs)
    except ConnectionError as e:
        raise UserError(f"--address {address}: {str(e).splitlines()[0]}; start a cluster (ray start --head, "
                        f"ray up) or omit --address to run locally") from None
    return ray
