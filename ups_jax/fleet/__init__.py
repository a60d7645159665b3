"""ups_jax.fleet"""
