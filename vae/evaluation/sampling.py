"""Images from a prior: latents drawn under jit and decoded to the likelihood's mean, in
bounded batches, each program compiled once per module structure.

The graphdefs are static arguments, so later calls (other seeds, other reports, a VAE built
alike) reuse the compiled program instead of tracing a new closure.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from vae.models import losses


@functools.partial(jax.jit, static_argnames=("graphdef", "n"))
def _sample(state, key, temperature, *, graphdef, n):
    return nnx.merge(graphdef, state).sample(key, n, temperature=temperature)


@functools.partial(jax.jit, static_argnames="graphdef")
def _decode(state, z, *, graphdef):
    vae = nnx.merge(graphdef, state)
    return losses.decoder_mean(vae.likelihood, vae.decode(z))


def draw_samples(prior, key, n: int, temperature: float = 1.0, batch: int = 2000):
    """n latents from `prior` at `temperature` under jit, `batch` at a time (bounded memory).
    The temperature is traced: one compiled program serves every temperature."""
    graphdef, state = nnx.split(prior)
    temperature = jnp.float32(temperature)
    parts = [_sample(state, jax.random.fold_in(key, i), temperature, graphdef=graphdef, n=min(batch, n))
             for i in tqdm(range(0, n, batch), desc="sample", leave=False)]
    return jnp.concatenate(parts)[:n]


def decode_images(vae, z, batch: int = 1000) -> np.ndarray:
    """The decoder's mean image of each latent in z, `batch` latents at a time, on the host."""
    graphdef, state = nnx.split(vae)
    parts = [_decode(state, z[i : i + batch], graphdef=graphdef) for i in range(0, len(z), batch)]
    return np.asarray(jnp.concatenate(parts))
