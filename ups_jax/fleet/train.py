"""``python -m ups_jax.fleet.train --config FILE.py[:variant] --workdir SHARED_DIR [--gpus G] [--cpus C]
[--address auto] [--max-restarts N] [--config.a.b=value ...]``

Runs one training (all stages, then the test evaluation) as a Ray actor on the cluster; see
``ups_jax.fleet.actor``. Re-running the command resumes the run in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ups_jax.errors import ConfigError, run_cli


def main(argv) -> int:
    from ups_jax.config import split_config_args

    spec, overrides, rest = split_config_args(argv)
    p = argparse.ArgumentParser(prog="python -m ups_jax.fleet.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="run directory on storage every node can reach")
    p.add_argument("--gpus", type=float, default=0, help="GPUs for the actor (fractional allowed; 0 = CPU)")
    p.add_argument("--cpus", type=float, default=1)
    p.add_argument("--address", help="Ray cluster (default: inside a Ray job its cluster, else local)")
    p.add_argument("--max-restarts", type=int, default=2)
    args = p.parse_args(rest)
    if spec is None:
        raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
    from ups_jax.fleet import cluster

    cluster.require_ray()
    cfg = run_config(spec, overrides)
    cluster.connect(args.address)
    import ray

    from ups_jax.fleet.actor import start_trainer

    trainer = start_trainer(cfg, args.workdir, cpus=args.cpus, gpus=args.gpus, max_restarts=args.max_restarts)
    print(json.dumps(ray.get(trainer.fit.remote()), indent=1, default=str))
    return 0


def run_config(spec: str, overrides) -> "ml_collections.ConfigDict":
    """The config with ``data.paths`` made absolute: the actor runs in a Ray worker's own directory, so a path
    typed on this command line is resolved against this command's directory here, not there."""
    from ups_jax.config import load_config

    cfg = load_config(spec, overrides)
    cfg.data.paths = tuple(str(Path(p).expanduser().absolute()) for p in cfg.data.paths)
    return cfg


if __name__ == "__main__":
    sys.exit(run_cli(main))
