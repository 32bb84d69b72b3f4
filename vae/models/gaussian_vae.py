"""The VAE with a diagonal-Gaussian posterior that every 'continuous' architecture builds.

q(z|x) = N(mean, exp(logvar)) from the encoder; the decoder returns raw parameters per pixel,
which `vae.models.losses` turns into a likelihood. The prior it trains with (`prior`, named
`prior_name` as in config.vae.prior) is N(0, I) (`priors.StandardNormal`, 'standard_normal',
with the analytic KL) or a learned one trained jointly (`vae.models.build_stage1_prior`), which
then lives in the model and so in every checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vae.models import losses

STANDARD_NORMAL = "standard_normal"  # config.vae.prior of N(0, I), as the prior registry names it


class VAE(nnx.Module):
    """q(z|x) = N(mean, exp(logvar)), a decoder giving p(x|z)'s parameters, and the prior p(z)
    it trains with (`prior`, `prior_name`)."""

    latents = "continuous"  # what priors it takes (`priors.registry.Spec.latents`); VQVAE: 'categorical'
    num_codes = None

    def __init__(self, encoder, decoder, latent_shape, likelihood, prior, prior_name: str):
        self.encoder = encoder
        self.decoder = decoder
        self.latent_shape = tuple(latent_shape)
        self.likelihood = likelihood
        self.prior = prior
        self.prior_name = prior_name

    @property
    def learned_prior(self) -> bool:
        """Whether the prior it trains with is learned (jointly), not N(0, I)."""
        return self.prior_name != STANDARD_NORMAL

    @property
    def joint_prior_label(self) -> str | None:
        """How reports name the prior trained with this VAE ('joint_<name>'); None for N(0, I)."""
        return f"joint_{self.prior_name}" if self.learned_prior else None

    def encode(self, x):
        """x: (B, H, W, C) in [0, 1] -> mean, logvar: (B, *latent_shape), float32."""
        return self.encoder(x)

    def log_prior(self, z):
        """log p(z) under the prior the VAE trains with -> (B,)."""
        return self.prior.log_prob(z)

    def sample_prior(self, key, n: int):
        return self.prior.sample(key, n)

    def elbo(self, x, key, *, beta: float = 1.0, kl: str = "analytic"):
        """The ELBO terms (`losses.elbo`) of images x with one z ~ q(z|x) drawn from `key`; under
        a learned prior the KL is the single-sample estimate at that z (N(0, I)'s: analytic, or
        `kl='mc'`)."""
        mean, logvar, z, out = self(x, key)
        log_prior = self.prior.log_prob if self.learned_prior else None
        return losses.elbo(x, mean, logvar, z, out, self.likelihood, beta=beta, kl=kl, log_prior=log_prior)

    def train_terms(self, x, key, **kwargs):
        """What a training step minimizes ('loss') and logs: the ELBO terms. (A model with
        running statistics, the VQ-VAE's codebook, also updates them here.)"""
        return self.elbo(x, key, **kwargs)

    def iwae(self, x, key, *, k: int, log_prior):
        """(IWAE bound with k importance samples, ELBO from the same draws) per example, under
        the prior `log_prior`, or (P, B) under each of a tuple of P priors from the same draws
        (`losses.iwae_bound`, 10 draws at a time)."""
        return losses.iwae_bound(self.encode, self.decode, self.likelihood, x, key, k=k, log_prior=log_prior,
                                 chunk=min(k, 10) if k % 10 == 0 else k, with_elbo=True)

    def decode(self, z):
        """z: (B, *latent_shape) -> decoder output (B, H, W, C * channels per pixel), float32."""
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x, key):
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        return mean, logvar, z, self.decode(z)
