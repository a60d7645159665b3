"""ups_jax.fleet: the staged trainer on Ray — Tune sweeps (``python -m ups_jax.fleet.sweep``), a long-run
training actor (``python -m ups_jax.fleet.train``), pulling a trial back (``python -m ups_jax.fleet.pull``).

Ray is an optional dependency (``pip install 'ups_jax[fleet]'``): importing this package does not import it.
"""

from ups_jax.fleet.experiment import Experiment

__all__ = ["Experiment"]
