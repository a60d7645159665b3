"""ups_jax.data"""
