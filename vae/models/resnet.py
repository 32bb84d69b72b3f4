"""A ResNet encoder/decoder pair (`config.vae.arch='resnet'`), for colour images on an accelerator.

config.vae.resnet: latent_shape (H/f, W/f, c), widths (one level per width), blocks (per level).

Levels of `num_blocks` pre-activation residual blocks (GroupNorm, SiLU, 3x3 conv, twice),
one level per width in `widths`; between levels the encoder halves the resolution with a
stride-2 conv and the decoder doubles it by sub-pixel upsampling (`depth_to_space`), so
`len(widths) - 1` levels of resampling put the latent at H/2 (one), H/4 (two: the default
widths (64, 128, 256)) or H/8 (three). Each block's last conv starts at zero, so every block
starts as the identity. The encoder returns the posterior's (mean, logvar) like the others.
"""

from __future__ import annotations

import math

from flax import nnx

from vae.errors import ConfigError
from vae.models import registry
from vae.models.conv import spatial_latent_shape
from vae.models.layers import depth_to_space, posterior


def _norm(channels: int, rngs, dtype):  # 32 groups, or the most that divide the channels
    return nnx.GroupNorm(channels, num_groups=math.gcd(32, channels), dtype=dtype, rngs=rngs)


class ResBlock(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype):
        self.norm1, self.norm2 = _norm(channels, rngs, dtype), _norm(channels, rngs, dtype)
        self.conv1 = nnx.Conv(channels, channels, (3, 3), dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (3, 3), dtype=dtype, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x):
        h = self.conv1(nnx.silu(self.norm1(x)))
        return x + self.conv2(nnx.silu(self.norm2(h)))


def _level(width: int, num_blocks: int, rngs, dtype):
    return nnx.List([ResBlock(width, rngs=rngs, dtype=dtype) for _ in range(num_blocks)])


class ResNetEncoder(nnx.Module):
    def __init__(self, image_shape, widths, num_blocks: int, latent_channels: int, *, rngs, dtype):
        self.conv_in = nnx.Conv(image_shape[-1], widths[0], (3, 3), dtype=dtype, rngs=rngs)
        self.levels = nnx.List([_level(w, num_blocks, rngs, dtype) for w in widths])
        self.down = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, dtype=dtype, rngs=rngs)
                              for a, b in zip(widths[:-1], widths[1:])])
        self.norm_out = _norm(widths[-1], rngs, dtype)
        self.out = nnx.Conv(widths[-1], 2 * latent_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = self.conv_in(x)
        for i, level in enumerate(self.levels):
            for block in level:
                h = block(h)
            if i < len(self.down):
                h = self.down[i](h)
        return posterior(self.out(nnx.silu(self.norm_out(h))))


class ResNetDecoder(nnx.Module):
    def __init__(self, image_shape, widths, num_blocks: int, latent_channels: int, out_channels: int, *, rngs, dtype):
        widths = tuple(reversed(widths))
        self.conv_in = nnx.Conv(latent_channels, widths[0], (3, 3), dtype=dtype, rngs=rngs)
        self.levels = nnx.List([_level(w, num_blocks, rngs, dtype) for w in widths])
        self.up = nnx.List([nnx.Conv(a, 4 * b, (3, 3), dtype=dtype, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.norm_out = _norm(widths[-1], rngs, dtype)
        self.out = nnx.Conv(widths[-1], out_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = self.conv_in(z)
        for i, level in enumerate(self.levels):
            for block in level:
                h = block(h)
            if i < len(self.up):
                h = depth_to_space(self.up[i](h))
        return self.out(nnx.silu(self.norm_out(h)))


def latent_shape(section, image_shape) -> tuple[int, int, int]:
    factor = 2 ** (len(section.widths) - 1)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ConfigError(f"config.vae.resnet.widths={tuple(section.widths)} resample {image_shape[:2]} images by "
                          f"{factor}, which does not divide them; use fewer levels")
    return spatial_latent_shape(section, image_shape, factor, "resnet")


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype):
    widths, blocks = tuple(section.widths), int(section.blocks)
    encoder = ResNetEncoder(image_shape, widths, blocks, latent_shape[-1], rngs=rngs, dtype=dtype)
    decoder = ResNetDecoder(image_shape, widths, blocks, latent_shape[-1], out_channels, rngs=rngs, dtype=dtype)
    return encoder, decoder


registry.register(registry.Spec(
    name="resnet", build=build, latent_shape=latent_shape,
    config={"latent_shape": (7, 7, 4), "widths": (64, 128, 256), "blocks": 2},
    doc="pre-activation residual blocks with GroupNorm, one level per width"))
