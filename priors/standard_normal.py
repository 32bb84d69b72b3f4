"""N(0, I): the prior the VAE was trained with, and the baseline every learned prior beats."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors.registry import Spec, register


def log_prob(z):
    """log N(z; 0, I) in nats, summed over every axis but the first: (B, ...) -> (B,)."""
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(flat**2, axis=-1) - 0.5 * flat.shape[-1] * math.log(2 * math.pi)


class StandardNormal(nnx.Module):
    """N(0, I) as a prior module: what `config.vae.prior='standard_normal'` (the default) puts in
    the VAE, and the report's baseline row. It has no parameters."""

    def __init__(self, latent_shape):
        self.latent_shape = tuple(latent_shape)

    def log_prob(self, z):
        return log_prob(z)

    def sample(self, key, n: int, *, temperature=1.0):
        """z ~ N(0, temperature² I)."""
        return temperature * jax.random.normal(key, (n, *self.latent_shape))


register(Spec(name="standard_normal", fit="none", build=lambda latent_shape, section, rngs: StandardNormal(latent_shape),
              doc="N(0, I), the prior the VAE is trained with"))
