"""Config loading: ``path.py[:arg]`` files with ``get_config(arg)`` plus ``--config.a.b=value`` overrides.

Same conventions as ml_collections' ``config_flags`` (big_vision style ``file.py:variant``), but without absl's
global flag registry so that every entry point (train, evaluate, driver subcommands, Ray trials) and the tests
share one loader, and every mistake is a one-line :class:`ConfigError` naming the key and the fix.
Configs come back locked: a misspelled key is an error, never a silent new field.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

from ups_jax.errors import ConfigError
from ups_jax.paths import find_file

# Keys a config file sets from its variant: an override would change the label, not the config.
DERIVED_KEYS = {"variant": "choose the variant with --config FILE:VARIANT (e.g. --config configs/burgers32.py:cpu)"}


def import_user_file(path: str, kind: str, *, example: str):
    """Imports a user's Python file (a config or an experiment) found relative to the current directory, else to
    the project root (Ray jobs and trials run elsewhere); a missing or broken file is a one-line ConfigError."""
    file = find_file(path)
    if not file.is_file():
        raise ConfigError(f"{path}: {kind} file not found (pass {example})")
    module_spec = importlib.util.spec_from_file_location(f"_ups_{kind}_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a broken file is the user's input, not our bug
        raise ConfigError(f"{path}: cannot import {kind} file: {type(e).__name__}: {e}") from e
    return module


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path.py`` or ``path.py:arg`` and applies ``key.path=value`` overrides; returns a locked config."""
    path, _, arg = spec.partition(":")
    module = import_user_file(path, "config", example="--config configs/burgers32.py[:cpu|:test]")
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: has no get_config(arg=None) function")
    try:
        cfg = module.get_config(arg or None)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from e
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    cfg.lock()
    for item in overrides:
        apply_override(cfg, item, source=path)
    return cfg


def apply_override(cfg: ml_collections.ConfigDict, item: str, source: str = "config") -> None:
    """Applies one ``a.b.c=value`` override, parsing ``value`` by the type of the existing field."""
    key, eq, raw = item.partition("=")
    key = key.strip().removeprefix("--config.").removeprefix("config.")
    if not eq or not key:
        raise ConfigError(f"override {item!r}: expected --config.key.path=value")
    if key in DERIVED_KEYS:
        raise ConfigError(f"--config.{key}={raw.strip()}: '{key}' cannot be overridden; {DERIVED_KEYS[key]}")
    parent, leaf = _resolve_parent(cfg, key, source)
    current = parent[leaf]
    _assign(parent, leaf, parse_value(raw, current, key), f"--config.{key}={raw}")


def set_value(cfg: ml_collections.ConfigDict, key: str, value: Any, source: str = "config") -> None:
    """Sets the existing field ``a.b.c`` to a Python value (e.g. one sampled by Ray Tune), type-checked like an
    override: an unknown key or a value of the wrong type is a one-line :class:`ConfigError` naming ``source``."""
    parent, leaf = _resolve_parent(cfg, key, source)
    current = parent[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"{source}: '{key}' is a config section, not a value; name one of its keys "
                          f"({', '.join(list(current.keys())[:4])}, ...)")
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    _assign(parent, leaf, value, f"{source}: {key}={value!r}")


def check_key(cfg: ml_collections.ConfigDict, key: str, source: str = "config") -> None:
    """Raises the same one-line error as an override when ``key`` is not a field of ``cfg``."""
    _resolve_parent(cfg, key, source)


def _assign(parent, leaf: str, value: Any, where: str) -> None:
    try:
        with parent.ignore_type() if parent[leaf] is None else _nullcontext():
            parent[leaf] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _resolve_parent(cfg, key: str, source: str):
    parts = key.split(".")
    node = cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            prefix = ".".join(parts[:depth])
            options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            near = difflib.get_close_matches(part, options, n=1)
            hint = f" (did you mean '{'.'.join(filter(None, [prefix, near[0]]))}'?)" if near else ""
            raise ConfigError(f"{source}: unknown config key '{key}'{hint}")
        if depth == len(parts) - 1:
            return node, part
        node = node[part]
    raise AssertionError("unreachable")


def parse_value(raw: str, current: Any, key: str) -> Any:
    """Parses a command-line string into the type of ``current`` (the field's existing value)."""
    raw = raw.strip()
    try:
        if isinstance(current, bool):
            low = raw.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError("expected true/false")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, str):
            return raw
        if isinstance(current, (tuple, list)):
            value = ast.literal_eval(raw) if raw[:1] in "([" else tuple(v.strip() for v in raw.split(",") if v.strip())
            if not isinstance(value, (tuple, list)):
                value = (value,)
            elements = [parse_value(str(v), current[0], key) if current else v for v in value]
            return type(current)(elements)
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError("is a section, not a value; override one of its keys")
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    except (ValueError, SyntaxError, TypeError) as e:
        kind = type(current).__name__
        raise ConfigError(f"--config.{key}={raw}: bad value for a {kind} field ({e})") from e


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """Pulls ``--config FILE[:arg]`` and ``--config.x=y`` / ``--config.x y`` out of argv; returns the rest."""
    spec, overrides, rest = None, [], []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config" or a.startswith("--config="):
            if "=" in a:
                spec = a.split("=", 1)[1]
            else:
                if i + 1 >= len(args):
                    raise ConfigError("--config needs a value: --config configs/burgers32.py[:cpu]")
                spec, i = args[i + 1], i + 1
        elif a.startswith("--config."):
            if "=" in a:
                overrides.append(a[len("--config."):])
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"{a} needs a value: {a}=VALUE")
                overrides.append(f"{a[len('--config.'):]}={args[i + 1]}")
                i += 1
        else:
            rest.append(a)
        i += 1
    return spec, overrides, rest


def config_to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)


def config_from_dict(d: dict) -> ml_collections.ConfigDict:
    """Rebuilds a locked config from ``cfg.to_dict()`` (checkpoint metadata, Ray trials)."""
    cfg = ml_collections.ConfigDict(d)
    cfg.lock()
    return cfg


def flatten(d: Mapping, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}``; config diffs, W&B, and parameter paths (``sep='/'``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + sep, sep))
        else:
            out[name] = v
    return out


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_name(spec: str) -> str:
    """The name a run of config ``path.py[:arg]`` gets: the file's stem, then ``_arg`` (``burgers32_cpu``)."""
    path, _, arg = spec.partition(":")
    return Path(path).stem + (f"_{arg}" if arg else "")


WANDB_MODES = ("auto", "online", "offline", "disabled")


def resolve_wandb_mode(mode: str) -> str:
    """``logging.wandb_mode`` → the mode W&B runs in. W&B is never required: without a key we log offline only
    if asked (WANDB_MODE), else not at all."""
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "")
        if env in WANDB_MODES[1:]:
            return env
        return "online" if os.environ.get("WANDB_API_KEY") else "disabled"
    if mode not in WANDB_MODES:
        raise ConfigError(f"logging.wandb_mode={mode!r}: choose auto, online, offline or disabled")
    return mode
