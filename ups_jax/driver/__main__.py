"""Thin dispatcher: each subcommand lives in its own module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

from ups_jax.cli import CONFIG_HELP, DEBUG_HELP, OVERRIDE_HELP
from ups_jax.errors import UserError, run_cli

SUBCOMMANDS = {
    "validate": ("ups_jax.driver.validate", "check a config (architecture, data, hyper-parameters, checkpoints)"),
    "validate-data": ("ups_jax.driver.validate_data", "check PDEBench-layout HDF5 files"),
    "dry-run": ("ups_jax.driver.dry_run", "compile and time every stage; estimate time, memory and cost"),
    "analyze": ("ups_jax.driver.analyze", "report on a finished or partial run"),
    "compare": ("ups_jax.driver.compare", "compare two or more runs"),
}

USAGE = "usage: python -m ups_jax.driver {" + ",".join(SUBCOMMANDS) + "} [options] [--debug]\n" + "\n".join(
    f"  {name:14s} {help_}" for name, (_, help_) in SUBCOMMANDS.items()
) + ("\n\noptions of every subcommand: --help; --debug (" + DEBUG_HELP + ")"
     "\nvalidate, dry-run: --config FILE[:VARIANT] (" + CONFIG_HELP + "); --config.KEY=VALUE (" + OVERRIDE_HELP + ")")


def main(argv) -> int:
    if not argv:
        raise UserError(f"missing subcommand: python -m ups_jax.driver {{{','.join(SUBCOMMANDS)}}} ... "
                        f"(--help lists them)")
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    name, rest = argv[0], list(argv[1:])
    if name not in SUBCOMMANDS:
        raise UserError(f"unknown subcommand {name!r}; choose one of: {', '.join(SUBCOMMANDS)}")
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(run_cli(main))
