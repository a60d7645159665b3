"""``python -m ups_jax.driver {validate,validate-data,dry-run,analyze,compare}``."""
