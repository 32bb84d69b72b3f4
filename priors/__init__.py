"""Learned priors over VAE latents, all with one small interface (`Prior`).

A prior is fitted by maximum likelihood to latents of a frozen encoder; nothing here
imports training code. `build(name, latent_shape, prior_config)` makes one from a config.
"""

from __future__ import annotations

from typing import Protocol

import jax
from flax import nnx

from priors.gmm import GMM
from priors.made import MADE
from priors.pixelcnn import PixelCNN
from priors.standard_normal import StandardNormal

NAMES = ("standard_normal", "gmm", "made", "pixelcnn")
GRADIENT_FITTED = ("made", "pixelcnn")


class Prior(Protocol):
    latent_shape: tuple[int, ...]

    def log_prob(self, z: jax.Array) -> jax.Array:
        """(B, *latent_shape) -> (B,): normalized log-density in nats."""

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """-> (n, *latent_shape)."""


def build(name: str, latent_shape, prior_config, *, seed: int = 0) -> Prior:
    """The prior `name` for `latent_shape` with hyper-parameters from `config.prior`."""
    latent_shape = tuple(int(s) for s in latent_shape)
    if name == "standard_normal":
        return StandardNormal(latent_shape)
    if name == "gmm":
        c = prior_config.gmm
        return GMM(latent_shape, c.num_components, c.covariance, c.reg)
    if name == "made":
        c = prior_config.made
        return MADE(latent_shape, tuple(c.hidden), c.num_mixtures, rngs=nnx.Rngs(seed))
    if name == "pixelcnn":
        c = prior_config.pixelcnn
        return PixelCNN(latent_shape, c.features, c.num_layers, c.kernel_size, c.num_mixtures, rngs=nnx.Rngs(seed))
    raise ValueError(f"config.prior.name: unknown prior {name!r}; expected one of {NAMES}")
