"""``python -m ups_jax.fleet.status --experiment PATH_OR_URI [--json]``

Prints the fleet table of a sweep (running, interrupted or finished) from its storage alone: per trial the
changed config keys, best validation metric, steps, status, retries, device-hours and cost, and the totals.
"""

from __future__ import annotations

import argparse
import json
import sys

from ups_jax.errors import run_cli


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m ups_jax.fleet.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the sweep's directory: <storage>/<name> (path or URI)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    args = p.parse_args(argv)
    from ups_jax.fleet import cluster
    from ups_jax.fleet import summary as sm

    cluster.require_ray()
    summary = sm.load(args.experiment)
    print(json.dumps(summary, indent=1, default=str) if args.json else sm.format_table(summary))
    return 0


def cli() -> None:
    """Console script (``[project.scripts]`` in pyproject.toml)."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
