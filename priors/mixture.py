"""The continuous mixture-of-logistics head shared by the autoregressive priors.

Each latent element's conditional is p(x) = sum_k pi_k Logistic(x; mu_k, s_k): a normalized
density over the reals (not a softmax over codes). A head emits 3K numbers per element:
K mixture logits, K means, K log-scales, in that order along the last axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_LOG_SCALE = -7.0
MAX_LOG_SCALE = 5.0  # latents live at O(1) scale; keeps an untrained head's samples finite


def num_params(num_mixtures: int) -> int:
    return 3 * num_mixtures


def initial_bias(num_elements: int, num_mixtures: int):
    """Head bias (num_elements, 3K): equal weights, unit scales, means spread over [-2, 2].

    A zero bias would make the K components identical; for an element whose parameters
    are the bias alone (the first in the order) they would then get identical gradients
    and never separate.
    """
    means = jnp.linspace(-2.0, 2.0, num_mixtures) if num_mixtures > 1 else jnp.zeros(1)
    row = jnp.concatenate([jnp.zeros(num_mixtures), means, jnp.zeros(num_mixtures)])
    return jnp.broadcast_to(row, (num_elements, 3 * num_mixtures))


def _split(params):
    logits, means, log_scales = jnp.split(params, 3, axis=-1)
    return logits, means, jnp.clip(log_scales, MIN_LOG_SCALE, MAX_LOG_SCALE)


def log_prob(params, x):
    """Elementwise log-density (nats) of x (...) under params (..., 3K)."""
    logits, means, log_scales = _split(params)
    u = (x[..., None] - means) * jnp.exp(-log_scales)
    log_component = -u - log_scales - 2.0 * jax.nn.softplus(-u)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + log_component, axis=-1)


def sample(key, params):
    """One draw per element of params (..., 3K): component by its logits, then inverse CDF."""
    logits, means, log_scales = _split(params)
    key_k, key_u = jax.random.split(key)
    k = jax.random.categorical(key_k, logits, axis=-1)
    pick = lambda a: jnp.take_along_axis(a, k[..., None], axis=-1)[..., 0]
    u = jax.random.uniform(key_u, k.shape, minval=1e-5, maxval=1.0 - 1e-5)
    return pick(means) + jnp.exp(pick(log_scales)) * (jnp.log(u) - jnp.log1p(-u))
