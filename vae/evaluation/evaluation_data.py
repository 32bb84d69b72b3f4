"""The evaluation data of a run: one object with named seeds that every consumer asks for.

Stage 1's evaluation, stage 2's held-out latents, sample.py's report, `vae.load` and the
diagnostics must see the same images binarized the same way; `EvalData` is where that is
decided, once. Every stream derives from config.seed through `vae.rng`'s table:

  validation / test images      binarized once by the streams 'validation' / 'test'
  training images, to encode    binarized once by 'train_latents' (stage 2, report)
  held-out latents              one draw z ~ q(z|x) per validation image, 'heldout_draw'
  the ELBO's noise              'elbo_noise' (`elbo_key`)

A posterior is read as (mean, logvar): a Gaussian's, or a VQ-VAE's codes with logvar None (a
point mass: its draw is the codes). A dVAE's q(c|x) is a real categorical distribution whose K
logits a position are too many to keep for every image (49 x 256 floats: 2.7 GB for Fashion's
training split), so it is kept by the encoder alone (`sampled_posterior`): its (mean, logvar) is
(argmax codes, None), and a draw re-encodes the images (`posterior_draws`; `SampledPosterior`
stands for such a posterior where stage 2 would read (mean, logvar)).

Also here: the ELBO evaluation itself (`make_elbo_fn`, `evaluate`) and the latent NLL of a
prior, so that readers of a run never import a training module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae import rng
from vae.data import input_pipeline
from vae.models import losses
from vae.parallel import sharding


def make_elbo_fn(graphdef, config):
    """jitted (params, x, key) -> per-example ELBO terms, for prepared images x in [0, 1]."""

    @jax.jit
    def elbo_terms(params, x, key):
        return nnx.merge(graphdef, params).elbo(x, key, beta=config.vae.beta, kl=config.vae.kl)

    return elbo_terms


@jax.jit
def _valid_sums(terms: dict, num_valid):
    """Sums of per-example terms over the first `num_valid` rows (the rest: padding)."""
    valid = jnp.arange(next(iter(terms.values())).shape[0]) < num_valid
    return {k: jnp.sum(jnp.where(valid, v, 0.0)) for k, v in terms.items()}


def evaluate(elbo_fn, params, x, key, batch_size: int, *, bits_per_dim: bool = False, mesh=None) -> dict:
    """Mean ELBO terms over prepared images `x` (host array), in fixed-size batches; with a
    `mesh` (every process passing the same x), each batch is split across its devices (the
    batch size rounded up to a multiple of their number)."""
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
    n = len(x)
    pad = (-n) % batch_size
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    sums = None
    for i in range(0, len(xp), batch_size):
        xb = xp[i : i + batch_size] if mesh is None else sharding.put(xp[i : i + batch_size],
                                                                      sharding.batch_sharding(mesh))
        batch_sums = _valid_sums(elbo_fn(params, xb, jax.random.fold_in(key, i)), n - i)
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
    metrics = {k: float(v) / n for k, v in jax.device_get(sums).items()}  # one host fetch
    if bits_per_dim:  # for 8-bit data: the negative ELBO in bits per pixel
        metrics["nelbo_bits_per_dim"] = losses.bits_per_dim(-metrics["elbo"], math.prod(x.shape[1:]))
    return metrics


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, params, x):
    return nnx.merge(graphdef, params).encode(x)


def encode(model, x, batch_size: int = 1000):
    """Posterior (mean, logvar) of prepared images x, in batches under jit (compiled once
    per model structure and batch shape, however often it is called)."""
    graphdef, params = nnx.split(model)
    outs = [_encode(graphdef, params, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)  # a VQ-VAE's logvar is None


def draw_latents(key, mean, logvar):
    """z ~ q(z|x) = N(mean, exp(logvar)); with logvar None (a VQ-VAE's point mass), the codes `mean`
    (a dVAE's posterior is drawn by `posterior_draws` instead)."""
    if logvar is None:
        return mean
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)


def sampled_posterior(model) -> bool:
    """Whether `model`'s posterior is a categorical distribution that is no point mass (a dVAE's):
    drawn by re-encoding the images (`posterior_draws`), as (mean, logvar) cannot carry it."""
    return model.latents == "categorical" and not model.point_mass


class SampledPosterior(NamedTuple):
    """A posterior only the encoder keeps (`sampled_posterior`), where stage 2 reads (mean, logvar):
    mode() the argmax codes, draw(key) one c ~ q(c|x) per image; each re-encodes the images."""

    mode: Callable[[], jax.Array]
    draw: Callable[[jax.Array], jax.Array]


@functools.partial(jax.jit, static_argnums=0)
def _draw_rows(graphdef, params, x, keys):
    model = nnx.merge(graphdef, params)
    return jax.vmap(lambda key, image: model.sample_posterior(key, image[None])[0])(keys, x)


def posterior_draws(model, x, key, rows=None, batch_size: int = 1000):
    """One draw c ~ q(c|x) (`model.sample_posterior`) per prepared image of x, re-encoded in
    batches under jit: image i draws with fold_in(key, rows[i]) (default rows: 0, 1, ...), so a
    draw depends on its row, not on the batching or on which process holds the image."""
    graphdef, params = nnx.split(model)
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.asarray(rows, jnp.uint32))
    outs = [_draw_rows(graphdef, params, x[i : i + batch_size], keys[i : i + batch_size])
            for i in range(0, len(x), batch_size)]
    return jnp.concatenate(outs)


@functools.partial(jax.jit, static_argnums=0)
def _sum_log_prob(graphdef, state, z):
    return jnp.sum(nnx.merge(graphdef, state).log_prob(z))


def latent_nll(prior, z, batch_size: int = 1000) -> float:
    """Mean -log p(z) over latents z (nats per example), in batches under jit (compiled once
    per prior structure and batch shape: a fit evaluates every epoch without recompiling)."""
    graphdef, state = nnx.split(prior)
    total = sum(_sum_log_prob(graphdef, state, z[i : i + batch_size]) for i in range(0, len(z), batch_size))
    return -float(total) / len(z)  # one host fetch


class EvalData:
    """The fixed evaluation view of `dataset` for the run configured by `config`."""

    def __init__(self, config, dataset: input_pipeline.Dataset):
        self.config = config
        self.dataset = dataset
        self.binarize = bool(config.data.binarize)
        self._images = {}

    def seed(self, name: str) -> int:
        return rng.seed(self.config.seed, name)

    def key(self, name: str):
        return rng.key(self.config.seed, name)

    @property
    def elbo_key(self):
        return rng.key(self.config.seed, "elbo_noise")

    def images(self, split: str, limit: int | None = None) -> np.ndarray:
        """The split's images as evaluation sees them: floats in [0, 1], binarized once by the
        split's seed (the training split by the stream 'train_latents'); the first `limit` only
        if given (binarized as a set of that size)."""
        if (split, limit) not in self._images:
            seed = self.seed("train_latents" if split == "train" else split)
            raw = self.dataset.split(split).images[:limit]
            shards = self.dataset.train_shards if split == "train" and limit is None else None
            self._images[split, limit] = input_pipeline.fixed_binarization(raw, seed, self.binarize, shards)
        return self._images[split, limit]

    def posteriors(self, model, split: str, limit: int | None = None):
        """(mean, logvar) of q(z|x) for the split's evaluation images."""
        return encode(model, self.images(split, limit))

    def latent_draws(self, model, split: str, key, posterior=None):
        """One draw z ~ q(z|x) per evaluation image of the split, from `key`: by `draw_latents`
        from (mean, logvar) (`posterior`, the split's when already encoded; a VQ-VAE's codes
        themselves), or for a dVAE's posterior by re-encoding the images (`posterior_draws`)."""
        if sampled_posterior(model):
            return posterior_draws(model, self.images(split), key)
        mean, logvar = self.posteriors(model, split) if posterior is None else posterior
        return draw_latents(key, mean, logvar)

    def heldout_latents(self, model):
        """One fixed draw z ~ q(z|x) per validation image: where priors' NLL is measured."""
        return self.latent_draws(model, "validation", self.key("heldout_draw"))

    def elbo(self, model, split: str) -> dict:
        """Stage 1's evaluation of `model` on the split (same images, binarization and key)."""
        graphdef, params = nnx.split(model)
        return evaluate(make_elbo_fn(graphdef, self.config), params, self.images(split), self.elbo_key,
                        self.config.train.eval_batch_size, bits_per_dim=not self.binarize)
