"""ups_jax.inference"""
