"""Smoke sweep: 4 trials of configs/burgers32.py:test under ASHA on a 2-CPU machine (README fleet section, tests,
benchmarks/sweep_overhead.py).

    python -m ups_jax.fleet.sweep --experiment experiments/smoke.py

A grid over the operator's learning rate, two trials at a time. The operator stage is lengthened to 24 steps
(validation every 6) so that ASHA has a rung to decide at: its first rung is the operator's first validation
(global step 6 + 6 = 12), max_t the end (30). The last grid point (lr 1e-6, which barely trains) starts last and
reaches the rung after at least two others, so ASHA stops it there.
"""

from ray import tune

from ups_jax.fleet import Experiment

# the surrogate's stages only: the refine stages (corrector, student, steady), the FNO baseline and the TTC row are
# not what this sweep ranks (its metric is the operator's val/nrmse)
CORE_ONLY = ["stage_order=codec,operator", "baseline.config=", "eval.ttc_preset="]


def get_experiment():
    return Experiment(
        name="smoke",
        config="configs/burgers32.py:test",
        overrides=["stages.operator.steps=24", "stages.operator.eval_every=6", *CORE_ONLY],
        search_space={"stages.operator.lr": tune.grid_search([3e-3, 1e-3, 3e-4, 1e-6])},
        metric="val/nrmse",
        mode="min",
        scheduler={"type": "asha", "reduction_factor": 2},
        resources={"cpu": 1, "gpu": 0},
        max_concurrent_trials=2,
        max_failures=1,
        storage="runs/sweeps",
    )
