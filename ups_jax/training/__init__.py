"""ups_jax.training"""
