"""Bounds on -log p(x) of test images under several priors at once: nll_iwae and the ELBO.

One jitted program per module structure (the graphdefs are static), so every seed and every
later call reuses it; each batch decodes its k draws once and scores them under every prior.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm


@functools.partial(jax.jit, static_argnames=("vae_graphdef", "graphdefs", "k"))
def _iwae_batch(vs, states, xb, kb, *, vae_graphdef, graphdefs, k):
    log_priors = tuple(nnx.merge(g, s).log_prob for g, s in zip(graphdefs, states))
    return nnx.merge(vae_graphdef, vs).iwae(xb, kb, k=k, log_prior=log_priors)


def iwae_under_priors(vae, priors_, x, key, k: int, batch: int = 100):
    """(nll_iwae, elbo), each (P, N), of prepared test images x under each of the P priors in
    `priors_`, from the same k draws per image: the decoder runs once for all of them."""
    vae_graphdef, vae_state = nnx.split(vae)
    graphdefs, states = zip(*(nnx.split(p) for p in priors_))
    out = [_iwae_batch(vae_state, states, jnp.asarray(x[i : i + batch]), jax.random.fold_in(key, i),
                       vae_graphdef=vae_graphdef, graphdefs=graphdefs, k=k)
           for i in tqdm(range(0, len(x), batch), desc="iwae", leave=False)]
    nll_iwae = -np.concatenate([np.asarray(log_px) for log_px, _ in out], axis=1)
    elbo = np.concatenate([np.asarray(elbo_batch) for _, elbo_batch in out], axis=1)
    return nll_iwae, elbo
