"""The two-level code prior of VQ-VAE-2 ('pixelcnn_codes_2level'): p(top) p(bottom | top).

Over the latent of `vae.models.vq2`: one (L,) sequence of codes in [0, K), the top map then the
bottom map (`priors.code_levels`; stage 2 builds this prior with the model's `levels`).
  * the top prior is `pixelcnn.CodePixelCNN` over the top map (h_t, w_t), unchanged;
  * the bottom prior is the same gated PixelCNN body over the bottom map (h_b, w_b), conditioned
    on the top codes: they are embedded, a 3x3 conv mixes neighbouring top codes, each is
    repeated over the 2x2 bottom positions under it (nearest upsampling, cropped to the bottom
    map), and another 3x3 conv gives `condition_features` numbers per bottom position. The body
    adds a learned map of them to every v->h link (`GatedPixelCNN.condition_on`): a bias in
    every gated layer's gate, at the position itself, so the bottom's own causal order is kept.
log_prob(codes) = log p(top) + log p(bottom | top). `sample` draws the top map with the top
prior's fast sampler, then the bottom map with the bottom prior's, given it; every code from
softmax(logits / temperature), as the other code priors draw. Both PixelCNNs share the config:
features, num_layers, kernel_size, dropout, embed_dim (as 'pixelcnn_codes'), condition_features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from priors import code_levels, mixture
from priors.categorical import categorical_log_prob
from priors.pixelcnn import CodePixelCNN
from priors.registry import Spec, register


class ConditionalCodePixelCNN(CodePixelCNN):
    """`CodePixelCNN` over the bottom map whose every gated layer also reads the top codes."""

    def __init__(self, latent_shape, top_shape, num_codes, features=64, num_layers=4, kernel_size=3, dropout=0.0,
                 embed_dim=8, condition_features=32, *, rngs: nnx.Rngs):
        super().__init__(latent_shape, num_codes, features, num_layers, kernel_size, dropout, embed_dim, rngs=rngs)
        self.top_shape = tuple(top_shape)
        if condition_features < 1:
            raise ValueError(f"condition_features={condition_features}: the top codes need >= 1 feature per position")
        if any(-(-b // 2) != t for b, t in zip(self.latent_shape, self.top_shape)):
            raise ValueError(f"the top map {self.top_shape} is not the bottom map {self.latent_shape} halved "
                             "(rounded up)")
        c = condition_features
        self.top_embed = nnx.Embed(num_codes, c, rngs=rngs)
        self.top_conv = nnx.Conv(c, c, (3, 3), rngs=rngs)
        self.cond_conv = nnx.Conv(c, c, (3, 3), rngs=rngs)
        self.condition_on(c, rngs=rngs)

    def conditioning(self, top):
        """Top codes (B, h_t, w_t) -> conditioning features per bottom position (B, h_b, w_b, C)."""
        h = jax.nn.gelu(self.top_conv(self.top_embed(top)))
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)[:, : self.latent_shape[0], : self.latent_shape[1]]
        return jax.nn.gelu(self.cond_conv(h))

    def logits(self, codes, top, dropout_key=None):
        """codes (B, h_b, w_b), top (B, h_t, w_t) -> (B, h_b, w_b, K): position (i, j) sees the
        bottom codes before it and every top code."""
        return self.head(self.features(codes, dropout_key, cond=self.conditioning(top)))

    def log_prob(self, codes, top, dropout_key=None):
        return categorical_log_prob(self.logits(codes, top, dropout_key), codes)

    def sample(self, key, n: int, top, mode: str = "fast", *, temperature=1.0):
        return super().sample(key, n, mode, temperature=temperature, cond=self.conditioning(top))


class TwoLevelCodePixelCNN(nnx.Module):
    """p(top) p(bottom | top) over the flat (L,) sequence of two code levels, top first."""

    def __init__(self, levels, num_codes, features=64, num_layers=4, kernel_size=3, dropout=0.0, embed_dim=8,
                 condition_features=32, *, rngs: nnx.Rngs):
        self.levels = code_levels.normalize(levels)
        if len(self.levels) != 2:
            raise ValueError(f"a two-level code prior models a top and a bottom map; got levels {self.levels}")
        (self.top_name, top_shape), (self.bottom_name, bottom_shape) = self.levels
        self.latent_shape, self.num_codes = (code_levels.length(self.levels),), int(num_codes)
        self.top = CodePixelCNN(top_shape, num_codes, features, num_layers, kernel_size, dropout, embed_dim,
                                rngs=rngs)
        self.bottom = ConditionalCodePixelCNN(bottom_shape, top_shape, num_codes, features, num_layers, kernel_size,
                                              dropout, embed_dim, condition_features, rngs=rngs)

    def log_prob_levels(self, codes, dropout_key=None):
        """(log p(top), log p(bottom | top)) per example, each (B,)."""
        maps = code_levels.split(codes, self.levels)
        key_top, key_bottom = mixture.dropout_keys(dropout_key, 2)
        top = maps[self.top_name]
        return self.top.log_prob(top, key_top), self.bottom.log_prob(maps[self.bottom_name], top, key_bottom)

    def log_prob(self, codes, dropout_key=None):
        """codes (B, L) -> log p(top) + log p(bottom | top), (B,)."""
        log_top, log_bottom = self.log_prob_levels(codes, dropout_key)
        return log_top + log_bottom

    def sample(self, key, n: int, mode: str = "fast", *, temperature=1.0):
        """(n, L): the top maps first, then the bottom maps given them."""
        key_top, key_bottom = jax.random.split(key)
        top = self.top.sample(key_top, n, mode, temperature=temperature)
        bottom = self.bottom.sample(key_bottom, n, top, mode, temperature=temperature)
        return code_levels.join({self.top_name: top, self.bottom_name: bottom}, self.levels)


register(Spec(
    name="pixelcnn_codes_2level",
    fit="gradient",
    latents="code_levels",
    build=lambda latent_shape, c, rngs, num_codes, levels: TwoLevelCodePixelCNN(
        levels, num_codes, c.features, c.num_layers, c.kernel_size, c.dropout, c.embed_dim, c.condition_features,
        rngs=rngs),
    config=dict(features=64, num_layers=4, kernel_size=3, dropout=0.0, embed_dim=8, condition_features=32),
    smoke=dict(features=16, num_layers=2, condition_features=8),
    doc="VQ-VAE-2's prior: a gated PixelCNN over the top code map, and one over the bottom map conditioned on the top",
))
