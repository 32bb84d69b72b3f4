"""MADE (Germain et al. 2015): a masked MLP prior for vector latents (d,).

Element i's mixture parameters depend only on elements < i: hidden units carry degrees in
1..d-1 and a weight is kept only where the degrees allow it. The masks are functions of
the architecture, rebuilt at trace time as constants (never trained, never checkpointed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from priors import mixture
from priors.registry import Spec, register


def _degrees(latent_dim: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    degrees = [np.arange(1, latent_dim + 1)]
    for size in hidden:
        degrees.append(np.arange(size) % max(latent_dim - 1, 1) + 1)
    return degrees


def masks(latent_dim: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """Masks (in, out) for each hidden layer, then the output layer (strictly-less)."""
    deg = _degrees(latent_dim, hidden)
    result = [(d_out[None, :] >= d_in[:, None]).astype(np.float32) for d_in, d_out in zip(deg[:-1], deg[1:])]
    result.append((deg[0][None, :] > deg[-1][:, None]).astype(np.float32))
    return result


class MADE(nnx.Module):
    def __init__(self, latent_shape, hidden=(256, 256), num_mixtures=5, *, rngs: nnx.Rngs):
        if len(latent_shape) != 1:
            raise ValueError(f"MADE models vector latents (d,); got latent shape {tuple(latent_shape)}: use 'pixelcnn'")
        self.latent_shape = tuple(latent_shape)
        self.hidden = tuple(hidden)
        self.num_mixtures = num_mixtures
        d = latent_shape[0]
        sizes = [d, *self.hidden]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], d * mixture.num_params(num_mixtures), rngs=rngs)
        self.out.bias[...] = mixture.initial_bias(d, num_mixtures).reshape(-1)

    def params(self, z):
        """z (B, d) -> mixture parameters (B, d, 3K); row i sees only z[:, :i]."""
        d, p = self.latent_shape[0], mixture.num_params(self.num_mixtures)
        layer_masks = masks(d, self.hidden)
        h = z
        for layer, mask in zip(self.layers, layer_masks[:-1]):
            h = jax.nn.gelu(h @ (layer.kernel[...] * mask) + layer.bias[...])
        out_mask = np.repeat(layer_masks[-1], p, axis=1)  # output unit i*p + j has degree i
        return (h @ (self.out.kernel[...] * out_mask) + self.out.bias[...]).reshape(z.shape[0], d, p)

    def log_prob(self, z):
        return jnp.sum(mixture.log_prob(self.params(z), z), axis=-1)

    def sample(self, key, n: int, *, temperature=1.0):
        """Element by element; each conditional's logistic scales times `temperature`."""
        d = self.latent_shape[0]

        def body(i, z):
            value = mixture.sample(jax.random.fold_in(key, i), self.params(z)[:, i], temperature)
            return z.at[:, i].set(value)

        return jax.lax.fori_loop(0, d, body, jnp.zeros((n, d)))


register(Spec(
    name="made",
    fit="gradient",
    build=lambda latent_shape, c, rngs: MADE(latent_shape, tuple(c.hidden), c.num_mixtures, rngs=rngs),
    config=dict(hidden=(256, 256), num_mixtures=5),
    smoke=dict(hidden=(32,), num_mixtures=3),
    doc="masked autoregressive MLP for vector latents",
))
