"""ups_jax: a JAX/Flax reimplementation of the Universal Physics Stack (latent neural PDE simulator)."""

__version__ = "0.1.0"
