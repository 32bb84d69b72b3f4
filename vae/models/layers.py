"""Small pieces the encoder/decoder families share."""

from __future__ import annotations

import jax.numpy as jnp


def posterior(out):
    """Encoder output -> (mean, logvar) in float32, logvar clipped so exp(logvar) stays finite."""
    mean, logvar = jnp.split(out.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, -12.0, 8.0)


def depth_to_space(x, r: int = 2):
    """(B, H, W, r*r*C) -> (B, r*H, r*W, C): sub-pixel upsampling (no transposed conv).

    On XLA:CPU a stride-2 transposed conv computes over the zero-dilated input; this
    upsampling measured 5.7x faster for the whole VAE step (benchmarks/ has the figures).
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, r, r, c // (r * r))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * r, w * r, c // (r * r))
