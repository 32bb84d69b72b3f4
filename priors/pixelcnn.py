"""Gated PixelCNN priors (van den Oord et al. 2016), one body (`GatedPixelCNN`), two heads:
  * `PixelCNN` ('pixelcnn'): continuous spatial latents (H, W, C); positions in raster order,
    channels in order within a position, each element a mixture of logistics (`priors.mixture`);
  * `CodePixelCNN` ('pixelcnn_codes'): a VQ-VAE's (H, W) maps of codes in [0, K); the body
    reads learned code embeddings, the head is a softmax over the K codes per position.
The body, its causality and its samplers are in `priors.gated_pixelcnn`.
Within a position (continuous latents), channel c's parameters add a strictly lower-triangular
linear map of the channels < c to the position's features (`mixture.ChannelHead`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from priors import mixture
from priors.categorical import CodeHead, categorical_log_prob
from priors.gated_pixelcnn import GatedPixelCNN
from priors.registry import Spec, register


class PixelCNN(GatedPixelCNN):
    """Over continuous spatial latents (H, W, C): a mixture of logistics per element, channels
    in order within a position (`mixture.ChannelHead`)."""

    def __init__(self, latent_shape, features=64, num_layers=4, kernel_size=3, num_mixtures=5, dropout=0.0, *,
                 rngs: nnx.Rngs):
        if len(latent_shape) != 3:
            raise ValueError(f"PixelCNN models spatial latents (h, w, c); got {tuple(latent_shape)}: use 'made'")
        self.latent_shape = tuple(latent_shape)
        self.num_mixtures = num_mixtures
        super().__init__(latent_shape[:2], latent_shape[2], features, num_layers, kernel_size, dropout, rngs=rngs)
        self.head = mixture.ChannelHead(latent_shape[2], features, num_mixtures, rngs=rngs)

    def _input(self, z):
        return z

    def _canvas(self, n):
        return jnp.zeros((n, *self.latent_shape))

    def params(self, z, dropout_key=None):
        """z (B, H, W, C) -> (B, H, W, C, 3K); dropout in the layers when given a key."""
        return self.head(self.features(z, dropout_key), z)

    def log_prob(self, z, dropout_key=None):
        return jnp.sum(mixture.log_prob(self.params(z, dropout_key), z).reshape(z.shape[0], -1), axis=-1)

    def _fill(self, feat, z, i, j, key, temperature):
        """Draws position (i, j)'s channels in order from the features there (B, F); each
        channel's logistic scales times `temperature` (`mixture.sample`)."""
        _, wid, ch = self.latent_shape

        def channel(c, z):
            p = self.head(feat, z[:, i, j])[:, c]
            return z.at[:, i, j, c].set(mixture.sample(jax.random.fold_in(key, (i * wid + j) * ch + c), p, temperature))

        return jax.lax.fori_loop(0, ch, channel, z)


class CodePixelCNN(GatedPixelCNN):
    """Over a VQ-VAE's code maps (H, W) of integers in [0, K): the same body on learned code
    embeddings (`embed_dim` numbers each), a softmax over the K codes per position (VQ-VAE's stage 2)."""

    def __init__(self, latent_shape, num_codes, features=64, num_layers=4, kernel_size=3, dropout=0.0, embed_dim=8,
                 *, rngs: nnx.Rngs):
        if len(latent_shape) != 2:
            raise ValueError(f"a code prior models (h, w) maps of codes; got {tuple(latent_shape)}")
        self.latent_shape, self.num_codes = tuple(latent_shape), int(num_codes)
        self.embed = nnx.Embed(num_codes, embed_dim, rngs=rngs)
        super().__init__(latent_shape, embed_dim, features, num_layers, kernel_size, dropout, rngs=rngs)
        self.head = CodeHead(features, num_codes, rngs=rngs)

    def _input(self, codes):
        return self.embed(codes)

    def _canvas(self, n):
        return jnp.zeros((n, *self.latent_shape), jnp.int32)

    def logits(self, codes, dropout_key=None):
        """codes (B, H, W) -> (B, H, W, K): position (i, j) sees the codes before it only."""
        return self.head(self.features(codes, dropout_key))

    def log_prob(self, codes, dropout_key=None):
        return categorical_log_prob(self.logits(codes, dropout_key), codes)

    def _fill(self, feat, codes, i, j, key, temperature):
        """Draws position (i, j)'s code from softmax(logits / temperature)."""
        wid = self.latent_shape[1]
        draw = jax.random.categorical(jax.random.fold_in(key, i * wid + j), self.head(feat) / temperature, axis=-1)
        return codes.at[:, i, j].set(draw.astype(jnp.int32))


register(Spec(
    name="pixelcnn",
    fit="gradient",
    build=lambda latent_shape, c, rngs: PixelCNN(latent_shape, c.features, c.num_layers, c.kernel_size,
                                                 c.num_mixtures, c.dropout, rngs=rngs),
    config=dict(features=64, num_layers=4, kernel_size=3, num_mixtures=5, dropout=0.0),
    smoke=dict(features=16, num_layers=2, num_mixtures=3),
    doc="gated PixelCNN over spatial latents",
))
register(Spec(
    name="pixelcnn_codes",
    fit="gradient",
    latents="categorical",
    build=lambda latent_shape, c, rngs, num_codes: CodePixelCNN(latent_shape, num_codes, c.features, c.num_layers,
                                                                 c.kernel_size, c.dropout, c.embed_dim, rngs=rngs),
    # embed_dim: the codes' input embedding. The input conv spans every row above (H x 2W-1), so
    # its cost grows with it: measured on the 2-core CPU (7x7 codes, K=256, batch 128), a train
    # step takes 1.3x the continuous PixelCNN's (4 channels) at 8, 1.8x at 16, 3.8x at 32.
    config=dict(features=64, num_layers=4, kernel_size=3, dropout=0.0, embed_dim=8),
    smoke=dict(features=16, num_layers=2),
    doc="gated PixelCNN over VQ code maps, softmax over the codes",
))
