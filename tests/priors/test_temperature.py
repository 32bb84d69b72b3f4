"""Sampling temperature, one meaning per prior family (`priors.Prior.sample`): T = 1 draws
exactly the samples drawn without a temperature, and T < 1 narrows every family's draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import priors
from configs import base
from priors.vamp import VampPrior
from vae.evaluation import sampling
from vae.models import mlp

N = 400


def smoke_prior(name, shape, num_codes=None):
    section = base.apply_smoke(base.get_base_config()).prior
    return priors.build(name, shape, section, seed=1, num_codes=num_codes)


def peaked_code_prior(name):
    """A code prior whose untrained logits are far from uniform (else logits / T changes little)."""
    prior = smoke_prior(name, (3, 3), num_codes=6)
    prior.head.head_out.bias[...] = jnp.linspace(0.0, 3.0, 6)
    return prior


def vamp_prior():
    encoder = mlp.MLPEncoder((4, 4, 1), (8,), 2, rngs=nnx.Rngs(0))
    return VampPrior(encoder, (4, 4, 1), (2,), 3, rngs=nnx.Rngs(1))


CONTINUOUS = [("standard_normal", (3, 3, 2)), ("gmm", (6,)), ("pixelcnn", (3, 3, 2)), ("transformer", (3, 3, 2)),
              ("made", (6,)), ("realnvp", (6,))]


def draws(prior, temperature=None, key=0):
    """Samples through the report's path (temperature traced under jit), or, with temperature
    None, through a jitted call that passes no temperature at all, with the key the report's
    path gives its first (and here only) batch."""
    if temperature is None:
        graphdef, state = nnx.split(prior)
        batch_key = jax.random.fold_in(jax.random.key(key), 0)
        return np.asarray(jax.jit(lambda s: nnx.merge(graphdef, s).sample(batch_key, N))(state))
    return np.asarray(sampling.draw_samples(prior, jax.random.key(key), N, temperature))


def built(name, shape):
    if name == "vamp":
        return vamp_prior()
    if name.endswith("_codes"):
        return peaked_code_prior(name)
    return smoke_prior(name, shape)


@pytest.mark.parametrize("name, shape", [*CONTINUOUS, ("vamp", None), ("pixelcnn_codes", None),
                                         ("transformer_codes", None), ("uniform", (3, 3))])
def test_temperature_one_draws_exactly_the_default_samples(name, shape):
    prior = smoke_prior(name, shape, num_codes=6) if name == "uniform" else built(name, shape)
    np.testing.assert_array_equal(draws(prior, 1.0), draws(prior))


@pytest.mark.parametrize("name, shape", [*CONTINUOUS, ("vamp", None)])
def test_a_lower_temperature_narrows_continuous_samples(name, shape):
    """Total variance of the draws: N(0, T² I) and a flow's base noise scale it by about T²; a
    mixture's components, and each autoregressive conditional's logistics, narrow while their
    weights and means stay, so the variance falls, by less than T² where the means spread."""
    prior = built(name, shape)
    variance = {t: draws(prior, t).reshape(N, -1).var(axis=0).sum() for t in (0.5, 1.0)}
    assert variance[0.5] < 0.8 * variance[1.0], variance
    if name == "standard_normal":
        assert variance[0.5] == pytest.approx(0.25 * variance[1.0], rel=0.02)  # the same noise, times 0.5


def code_entropy(codes, num_codes=6):
    """Mean over positions of the entropy (nats) of the drawn codes' histogram."""
    flat = codes.reshape(len(codes), -1)
    entropies = []
    for position in flat.T:
        freq = np.bincount(position, minlength=num_codes) / len(position)
        freq = freq[freq > 0]
        entropies.append(-(freq * np.log(freq)).sum())
    return float(np.mean(entropies))


@pytest.mark.parametrize("name", ["pixelcnn_codes", "transformer_codes"])
def test_a_lower_temperature_sharpens_code_priors(name):
    """softmax(logits / T): at T < 1 each position's codes concentrate on the likelier ones."""
    prior = peaked_code_prior(name)
    entropy = {t: code_entropy(draws(prior, t)) for t in (0.5, 1.0, 2.0)}
    assert entropy[0.5] < entropy[1.0] - 0.2 < entropy[2.0] - 0.4, entropy


def test_uniform_codes_ignore_the_temperature():
    prior = smoke_prior("uniform", (3, 3), num_codes=6)
    np.testing.assert_array_equal(draws(prior, 0.5), draws(prior, 1.0))
