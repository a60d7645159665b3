"""2-D Navier–Stokes sweep (issue 20): the UPS of configs/ns2d.py:cpu over its operator's learning rate, rollout
horizon and its weight decay, on CPU workers.

    python -m ups_jax.fleet.sweep --experiment experiments/ns2d_sweep.py [--storage s3://BUCKET/ups_jax/sweeps]

8 samples under ASHA (first rung at the operator's first validation, step 100 of 400), two CPUs per trial.
The 2-D data (data/ns2d_cpu, made on first use: 128 trajectories at 32², ~2 min) are shared by every trial on a
node, as for Burgers. The FNO-2D baseline is not trained per trial (its row is not what the sweep ranks:
``val/nrmse`` of the operator). The same fleet code as the 1-D sweeps: nothing in ups_jax.fleet knows the
dimension. For the full 64² setting on GPUs, take ``configs/ns2d.py`` and ``resources={"cpu": 4, "gpu": 1}``
(size it first: ``python -m ups_jax.driver dry-run --config configs/ns2d.py``).
"""

from ray import tune

from ups_jax.fleet import Experiment


def get_experiment():
    return Experiment(
        name="ns2d",
        config="configs/ns2d.py:cpu",
        overrides=["baseline.config="],
        search_space={
            "stages.operator.lr": tune.loguniform(3e-4, 3e-3),
            "stages.operator.rollout_steps": tune.choice([2, 4, 8]),
            "stages.operator.weight_decay": tune.choice([1e-5, 1e-4, 1e-3]),
        },
        metric="val/nrmse",
        mode="min",
        num_samples=8,
        scheduler={"type": "asha", "reduction_factor": 3},
        resources={"cpu": 2, "gpu": 0},
        max_failures=2,
        storage="runs/sweeps",
    )
