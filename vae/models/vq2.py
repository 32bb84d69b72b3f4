"""VQ-VAE-2 (Razavi et al. 2019): two maps of integer codes, coarse and fine (`config.vae.arch='vq2'`).

config.vae.vq2: channels (c1, c2: the bottom and top conv widths), num_codes (K, both levels),
code_dim (D), commitment, codebook_decay and dead_code_threshold (each level's
`vq.VectorQuantizer`, as config.vae.vq's), bottom_downsampling b (2 or 4): the bottom map is
(H/b, W/b), the top map half of it, rounded up (28x28 images: b=2 gives 14x14 and 7x7, the
default; b=4 gives 7x7 and 4x4, the upsampled top cropped back to 7x7).

  x -> log2(b) stride-2 convs, a 3x3 conv -> h_b (B, H/b, W/b, c1)
  h_b -> stride-2 conv, 3x3 conv -> z_e_top (B, h_t, w_t, D) -> top quantizer -> codes_top, z_q_top
  [h_b, upsample(z_q_top)] -> 1x1 conv -> z_e_bottom (B, H/b, W/b, D) -> bottom quantizer
  decoder: [z_q_bottom, upsample(z_q_top)] -> 3x3 conv, log2(b) upsamplings -> p(x | z_q)
The bottom quantizer sees the quantized top, as in the paper: the bottom codes encode what
the top ones leave out. Upsampling is a conv then `layers.depth_to_space` (a sub-pixel conv:
a transposed conv's job, much faster on XLA:CPU). Each level has its own EMA codebook with
dead-code restarts, both of K codes of D numbers; the straight-through estimator passes the
gradient through both quantizers. Training minimizes
  -log p(x|z_q) + commitment * (||z_e_top - sg(z_q_top)||^2 + ||z_e_bottom - sg(z_q_bottom)||^2).

The latent is ONE int32 array (B, L), L = h_t w_t + h_b w_b: the top map in raster order, then
the bottom map (`priors.code_levels`; `levels` names the two maps). Its raster order is VQ-VAE-2's
sampling order, so a prior over it factorizes as p(top) p(bottom | top) (stage 2's
`pixelcnn_codes_2level`, or `transformer_codes` over the flat sequence). As for the VQ-VAE, the
stage-1 prior is uniform and the posterior a point mass: ELBO = log p(x|z_q) - L log K.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors import code_levels
from vae.errors import ConfigError
from vae.models import losses, registry
from vae.models.layers import depth_to_space
from vae.models.vq import VQVAE, VectorQuantizer, perplexity

DOWNSAMPLINGS = (2, 4)  # of the bottom map; the top map is half as large again


class Upsample(nnx.Module):
    """(B, h, w, cin) -> (B, 2h, 2w, cout): a 3x3 conv to 4 cout channels, then depth_to_space;
    cropped to `shape` (h', w') when given (a top map of odd-sized bottom is rounded up)."""

    def __init__(self, cin, cout, *, rngs, dtype):
        self.conv = nnx.Conv(cin, 4 * cout, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, x, shape=None):
        up = depth_to_space(self.conv(x))
        return up if shape is None else up[:, : shape[0], : shape[1]]


class Encoder(nnx.Module):
    """Three pieces: `bottom_features` (x -> h_b), `top` (h_b -> z_e_top) and `bottom`
    ((h_b, z_q_top) -> z_e_bottom); the model quantizes the top in between (`VQVAE2._quantize`)."""

    def __init__(self, image_shape, channels, code_dim, downsampling, *, rngs, dtype):
        c1, c2 = channels
        steps = int(math.log2(downsampling))
        widths = [image_shape[-1]] + [c1] * steps
        self.down = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, dtype=dtype, rngs=rngs)
                              for a, b in itertools.pairwise(widths)])
        self.bottom_mix = nnx.Conv(c1, c1, (3, 3), dtype=dtype, rngs=rngs)
        self.top_down = nnx.Conv(c1, c2, (3, 3), strides=2, dtype=dtype, rngs=rngs)
        self.top_out = nnx.Conv(c2, code_dim, (3, 3), dtype=dtype, rngs=rngs)
        self.top_up = Upsample(code_dim, c1, rngs=rngs, dtype=dtype)
        self.bottom_out = nnx.Conv(2 * c1, code_dim, (1, 1), dtype=dtype, rngs=rngs)

    def bottom_features(self, x):
        h = x
        for conv in self.down:
            h = nnx.gelu(conv(h))
        return nnx.gelu(self.bottom_mix(h))

    def top(self, h_b):
        return self.top_out(nnx.gelu(self.top_down(h_b))).astype(jnp.float32)

    def bottom(self, h_b, z_q_top):
        up = nnx.gelu(self.top_up(z_q_top, h_b.shape[1:3]))
        return self.bottom_out(jnp.concatenate([h_b, up], axis=-1)).astype(jnp.float32)


class Decoder(nnx.Module):
    """[z_q_bottom, upsample(z_q_top)] -> the likelihood's parameters per pixel."""

    def __init__(self, channels, code_dim, out_channels, downsampling, *, rngs, dtype):
        c1, c2 = channels
        steps = int(math.log2(downsampling))
        self.top_up = Upsample(code_dim, code_dim, rngs=rngs, dtype=dtype)
        self.conv_in = nnx.Conv(2 * code_dim, c2, (3, 3), dtype=dtype, rngs=rngs)
        self.ups = nnx.List([Upsample(c, c1, rngs=rngs, dtype=dtype) for c in [c2] + [c1] * (steps - 1)])
        self.out = nnx.Conv(c1, out_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, z_q_bottom, z_q_top):
        up = self.top_up(z_q_top, z_q_bottom.shape[1:3]).astype(jnp.float32)
        h = nnx.gelu(self.conv_in(jnp.concatenate([z_q_bottom, up], axis=-1)))
        for layer in self.ups:
            h = nnx.gelu(layer(h))
        return self.out(h)


class VQVAE2(VQVAE):
    """The VQ-VAE's interface (`vq.VQVAE`: encode, decode, the uniform prior, elbo, iwae) over
    the two levels; `levels` says how the (B, L) code sequence splits into the two maps."""

    def __init__(self, encoder: Encoder, decoder: Decoder, top: VectorQuantizer, bottom: VectorQuantizer, levels,
                 likelihood, commitment: float):
        self.encoder, self.decoder = encoder, decoder
        self.top_quantizer, self.bottom_quantizer = top, bottom
        self.levels = code_levels.normalize(levels)  # (("top", (h_t, w_t)), ("bottom", (h_b, w_b)))
        self.latent_shape = (code_levels.length(self.levels),)
        self.likelihood = likelihood
        self.commitment = commitment

    @property
    def num_codes(self) -> int:
        return self.top_quantizer.num_codes

    def _quantize(self, x):
        """Both levels: {level: (z_e, z_q straight-through, codes, commitment)}."""
        h_b = self.encoder.bottom_features(x)
        z_e_top = self.encoder.top(h_b)
        z_q_top, codes_top, commit_top = self.top_quantizer(z_e_top)
        z_e_bottom = self.encoder.bottom(h_b, z_q_top)
        z_q_bottom, codes_bottom, commit_bottom = self.bottom_quantizer(z_e_bottom)
        return {"top": (z_e_top, z_q_top, codes_top, commit_top),
                "bottom": (z_e_bottom, z_q_bottom, codes_bottom, commit_bottom)}

    def encode(self, x):
        """x (B, H, W, C) in [0, 1] -> (codes (B, L) int32: top then bottom, None): a point mass."""
        levels = self._quantize(x)
        return code_levels.join({name: levels[name][2] for name, _ in self.levels}, self.levels), None

    def decode(self, codes):
        maps = code_levels.split(codes, self.levels)
        z_q_top, z_q_bottom = self.top_quantizer.lookup(maps["top"]), self.bottom_quantizer.lookup(maps["bottom"])
        return self.decoder(z_q_bottom, z_q_top).astype(jnp.float32)

    def _terms(self, x):
        levels = self._quantize(x)
        recon = losses.log_likelihood(self.likelihood, x,
                                      self.decoder(levels["bottom"][1], levels["top"][1]).astype(jnp.float32))
        codes = code_levels.join({name: levels[name][2] for name, _ in self.levels}, self.levels)
        kl = -self.log_prior(codes)
        commit_top, commit_bottom = levels["top"][3], levels["bottom"][3]
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl, "commitment": commit_top + commit_bottom,
                 "commitment_top": commit_top, "commitment_bottom": commit_bottom,
                 "loss": -recon + self.commitment * (commit_top + commit_bottom)}
        return terms, levels

    def elbo(self, x, key=None, *, beta: float = 1.0, kl: str = "analytic"):
        """{'elbo', 'recon', 'kl', 'commitment' (and per level), 'loss'} per example; 'kl' is
        L log K, the KL of the point-mass posterior to the uniform prior over both maps."""
        return self._terms(x)[0]

    def train_terms(self, x, key, **kwargs):
        """The ELBO terms of a training step, after which each level's codebook takes its EMA
        step on this batch; also each level's code perplexity and restarted codes."""
        terms, levels = self._terms(x)
        batch = x.shape[0]
        quantizers = {"top": self.top_quantizer, "bottom": self.bottom_quantizer}
        for i, (name, quantizer) in enumerate(quantizers.items()):
            z_e, _, codes, _ = levels[name]
            dead, counts = quantizer.update(z_e, codes, jax.random.fold_in(key, i))
            terms[f"perplexity_{name}"] = jnp.full((batch,), perplexity(counts))
            terms[f"restarted_codes_{name}"] = jnp.full((batch,), jnp.sum(dead).astype(jnp.float32))
        return terms


def check(section) -> None:
    rules = [("channels", len(tuple(section.channels)) == 2 and min(section.channels) >= 1, "two widths >= 1"),
             ("num_codes", section.num_codes >= 2, ">= 2"), ("code_dim", section.code_dim >= 1, ">= 1"),
             ("commitment", section.commitment >= 0, ">= 0"),
             ("codebook_decay", 0 <= section.codebook_decay < 1, "in [0, 1)"),
             ("dead_code_threshold", section.dead_code_threshold >= 0, ">= 0"),
             ("bottom_downsampling", section.bottom_downsampling in DOWNSAMPLINGS, f"one of {DOWNSAMPLINGS}")]
    for field, ok, expected in rules:
        if not ok:
            raise ConfigError(f"config.vae.vq2.{field}={section[field]!r} is out of range; expected {expected}")


def levels(section, image_shape):
    """(("top", (h_t, w_t)), ("bottom", (h_b, w_b))) of images of `image_shape`."""
    bottom = int(section.bottom_downsampling)
    if image_shape[0] % bottom or image_shape[1] % bottom:
        raise ConfigError(f"config.vae.vq2.bottom_downsampling={bottom} does not divide the images' "
                          f"{tuple(image_shape[:2])}")
    hgt, wid = image_shape[0] // bottom, image_shape[1] // bottom
    return (("top", (-(-hgt // 2), -(-wid // 2))), ("bottom", (hgt, wid)))  # stride 2, 'SAME': rounded up


def latent_shape(section, image_shape) -> tuple[int]:
    return (code_levels.length(levels(section, image_shape)),)


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype) -> VQVAE2:
    channels, k, d = tuple(section.channels), int(section.num_codes), int(section.code_dim)
    down = int(section.bottom_downsampling)
    encoder = Encoder(image_shape, channels, d, down, rngs=rngs, dtype=dtype)
    decoder = Decoder(channels, d, out_channels, down, rngs=rngs, dtype=dtype)
    quantizers = [VectorQuantizer(k, d, decay=float(section.codebook_decay),
                                  dead_threshold=float(section.dead_code_threshold), rngs=rngs) for _ in range(2)]
    return VQVAE2(encoder, decoder, *quantizers, levels(section, image_shape), likelihood, float(section.commitment))


registry.register(registry.Spec(
    name="vq2", build=build, latent_shape=latent_shape, check=check, latents="categorical", levels=True,
    config={"channels": (32, 64), "num_codes": 256, "code_dim": 16, "commitment": 0.25, "codebook_decay": 0.99,
            "dead_code_threshold": 0.01, "bottom_downsampling": 2},
    smoke={"channels": (8, 16), "num_codes": 32, "code_dim": 8},
    doc="VQ-VAE-2: a top (H/2b) and a bottom (H/b) map of codes, b = bottom_downsampling, each with its EMA "
        "codebook; the latent is the two maps flattened, top first"))
