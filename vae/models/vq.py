"""VQ-VAE (van den Oord et al. 2017): a map of integer codes as the latent (`config.vae.arch='vq'`).

config.vae.vq: channels (the conv stacks' widths), num_codes (K), code_dim (D), commitment,
codebook_decay (the EMA's), dead_code_threshold (EMA count per step below which a code restarts).

  x -> conv encoder (`vae.models.conv.ConvEncoder`'s stack) -> z_e (B, H/4, W/4, D)
    -> `VectorQuantizer`: the nearest of K codebook rows per position -> codes (B, H/4, W/4), z_q
    -> conv decoder (`vae.models.conv.ConvDecoder` on D channels) -> p(x | z_q)

Training minimizes -log p(x|z_q) + commitment * ||z_e - sg(z_q)||^2, the decoder reading
z_e + sg(z_q - z_e): the straight-through estimator, whose gradient reaches the encoder as
if quantization were the identity. The codebook is not trained by gradient: it is the
exponential moving average of the encoder outputs assigned to each code (Razavi et al. 2019,
appendix), kept in `Statistic` variables that the train step updates beside the optimizer's
(`VQVAE.train_terms`). A code whose average count per step falls below `dead_threshold` is
restarted at a random encoder output of the batch; the codebook starts with every code
dead, so the first step initializes it from data.

The prior stage 1 trains with is uniform over the K^(h w) code maps and the posterior is a
point mass, so log p(x) >= log p(x|z_q) + log p(z_q), and the ELBO is log p(x|z_q) - h w log K
(`elbo`'s 'kl' is that constant). Stage 2 fits categorical priors (`latents='categorical'`
in `priors.registry`) to the code maps, and the same bound with log p(z_q) under them is
the report's likelihood (`iwae`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from priors import code_levels
from priors.uniform import Uniform
from vae.errors import ConfigError
from vae.models import losses, registry
from vae.models.conv import DOWNSAMPLING, ConvDecoder, ConvEncoder


class Statistic(nnx.Variable):
    """State a train step sets from running statistics, outside the optimizer (its gradient is zero)."""


class VectorQuantizer(nnx.Module):
    def __init__(self, num_codes: int, dim: int, *, decay: float = 0.99, dead_threshold: float = 0.01,
                 rngs: nnx.Rngs):
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.dead_threshold = decay, dead_threshold
        self.embedding = Statistic(jax.random.normal(rngs.params(), (num_codes, dim)))
        self.cluster_size = Statistic(jnp.zeros((num_codes,)))  # EMA of assignments per step
        self.embed_sum = Statistic(jnp.zeros((num_codes, dim)))  # EMA of the assigned vectors' sum

    def codes(self, z_e):
        """Index of the nearest codebook row (squared Euclidean) per position: (..., D) -> (...)."""
        e = self.embedding[...]
        d = (jnp.sum(z_e**2, -1, keepdims=True) - 2.0 * jnp.einsum("...d,kd->...k", z_e, e,
                                                                   precision=jax.lax.Precision.HIGHEST)
             + jnp.sum(e**2, -1))
        return jnp.argmin(d, axis=-1).astype(jnp.int32)

    def lookup(self, codes):
        return self.embedding[...][codes]

    def __call__(self, z_e):
        """(z_q straight-through, codes, commitment per example): the decoder's input carries
        z_q forward and passes the gradient to z_e unchanged."""
        codes = self.codes(z_e)
        z_q = jax.lax.stop_gradient(self.lookup(codes))
        commitment = jnp.sum(((z_e - z_q) ** 2).reshape(z_e.shape[0], -1), axis=-1)
        return z_e + jax.lax.stop_gradient(z_q - z_e), codes, commitment

    def update(self, z_e, codes, key):
        """One EMA step of the codebook on the batch's encoder outputs and their codes, then
        dead-code restarts (at random rows of the batch) -> (restarted mask, the batch's counts per code)."""
        flat = jax.lax.stop_gradient(z_e).reshape(-1, self.dim)
        onehot = jax.nn.one_hot(codes.reshape(-1), self.num_codes, dtype=flat.dtype)
        g = self.decay
        size = g * self.cluster_size[...] + (1 - g) * jnp.sum(onehot, axis=0)
        total = g * self.embed_sum[...] + (1 - g) * jnp.einsum("nk,nd->kd", onehot, flat,
                                                               precision=jax.lax.Precision.HIGHEST)
        n, eps = jnp.sum(size), 1e-5  # Laplace smoothing keeps rarely used codes finite
        smoothed = (size + eps) / (n + self.num_codes * eps) * n
        embedding = total / smoothed[:, None]
        dead = size < self.dead_threshold
        fresh = flat[jax.random.randint(key, (self.num_codes,), 0, flat.shape[0])]
        self.embedding[...] = jnp.where(dead[:, None], fresh, embedding)
        self.embed_sum[...] = jnp.where(dead[:, None], fresh, total)  # a restarted code counts as one use
        self.cluster_size[...] = jnp.where(dead, 1.0, size)
        return dead, jnp.sum(onehot, axis=0)


def perplexity(counts):
    """exp(entropy) of the code histogram `counts` (K,): how many codes are in effective use."""
    p = counts / jnp.sum(counts)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def codebook_usage(codes, num_codes: int, levels=None) -> dict:
    """Perplexity of the code histogram and how many of the K codes occur, over `codes`; with
    `levels` (a VQ-VAE-2's, `priors.code_levels`), also each level's own, as 'perplexity_<level>'
    and 'codes_used_<level>' (each level has its own codebook: the pooled numbers mix two)."""
    counts = jnp.bincount(jnp.asarray(codes).reshape(-1), length=num_codes)
    usage = {"perplexity": float(perplexity(counts)), "codes_used": int(jnp.sum(counts > 0))}
    for name, level_codes in ({} if levels is None else code_levels.split(jnp.asarray(codes), levels)).items():
        usage |= {f"{key}_{name}": value for key, value in codebook_usage(level_codes, num_codes).items()}
    return usage


class VQVAE(nnx.Module):
    """The VAE interface over a discrete latent: `encode` gives the code map (and None where
    a Gaussian posterior has its log-variance), `decode` takes code maps."""

    latents = "categorical"
    prior = None
    prior_name = "uniform"
    joint_prior_label = None
    point_mass = True  # q(z|x) puts all its mass on the code map: the report's bound needs no sampling

    def __init__(self, encoder, decoder, quantizer: VectorQuantizer, latent_shape, likelihood, commitment: float):
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.latent_shape = tuple(latent_shape)  # (h, w): one code per position
        self.likelihood = likelihood
        self.commitment = commitment

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def encode(self, x):
        """x (B, H, W, C) in [0, 1] -> (codes (B, h, w) int32, None): a point-mass posterior."""
        return self.quantizer.codes(self.encoder(x).astype(jnp.float32)), None

    def decode(self, codes):
        return self.decoder(self.quantizer.lookup(codes)).astype(jnp.float32)

    def log_prior(self, codes):
        """log p(z) under the uniform prior of training: -h w log K for every code map."""
        return Uniform(self.latent_shape, self.num_codes).log_prob(codes)

    def sample_prior(self, key, n: int):
        return Uniform(self.latent_shape, self.num_codes).sample(key, n)

    def _terms(self, x):
        z_e = self.encoder(x).astype(jnp.float32)
        z_q, codes, commitment = self.quantizer(z_e)
        recon = losses.log_likelihood(self.likelihood, x, self.decoder(z_q).astype(jnp.float32))
        kl = -self.log_prior(codes)
        terms = {"elbo": recon - kl, "recon": recon, "kl": kl, "commitment": commitment,
                 "loss": -recon + self.commitment * commitment}
        return terms, z_e, codes

    def elbo(self, x, key=None, *, beta: float = 1.0, kl: str = "analytic"):
        """{'elbo', 'recon', 'kl', 'commitment', 'loss'} per example; 'kl' is h w log K, the
        KL of the point-mass posterior to the uniform prior. (`key`, `beta` and `kl` are the
        continuous VAE's and change nothing here: the posterior has no noise, the KL no estimator.)"""
        return self._terms(x)[0]

    def train_terms(self, x, key, **kwargs):
        """The ELBO terms of a training step, after which the codebook takes its EMA step on
        this batch (`VectorQuantizer.update`); also the batch's code perplexity and restarts."""
        terms, z_e, codes = self._terms(x)
        dead, counts = self.quantizer.update(z_e, codes, key)
        batch = x.shape[0]
        return terms | {"perplexity": jnp.full((batch,), perplexity(counts)),
                        "restarted_codes": jnp.full((batch,), jnp.sum(dead).astype(jnp.float32))}

    def iwae(self, x, key, *, k: int, log_prior):
        """(log p(x) bound, ELBO) per example: both log p(x|z_q) + log p(z_q), the posterior
        being a point mass (k and key change nothing); (P, B) each for a tuple of P priors."""
        codes, _ = self.encode(x)
        log_px = losses.log_likelihood(self.likelihood, x, self.decode(codes))
        if isinstance(log_prior, (tuple, list)):
            bound = jnp.stack([log_px + lp(codes) for lp in log_prior])
        else:
            bound = log_px + log_prior(codes)
        return bound, bound


def check(section) -> None:
    rules = [("num_codes", section.num_codes >= 2, ">= 2"), ("code_dim", section.code_dim >= 1, ">= 1"),
             ("commitment", section.commitment >= 0, ">= 0"),
             ("codebook_decay", 0 <= section.codebook_decay < 1, "in [0, 1)"),
             ("dead_code_threshold", section.dead_code_threshold >= 0, ">= 0")]
    for field, ok, expected in rules:
        if not ok:
            raise ConfigError(f"config.vae.vq.{field}={section[field]!r} is out of range; expected {expected}")


def latent_shape(section, image_shape) -> tuple[int, int]:
    if image_shape[0] % DOWNSAMPLING or image_shape[1] % DOWNSAMPLING:
        raise ConfigError(f"config.vae.arch='vq' downsamples by {DOWNSAMPLING}, which does not divide {image_shape[:2]}")
    return (image_shape[0] // DOWNSAMPLING, image_shape[1] // DOWNSAMPLING)


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype) -> VQVAE:
    """The conv stacks of arch='conv' around a K x D codebook."""
    channels, k, d = tuple(section.channels), int(section.num_codes), int(section.code_dim)
    encoder = ConvEncoder(image_shape, channels, d, rngs=rngs, dtype=dtype, gaussian=False)
    decoder = ConvDecoder(image_shape, channels, d, out_channels, rngs=rngs, dtype=dtype)
    quantizer = VectorQuantizer(k, d, decay=float(section.codebook_decay),
                                dead_threshold=float(section.dead_code_threshold), rngs=rngs)
    return VQVAE(encoder, decoder, quantizer, latent_shape, likelihood, float(section.commitment))


registry.register(registry.Spec(
    name="vq", build=build, latent_shape=latent_shape, check=check, latents="categorical",
    config={"channels": (32, 64), "num_codes": 256, "code_dim": 16, "commitment": 0.25, "codebook_decay": 0.99,
            "dead_code_threshold": 0.01},
    smoke={"channels": (8, 16)},
    doc="the conv stacks around a vector quantizer with an EMA codebook: a (H/4, W/4) map of codes"))
