"""RealNVP (Dinh et al. 2017): a normalizing-flow prior over the flattened latent.

A bijection f maps a latent z (flattened to d numbers) to noise u ~ N(0, I) through
`num_blocks` blocks, each
  * ActNorm: u = (z + b) * exp(s), a learned per-dimension affine that starts as the identity
    (log|det| = sum s);
  * an affine coupling layer: with a binary mask m, u = m*z + (1-m) * (z * exp(s(m*z)) + t(m*z)),
    where s and t come from an MLP of the kept half and s = exp(c) * tanh(.) is bounded
    (log|det| = sum (1-m) * s). The MLP's last layer starts at zero, so every block starts
    as the identity. Masks alternate between even/odd positions and first/second half of
    the flattened latent, each pattern and its complement in turn, so after four blocks every
    element has been transformed conditioned on every other group.
log p(z) = log N(f(z); 0, I) + sum of the blocks' log|det|: exact, one pass. Sampling inverts
the blocks in reverse order on u ~ N(0, I): one pass too, no autoregression.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from priors.registry import Spec, register


def mask(d: int, block: int) -> np.ndarray:
    """The kept elements (1) of coupling `block` over d elements."""
    pattern = np.arange(d) % 2 if (block // 2) % 2 == 0 else (np.arange(d) < d // 2).astype(int)
    return (pattern if block % 2 == 0 else 1 - pattern).astype(np.float32)


class Coupling(nnx.Module):
    def __init__(self, d: int, hidden: int, block: int, *, rngs: nnx.Rngs):
        self.d, self.block = d, block
        self.inp = nnx.Linear(d, hidden, rngs=rngs)
        self.mid = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 2 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.log_scale = nnx.Param(jnp.zeros((d,)))  # bounds s to exp(log_scale) * [-1, 1]

    def shift_and_log_scale(self, kept):
        h = jax.nn.gelu(self.mid(jax.nn.gelu(self.inp(kept))))
        t, s = jnp.split(self.out(h), 2, axis=-1)
        return t, jnp.exp(self.log_scale[...]) * jnp.tanh(s)

    def forward(self, z):
        """z -> (u, log|det du/dz| per example)."""
        m = mask(self.d, self.block)
        t, s = self.shift_and_log_scale(m * z)
        return m * z + (1 - m) * (z * jnp.exp(s) + t), jnp.sum((1 - m) * s, axis=-1)

    def inverse(self, u):
        m = mask(self.d, self.block)
        t, s = self.shift_and_log_scale(m * u)  # m*u == m*z: the kept half passes unchanged
        return m * u + (1 - m) * (u - t) * jnp.exp(-s)


class ActNorm(nnx.Module):
    def __init__(self, d: int):
        self.bias = nnx.Param(jnp.zeros((d,)))
        self.log_scale = nnx.Param(jnp.zeros((d,)))

    def forward(self, z):
        return (z + self.bias[...]) * jnp.exp(self.log_scale[...]), jnp.sum(self.log_scale[...]) * jnp.ones(z.shape[0])

    def inverse(self, u):
        return u * jnp.exp(-self.log_scale[...]) - self.bias[...]


class RealNVP(nnx.Module):
    def __init__(self, latent_shape, num_blocks: int = 8, hidden: int = 512, *, rngs: nnx.Rngs):
        self.latent_shape = tuple(latent_shape)
        d = math.prod(self.latent_shape)
        self.norms = nnx.List([ActNorm(d) for _ in range(num_blocks)])
        self.couplings = nnx.List([Coupling(d, hidden, i, rngs=rngs) for i in range(num_blocks)])

    def forward(self, z):
        """Latents (B, *latent_shape) -> (noise u (B, d), log|det du/dz| (B,))."""
        x = z.reshape(z.shape[0], -1)
        log_det = jnp.zeros(z.shape[0])
        for norm, coupling in zip(self.norms, self.couplings):
            for layer in (norm, coupling):
                x, ld = layer.forward(x)
                log_det = log_det + ld
        return x, log_det

    def inverse(self, u):
        """Noise (B, d) -> latents (B, *latent_shape)."""
        x = u
        for norm, coupling in zip(reversed(self.norms), reversed(self.couplings)):
            x = norm.inverse(coupling.inverse(x))
        return x.reshape(u.shape[0], *self.latent_shape)

    def log_prob(self, z):
        u, log_det = self.forward(z)
        return jnp.sum(jax.scipy.stats.norm.logpdf(u), axis=-1) + log_det

    def sample(self, key, n: int, *, temperature=1.0):
        """The flow's inverse of base noise u ~ N(0, temperature² I) (Glow's temperature)."""
        return self.inverse(temperature * jax.random.normal(key, (n, math.prod(self.latent_shape))))


register(Spec(
    name="realnvp",
    fit="gradient",
    build=lambda latent_shape, c, rngs: RealNVP(latent_shape, c.num_blocks, c.hidden, rngs=rngs),
    config=dict(num_blocks=8, hidden=512),
    smoke=dict(num_blocks=4, hidden=32),
    doc="normalizing flow: ActNorm + affine coupling blocks over the flattened latent",
))
