"""The argument parser every ``python -m ups_jax...`` command uses: a usage mistake is one line (exit 2, via
``errors.run_cli``), and ``--help`` lists ``--config`` with its variants and overrides, and ``--debug``."""

from __future__ import annotations

import argparse
from typing import Sequence

from ups_jax.errors import ConfigError, UserError

CONFIG_HELP = ("config file and variant: configs/burgers32.py (the original's 32-dim size, for a GPU), "
               "configs/burgers32.py:cpu (about 15 min on 2 CPU cores), configs/burgers32.py:test (seconds; "
               "tests). The variants of a config file are listed in its docstring")
OVERRIDE_HELP = ("override one config key, typed like the key, e.g. --config.stages.operator.steps=500 or "
                 "--config.runtime.data_parallel=off (repeatable; an unknown key is an error)")
DEBUG_HELP = "on an error, show the full traceback instead of the one-line message"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the project's conventions. ``config=True`` documents ``--config FILE[:VARIANT]`` and
    ``--config.KEY=VALUE``; :meth:`parse_with_config` pulls them out (``config.split_config_args``)."""

    def __init__(self, *args, config: bool = False, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)     # '--conf x' must not silently become '--config x'
        super().__init__(*args, **kwargs)
        self._config = config
        if config:
            g = self.add_argument_group("config")
            g.add_argument("--config", metavar="FILE[:VARIANT]", help=CONFIG_HELP)
            g.add_argument("--config.KEY", metavar="VALUE", dest="_override_help", help=OVERRIDE_HELP)
        self.add_argument("--debug", action="store_true", help=DEBUG_HELP)

    def error(self, message):     # one line, exit 2 (run_cli), instead of argparse's usage block
        raise UserError(f"{self.prog}: {message} (see --help)")

    def parse_with_config(self, argv: Sequence[str], *, required: bool = True):
        """Returns ``(spec, overrides, args)``; ``spec`` is ``FILE[:VARIANT]`` (None when not given)."""
        from ups_jax.config import split_config_args

        spec, overrides, rest = split_config_args(argv)
        args = self.parse_args(rest)
        if spec is None and required:
            raise ConfigError("missing --config: e.g. --config configs/burgers32.py:cpu")
        return spec, overrides, args
