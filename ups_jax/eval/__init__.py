"""ups_jax.eval"""
