"""The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) Σ_k q(z | u_k), the mixture of the
encoder's posteriors at K learned pseudo-inputs u_k.

It is part of the VAE, not fitted afterwards: it holds the VAE's own encoder (a shared
reference, so one set of weights) and the pseudo-inputs, and trains with the VAE in the ELBO
(`--config.vae.prior=vamp`, built by `vae.models.build_vae`). So it is not in the registry
of stage-2 priors; it has their interface (`log_prob`, `sample`) and the report scores it
as `joint_vamp`.

The pseudo-inputs are images: u_k = sigmoid(logits_k), in [0, 1] as the data are. log_prob
scores every (z, component) pair through matmuls (`priors.gaussians`' expanded square, at
HIGHEST precision so TF32 never applies on GPUs), so a batch of B latents against K
components costs a (B, D) x (D, K) product, not a (B, K, D) array. The expansion loses
float32 digits for components sharper than std ~0.01 (see `priors.gaussians`); the
posteriors at pseudo-inputs of a trained VAE are far broader than that.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors import gaussians


class VampPrior(nnx.Module):
    def __init__(self, encoder, image_shape, latent_shape, num_components: int = 500, *, rngs: nnx.Rngs):
        """`encoder(x) -> (mean, logvar)` of q(z|x), the VAE's own (shared, trained with it)."""
        if num_components < 1:
            raise ValueError(f"config.vae.vamp_components={num_components} must be >= 1")
        self.encoder = encoder
        self.latent_shape = tuple(latent_shape)
        self.pseudo_logits = nnx.Param(jax.random.normal(rngs.params(), (num_components, *image_shape)))

    def pseudo_inputs(self):
        return jax.nn.sigmoid(self.pseudo_logits[...])

    def components(self):
        """(mean, logvar) of q(z|u_k), flattened: (K, D) each."""
        mean, logvar = self.encoder(self.pseudo_inputs())
        k = mean.shape[0]
        return mean.reshape(k, -1), logvar.reshape(k, -1)

    def log_prob(self, z):
        mean, logvar = self.components()
        log_comp = gaussians.diag_log_probs_expanded(z.reshape(z.shape[0], -1), mean, logvar)  # (B, K)
        return jax.nn.logsumexp(log_comp, axis=-1) - math.log(mean.shape[0])

    def sample(self, key, n: int, *, temperature=1.0):
        """A pseudo-input's posterior q(z|u_k), k uniform, with its standard deviation times temperature."""
        mean, logvar = self.components()
        key_k, key_eps = jax.random.split(key)
        k = jax.random.randint(key_k, (n,), 0, mean.shape[0])
        eps = temperature * jax.random.normal(key_eps, (n, mean.shape[-1]))
        z = mean[k] + jnp.exp(0.5 * logvar[k]) * eps
        return z.reshape(n, *self.latent_shape)
