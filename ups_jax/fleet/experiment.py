"""Sweeps as code: an ``experiments/*.py`` file defines ``get_experiment()`` returning an :class:`Experiment`.

The experiment names a base config (``file.py:variant``, relative to the project root), fixed overrides, a Tune
search space over *config keys* (``{"stages.operator.lr": tune.loguniform(3e-4, 3e-3)}``), the metric and mode,
the scheduler, the number of samples, resources per trial and the storage. Everything is checked before a trial
starts: unknown keys, values of the wrong type, a missing metric or search space are one-line errors naming the
experiment file.

The metric and ASHA's time axis (a sweep trains the *whole* staged pipeline in every trial):

* ``metric`` is the validation metric of the **last** stage, read from the stage table (``val/nrmse`` for the
  operator and the refiners, ``val/recon_nrmse`` for the codec, ``val/final_nrmse`` for ``steady``). Earlier
  stages report it as NaN: their own validation metric is a different quantity (a reconstruction error is not a
  rollout error) and must not enter the comparison. Their values are reported under ``<stage>/val/...``.
* The time attribute is ``global_step``: optimizer updates summed over the stages (``stages.<s>.steps``, whatever
  ``accum_steps``: ``training.pipeline.stage_offsets``, the loop's and W&B's step), identical for every trial of
  the sweep and unchanged by a restart (it comes from the checkpointed step, not from a report counter that a
  restored trial would recount). The default ASHA places its first rung at the last stage's first validation
  (``grace_period = steps before the last stage + its eval_every``) and ``max_t`` at the total, so rungs only
  ever compare last-stage metrics; a ``grace_period`` inside an earlier stage is rejected.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from ups_jax.config import check_key, import_user_file, load_config, set_value
from ups_jax.errors import ConfigError
from ups_jax.paths import project_path

# The validation metric of each validator kind of the stage table (``training.stages.KINDS[name].validator``):
# what ``training.stages.make_validator`` returns as the stage's metric; a trial checks it again at run time.
VALIDATOR_METRIC = {"recon": "val/recon_nrmse", "rollout": "val/nrmse", "steady": "val/final_nrmse"}
TIME_ATTR = "global_step"


def stage_val_metric(stage: str) -> str:
    """The validation metric stage ``stage`` logs, from the stage table (an unknown stage: ConfigError)."""
    from ups_jax import stage_kinds
    from ups_jax.training.stages import stage_kind

    stage_kinds.check_known(stage)
    return VALIDATOR_METRIC[stage_kind(stage).validator]


@dataclasses.dataclass
class Experiment:
    name: str
    config: str                                    # base config 'configs/burgers32.py:test' (project-relative)
    search_space: dict = dataclasses.field(default_factory=dict)   # {'config.key': tune domain or value}
    metric: str = ""                               # the last stage's validation metric, e.g. 'val/nrmse'
    mode: str = "min"
    overrides: Sequence[str] = ()                  # fixed 'key=value' overrides for every trial
    num_samples: int = 1                           # Tune samples (a grid is repeated num_samples times)
    scheduler: Any = "asha"                        # 'asha', 'fifo', {'type': 'asha', **options}, or a Tune scheduler
    resources: dict = dataclasses.field(default_factory=lambda: {"cpu": 1, "gpu": 0})   # per trial; gpu may be 0.5
    accelerator: str | None = None                 # GPU type for the cost table: a key of cfg.cost.price_per_hour
    max_concurrent_trials: int | None = None
    max_failures: int = 2                          # retries of a failed trial, from its last checkpoint
    storage: str = "runs/sweeps"                   # local path (project-relative) or s3:// / gs:// URI
    checkpoints_to_keep: int = 2                   # Tune checkpoints (whole run snapshots) kept per trial
    search_seed: int | None = 0                    # seeds the sampling of the search space (None: unseeded)
    data: Sequence[str] = ()                       # data files/dirs or s3:// gs:// URIs (default: the config's data)
    allow_cpu_fallback: bool = False               # a trial given GPUs but seeing none runs on CPU instead of failing
    callbacks: Sequence[Any] = ()                  # Tune callbacks

    source: str = "experiment"                     # the file it came from (set by load_experiment; error messages)

    # ---- derived ----
    @property
    def gpus(self) -> float:
        return float(self.resources.get("gpu", 0) or 0)

    @property
    def cpus(self) -> float:
        return float(self.resources.get("cpu", 1) or 0)

    def base_config(self):
        """The base config with the fixed overrides and the experiment's data, every path made absolute."""
        cfg = load_config(self.config, list(self.overrides))
        cfg.data.paths = tuple(p if "://" in str(p) else str(project_path(p)) for p in (self.data or cfg.data.paths))
        cfg.data.default_dir = str(project_path(cfg.data.default_dir))
        return cfg


def load_experiment(path: str) -> Experiment:
    """Imports an experiment file and returns its :class:`Experiment` (``validate`` checks it against the config)."""
    module = import_user_file(path, "experiment", example="--experiment experiments/smoke.py")
    if not callable(getattr(module, "get_experiment", None)):
        raise ConfigError(f"{path}: has no get_experiment() function returning ups_jax.fleet.Experiment(...)")
    try:
        exp = module.get_experiment()
    except TypeError as e:
        raise ConfigError(f"{path}: get_experiment(): {e}") from e
    if not isinstance(exp, Experiment):
        raise ConfigError(f"{path}: get_experiment() must return ups_jax.fleet.Experiment, got {type(exp).__name__}")
    exp.source = str(path)
    return exp


def stage_offsets(cfg) -> dict[str, int]:
    """Global step (optimizer updates) at which each stage starts: the trainer's own axis
    (``training.pipeline.stage_offsets``), also W&B's step."""
    from ups_jax.training.pipeline import stage_offsets as offsets

    return offsets(cfg)


def total_steps(cfg) -> int:
    from ups_jax.training.pipeline import total_steps as total

    return total(cfg)


def first_rung(cfg) -> int:
    """The last stage's first validation, in global steps: the earliest point where trials can be compared."""
    last = cfg.stage_order[-1]
    s = cfg.stages[last]
    return stage_offsets(cfg)[last] + min(int(s.eval_every), int(s.steps))


def validate(exp: Experiment, cfg) -> None:
    """One-line ConfigError for anything that would make trials fail or compare unlike numbers."""
    src = exp.source
    if not exp.name or "/" in exp.name:
        raise ConfigError(f"{src}: name={exp.name!r}: give the sweep a plain name (it is the experiment directory)")
    if not isinstance(exp.search_space, dict) or not exp.search_space:
        raise ConfigError(f"{src}: search_space is empty; define e.g. search_space={{'stages.operator.lr': "
                          f"tune.loguniform(3e-4, 3e-3)}}")
    if not exp.metric:
        want = stage_val_metric(cfg.stage_order[-1])
        raise ConfigError(f"{src}: no metric; set metric='{want}' (the last stage's validation metric), mode='min'")
    if exp.mode not in ("min", "max"):
        raise ConfigError(f"{src}: mode={exp.mode!r}: use 'min' or 'max'")
    want = stage_val_metric(cfg.stage_order[-1])
    if exp.metric != want:
        raise ConfigError(f"{src}: metric={exp.metric!r}: the last stage '{cfg.stage_order[-1]}' reports "
                          f"'{want}'; a sweep ranks trials by the last stage's validation metric")
    for key, domain in exp.search_space.items():
        check_key(cfg, key, source=src)
        for value in _candidates(domain):
            set_value(copy.deepcopy(cfg), key, value, source=src)
    if exp.num_samples < 1:
        raise ConfigError(f"{src}: num_samples={exp.num_samples}: need >= 1")
    bad = set(exp.resources) - {"cpu", "gpu"}
    if bad or exp.gpus < 0 or exp.cpus <= 0:
        raise ConfigError(f"{src}: resources={exp.resources}: use {{'cpu': N > 0, 'gpu': G >= 0}} (G may be 0.5)")
    if exp.accelerator is not None and exp.accelerator not in cfg.cost.price_per_hour:
        raise ConfigError(f"{src}: accelerator={exp.accelerator!r} has no price in cfg.cost.price_per_hour "
                          f"({', '.join(cfg.cost.price_per_hour.keys())}); pick one of those (prices can be "
                          f"overridden: 'cost.price_per_hour.A100=...'), or accelerator=None for device-hours "
                          f"without cost")
    if exp.max_failures < 0:
        raise ConfigError(f"{src}: max_failures={exp.max_failures}: need >= 0")
    options = scheduler_options(exp, cfg)
    if options is not None and options["grace_period"] < first_rung(cfg):
        raise ConfigError(
            f"{src}: scheduler grace_period={options['grace_period']} falls before the last stage's first "
            f"validation (global step {first_rung(cfg)}); ASHA would compare trials before '{exp.metric}' exists; "
            f"use grace_period >= {first_rung(cfg)}")


def _candidates(domain) -> list:
    """Values to type-check: every grid value, one sample of a Tune domain, a constant as itself."""
    if isinstance(domain, dict) and set(domain) == {"grid_search"}:
        return list(domain["grid_search"])
    if hasattr(domain, "sample") and type(domain).__module__.startswith("ray.tune"):
        if type(domain).__name__ == "Function":          # tune.sample_from(fn): depends on other keys
            return []
        return [_plain(domain.sample())]
    return [domain]


def _plain(value):
    """numpy scalars from Tune's samplers as Python numbers (ml_collections checks exact types)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def scheduler_options(exp: Experiment, cfg) -> dict | None:
    """The ASHA options of the experiment (None for FIFO or a user-supplied scheduler object)."""
    sched = exp.scheduler
    if sched is None or sched == "fifo":
        return None
    if sched == "asha":
        sched = {"type": "asha"}
    if isinstance(sched, dict):
        options = dict(sched)
        kind = options.pop("type", "asha")
        if kind != "asha":
            raise ConfigError(f"{exp.source}: scheduler type {kind!r}: use 'asha', 'fifo' or a Tune scheduler object")
        unknown = set(options) - {"grace_period", "max_t", "reduction_factor", "brackets"}
        if unknown:
            raise ConfigError(f"{exp.source}: scheduler options {sorted(unknown)} unknown; ASHA takes grace_period, "
                              f"max_t, reduction_factor, brackets (time is '{TIME_ATTR}')")
        return {"grace_period": first_rung(cfg), "max_t": total_steps(cfg), "reduction_factor": 2, **options}
    return None


def build_scheduler(exp: Experiment, cfg):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    options = scheduler_options(exp, cfg)
    if options is not None:
        return ASHAScheduler(time_attr=TIME_ATTR, **options)
    if exp.scheduler is None or exp.scheduler == "fifo":
        return FIFOScheduler()
    return exp.scheduler


def trial_config(base: dict, sampled: dict, source: str = "trial"):
    """The locked config of one trial: the base config with the sampled ``{'a.b': value}`` set."""
    from ups_jax.config import config_from_dict

    cfg = config_from_dict(copy.deepcopy(base))
    for key, value in sampled.items():
        set_value(cfg, key, _plain(value), source=source)
    return cfg


def experiment_dir(storage: str, name: str) -> str:
    from ups_jax.fleet.storage import join

    return join(storage, name)


def describe(exp: Experiment, cfg) -> dict:
    """JSON-safe record of the experiment, saved beside its results as ``fleet_experiment.json`` when the sweep
    starts: ``pull`` takes metric/mode from it, ``status`` everything the table needs (so neither needs the
    experiment file), and ``--resume`` the base config of the trials (an edited experiment file is refused)."""
    price = float(cfg.cost.price_per_hour[exp.accelerator]) if exp.accelerator else None
    record = {"name": exp.name, "config": exp.config, "overrides": list(exp.overrides), "metric": exp.metric,
              "mode": exp.mode, "search_space": stable(exp.search_space), "num_samples": exp.num_samples,
              "scheduler": stable(exp.scheduler), "resources": dict(exp.resources), "max_failures": exp.max_failures,
              "allow_cpu_fallback": bool(exp.allow_cpu_fallback), "source": exp.source, "time_attr": TIME_ATTR,
              "table": {"total_steps": total_steps(cfg), "gpus": exp.gpus, "cpus": exp.cpus,
                        "accelerator": exp.accelerator, "price_per_hour": price,
                        "prices": {k: float(v) for k, v in cfg.cost.price_per_hour.items()}},
              "base_config": cfg.to_dict()}
    return json.loads(json.dumps(record, default=str))      # as read back (tuples are lists)


def stable(value, depth: int = 0):
    """A JSON-safe description that is the same in every process (a Tune domain's ``repr`` has its address):
    plain values as they are, objects as their type name and attributes."""
    if isinstance(value, (str, bool, int, float, type(None))):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, dict):
        return {str(k): stable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [stable(v, depth + 1) for v in value]
    attrs = getattr(value, "__dict__", None)
    if depth > 4 or not isinstance(attrs, dict) or callable(value):
        return type(value).__name__
    return {"type": type(value).__name__, **{k: stable(v, depth + 1) for k, v in sorted(attrs.items())
                                              if not k.startswith("_")}}


def resolve_storage(storage: str, *, from_cli: bool) -> str:
    """A URI stays as it is; a local path becomes absolute (CLI: relative to the current directory; experiment
    file: relative to the project root)."""
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().absolute() if from_cli else project_path(storage))
