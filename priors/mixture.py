"""The continuous mixture-of-logistics head shared by the autoregressive priors.

Each latent element's conditional is p(x) = sum_k pi_k Logistic(x; mu_k, s_k): a normalized
density over the reals (not a softmax over codes). A head emits 3K numbers per element:
K mixture logits, K means, K log-scales, in that order along the last axis.
`ChannelHead` emits them for the channels of one position, autoregressively over channels;
`dropout` is the regularizer the autoregressive priors' trunks share.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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


def sample(key, params, temperature=1.0):
    """One draw per element of params (..., 3K): component by its logits, then inverse CDF.

    At temperature T every component's logistic scale is multiplied by T and the mixture
    weights are kept: each mode keeps its mass and narrows (T < 1) around its mean, so the
    conditional's spread shrinks by T within modes but not between them."""
    logits, means, log_scales = _split(params)
    key_k, key_u = jax.random.split(key)
    k = jax.random.categorical(key_k, logits, axis=-1)
    picked_means = jnp.take_along_axis(means, k[..., None], axis=-1)[..., 0]
    picked_scales = jnp.exp(jnp.take_along_axis(log_scales, k[..., None], axis=-1)[..., 0])
    u = jax.random.uniform(key_u, k.shape, minval=1e-5, maxval=1.0 - 1e-5)
    return picked_means + temperature * picked_scales * (jnp.log(u) - jnp.log1p(-u))


class ChannelHead(nnx.Module):
    """Per-position features (..., F) and the latent at those positions (..., C) -> mixture
    parameters (..., C, 3K), channel c seeing the features and z[..., :c] only (a strictly
    lower-triangular linear map of the channels, added to the features before the output)."""

    def __init__(self, channels: int, features: int, num_mixtures: int, *, rngs: nnx.Rngs):
        c, f = channels, features
        self.head_in = nnx.Linear(f, f, rngs=rngs)
        self.channel_mix = nnx.Param(jax.random.normal(rngs.params(), (c, c, f)) * 0.1)
        self.head_out = nnx.Param(jax.random.normal(rngs.params(), (c, f, num_params(num_mixtures))) / np.sqrt(f))
        self.head_bias = nnx.Param(initial_bias(c, num_mixtures))

    def features(self, h):
        """The position's features from a trunk's output (the part shared by every channel)."""
        return jax.nn.gelu(self.head_in(jax.nn.gelu(h)))

    def __call__(self, features, z_pos):
        c, f, p = self.head_out.shape
        mask = jnp.tril(jnp.ones((c, c)), k=-1)  # mask[c, d] = 1 where d < c
        mix = (self.channel_mix[...] * mask[:, :, None]).transpose(1, 0, 2).reshape(c, c * f)  # (d, c f)
        u = jax.nn.gelu(features[..., None, :] + (z_pos @ mix).reshape(*z_pos.shape[:-1], c, f))
        # One (..., c f) @ (c f, c p) matmul with the per-channel maps on the block diagonal,
        # instead of c batched ones: no transposes of u (which cost more than the matmul on the CPU).
        block_diagonal = jnp.einsum("cfp,cd->cfdp", self.head_out[...], jnp.eye(c)).reshape(c * f, c * p)
        out = u.reshape(*u.shape[:-2], c * f) @ block_diagonal
        return out.reshape(*u.shape[:-1], p) + self.head_bias[...]


def dropout_keys(key, n: int) -> list:
    """n keys for n dropout sites, or n Nones when there is no key (evaluation, sampling)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def dropout(key, x, rate: float):
    """Inverted dropout of x when a key is given (training); the identity without one."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)
