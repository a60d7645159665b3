"""Production sweep: the full configs/burgers32.py (GPU) over the operator's optimisation and rollout horizon.

    python -m ups_jax.fleet.sweep --experiment experiments/burgers32_sweep.py --storage s3://BUCKET/ups_jax/sweeps

16 samples under ASHA (first rung at the operator's first validation), one A100 per trial (the GPU type is only
used to price GPU-hours from cfg.cost.price_per_hour; set accelerator=None on GPUs without a price there).
Size the GPU first with `python -m ups_jax.driver dry-run --config configs/burgers32.py` (docs/fleet.md).
On a multi-node cluster --storage must be shared or cloud storage.
"""

from ray import tune

from ups_jax.fleet import Experiment


def get_experiment():
    return Experiment(
        name="burgers32",
        config="configs/burgers32.py",
        # the surrogate's stages only: the refine stages, the FNO baseline and the TTC row are not what this
        # sweep ranks (its metric is the operator's val/nrmse)
        overrides=["stage_order=codec,operator", "baseline.config=", "eval.ttc_preset="],
        search_space={
            "stages.operator.lr": tune.loguniform(3e-4, 3e-3),
            "stages.operator.weight_decay": tune.choice([1e-5, 1e-4, 1e-3]),
            "stages.operator.rollout_steps": tune.choice([2, 4, 8]),
        },
        metric="val/nrmse",
        mode="min",
        num_samples=16,
        scheduler={"type": "asha", "reduction_factor": 3},
        resources={"cpu": 4, "gpu": 1},
        accelerator="A100",
        max_failures=3,                     # spot/preemptible workers: a lost trial resumes from its checkpoint
        storage="runs/sweeps",
    )
