"""Uniform over a VQ-VAE's code maps: the prior the VQ-VAE is trained with, and the baseline
every categorical prior beats (log p = -h w log K for every map)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors.registry import Spec, register


class Uniform(nnx.Module):
    def __init__(self, latent_shape, num_codes: int):
        self.latent_shape, self.num_codes = tuple(latent_shape), int(num_codes)

    def log_prob(self, codes):
        return jnp.full((codes.shape[0],), -math.prod(self.latent_shape) * math.log(self.num_codes))

    def sample(self, key, n: int, *, temperature=1.0):
        """Uniform codes; logits / temperature of equal logits are equal, so temperature does nothing."""
        del temperature
        return jax.random.randint(key, (n, *self.latent_shape), 0, self.num_codes)


register(Spec(name="uniform", fit="none", latents="categorical", code_sequence=True,
              build=lambda latent_shape, section, rngs, num_codes: Uniform(latent_shape, num_codes),
              doc="uniform over the K codes at every position, the prior the VQ-VAE is trained with"))
