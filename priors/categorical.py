"""The softmax head over a VQ-VAE's K codes that the categorical autoregressive priors share
(`pixelcnn_codes`, `transformer_codes`), and the log-probability of a code map under it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class CodeHead(nnx.Module):
    """Features (..., F) -> logits over K codes (..., K)."""

    def __init__(self, features: int, num_codes: int, *, rngs: nnx.Rngs):
        self.head_in = nnx.Linear(features, features, rngs=rngs)
        self.head_out = nnx.Linear(features, num_codes, rngs=rngs)

    def features(self, h):
        return jax.nn.gelu(self.head_in(jax.nn.gelu(h)))

    def __call__(self, features):
        return self.head_out(features)


def categorical_log_prob(logits, codes):
    """log p(codes) (B, ...) under per-position logits (B, ..., K), summed per example -> (B,)."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), codes[..., None], axis=-1)
    return jnp.sum(picked.reshape(codes.shape[0], -1), axis=-1)
