"""The convolutional family (`config.vae.arch='conv'`): a spatial latent (H/4, W/4, c) between
two stride-2 convolutions each way: the shape the PixelCNN prior models.

config.vae.conv: latent_shape (H/4, W/4, c), channels (the two hidden widths).
The VQ-VAE (`vae.models.vq`) uses the same stacks around its quantizer.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from vae.errors import ConfigError
from vae.models import registry
from vae.models.layers import depth_to_space, posterior

DOWNSAMPLING = 4


class ConvEncoder(nnx.Module):
    """-> the posterior (mean, logvar), or with gaussian=False the latent_channels themselves (VQ's z_e)."""

    def __init__(self, image_shape, channels, latent_channels, *, rngs, dtype=jnp.float32, gaussian=True):
        c1, c2 = channels
        self.gaussian = gaussian
        self.down1 = nnx.Conv(image_shape[-1], c1, (3, 3), strides=2, dtype=dtype, rngs=rngs)  # 28 -> 14
        self.down2 = nnx.Conv(c1, c2, (3, 3), strides=2, dtype=dtype, rngs=rngs)  # 14 -> 7
        self.out = nnx.Conv(c2, (2 if gaussian else 1) * latent_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = nnx.gelu(self.down1(x))
        h = nnx.gelu(self.down2(h))
        return posterior(self.out(h)) if self.gaussian else self.out(h)


class ConvDecoder(nnx.Module):
    def __init__(self, image_shape, channels, latent_channels, out_channels, *, rngs, dtype=jnp.float32):
        c1, c2 = channels
        self.conv_in = nnx.Conv(latent_channels, c2, (3, 3), dtype=dtype, rngs=rngs)
        self.up1 = nnx.Conv(c2, 4 * c1, (3, 3), dtype=dtype, rngs=rngs)  # 7 -> 14 after depth_to_space
        self.up2 = nnx.Conv(c1, 4 * c1, (3, 3), dtype=dtype, rngs=rngs)  # 14 -> 28
        self.out = nnx.Conv(c1, out_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = nnx.gelu(self.conv_in(z))
        h = depth_to_space(nnx.gelu(self.up1(h)))
        h = depth_to_space(nnx.gelu(self.up2(h)))
        return self.out(h)


def spatial_latent_shape(section, image_shape, factor: int, arch: str) -> tuple[int, int, int]:
    """config.vae.<arch>.latent_shape, checked against an encoder that downsamples by `factor`."""
    shape = tuple(int(s) for s in section.latent_shape)
    want = (image_shape[0] // factor, image_shape[1] // factor)
    if len(shape) != 3 or shape[:2] != want or shape[2] < 1:
        raise ConfigError(
            f"config.vae.{arch}.latent_shape={shape} does not fit the {arch} decoder: it downsamples "
            f"{image_shape[:2]} images by {factor}, so the latent must be ({want[0]}, {want[1]}, c) with c >= 1")
    return shape


def latent_shape(section, image_shape) -> tuple[int, int, int]:
    return spatial_latent_shape(section, image_shape, DOWNSAMPLING, "conv")


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype):
    channels = tuple(section.channels)
    encoder = ConvEncoder(image_shape, channels, latent_shape[-1], rngs=rngs, dtype=dtype)
    decoder = ConvDecoder(image_shape, channels, latent_shape[-1], out_channels, rngs=rngs, dtype=dtype)
    return encoder, decoder


registry.register(registry.Spec(
    name="conv", build=build, latent_shape=latent_shape,
    config={"latent_shape": (7, 7, 4), "channels": (32, 64)},
    smoke={"latent_shape": (7, 7, 2), "channels": (8, 16)},
    doc="two stride-2 convolutions each way around a (H/4, W/4, c) latent"))
