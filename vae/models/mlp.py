"""The MLP family (`config.vae.arch='mlp'`): a vector latent (d,) between dense layers.

config.vae.mlp: latent_dim (d), hidden (the encoder's layer widths; the decoder mirrors them).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from vae.errors import ConfigError
from vae.models import registry
from vae.models.layers import posterior


class MLPEncoder(nnx.Module):
    def __init__(self, image_shape, hidden, latent_dim, *, rngs, dtype=jnp.float32):
        sizes = [math.prod(image_shape), *hidden]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], 2 * latent_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        return posterior(self.out(h))


class MLPDecoder(nnx.Module):
    def __init__(self, image_shape, hidden, latent_dim, out_channels, *, rngs, dtype=jnp.float32):
        sizes = [latent_dim, *reversed(hidden)]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out_shape = (*image_shape[:2], out_channels)
        self.out = nnx.Linear(sizes[-1], math.prod(self.out_shape), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = z
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        return self.out(h).reshape(z.shape[0], *self.out_shape)


def latent_shape(section, image_shape) -> tuple[int]:
    if section.latent_dim < 1:
        raise ConfigError(f"config.vae.mlp.latent_dim={section.latent_dim} must be >= 1")
    return (int(section.latent_dim),)


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype):
    hidden = tuple(section.hidden)
    encoder = MLPEncoder(image_shape, hidden, latent_shape[0], rngs=rngs, dtype=dtype)
    decoder = MLPDecoder(image_shape, hidden, latent_shape[0], out_channels, rngs=rngs, dtype=dtype)
    return encoder, decoder


registry.register(registry.Spec(
    name="mlp", build=build, latent_shape=latent_shape,
    config={"latent_dim": 16, "hidden": (512, 256)}, smoke={"hidden": (64,)},
    doc="dense layers around a vector latent (d,)"))
