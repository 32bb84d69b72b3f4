"""The two-level code prior of VQ-VAE-2 (`priors.two_level`): p(top) p(bottom | top) over the
flat (L,) code sequence of `priors.code_levels`, on tiny maps with its randomly initialized
(non-zero) parameters: causal over the bottom's own positions, conditioned on the top codes,
normalized, and sampled top first."""

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import priors
from priors import code_levels, registry
from tests.priors.test_priors import dependence, jitter

NAME = "pixelcnn_codes_2level"
LEVELS = (("top", (2, 2)), ("bottom", (4, 4)))


@functools.cache  # ~10 s to build; the tests only read it
def two_level(levels=LEVELS, k=5, seed=0):
    """The smoke-sized prior with every parameter drawn at random, biases included: at its zero
    biases the first position of a fresh PixelCNN has equal logits, whatever it is given."""
    section = registry.get(NAME).config | registry.get(NAME).smoke
    length = code_levels.length(levels)
    prior = priors.build(NAME, (length,), ml_collections.ConfigDict({NAME: section}), seed=seed, num_codes=k,
                         levels=levels)
    return jitter(prior, 0.3, seed=seed + 100)


@pytest.mark.slow  # 10-15 s on the 2-core CPU, most of it building two_level() (shared with the next tests)
def test_the_bottom_prior_is_causal_over_its_own_positions():
    """A perturbation check (`dependence`): changing the bottom code at p changes the bottom
    logits at every later position and at none before or at p (raster order), the top codes fixed."""
    k, positions = 5, 16
    prior = two_level(k=k)
    top = jax.random.randint(jax.random.key(1), (1, 2, 2), 0, k)
    bottom = jax.random.randint(jax.random.key(0), (positions,), 0, k)
    logits = lambda b: prior.bottom.logits(b.reshape(-1, 4, 4), jnp.repeat(top, b.shape[0], axis=0)).reshape(
        b.shape[0], positions, k)
    moved = dependence(logits, bottom, lambda b: (b + 1) % k)  # [q, p]: changing p moved q
    np.testing.assert_array_equal(moved, np.tril(np.ones((positions, positions), bool), k=-1))


def test_the_bottom_prior_reads_the_top_codes():
    """Changing one top code changes the bottom logits, at the first bottom position too (which
    sees no bottom code: the conditioning reaches a position at the position itself)."""
    k = 5
    prior = two_level(k=k)
    bottom = jax.random.randint(jax.random.key(0), (4, 4, 4), 0, k)
    top = jax.random.randint(jax.random.key(1), (4, 2, 2), 0, k)
    logits = prior.bottom.logits(bottom, top)
    for i, j in itertools.product(range(2), range(2)):
        changed = top.at[:, i, j].set((top[:, i, j] + 1) % k)
        moved = jnp.max(jnp.abs(prior.bottom.logits(bottom, changed) - logits), axis=-1)  # (B, 4, 4)
        assert float(jnp.min(moved[:, 2 * i, 2 * j])) > 1e-6, (i, j)  # the bottom position under it


def test_log_prob_is_the_top_plus_the_bottom_given_the_top():
    k = 5
    prior = two_level(k=k)
    codes = jax.random.randint(jax.random.key(0), (3, 20), 0, k)
    maps = code_levels.split(codes, LEVELS)
    expected = prior.top.log_prob(maps["top"]) + prior.bottom.log_prob(maps["bottom"], maps["top"])
    np.testing.assert_allclose(prior.log_prob(codes), expected, rtol=1e-6)
    log_top, log_bottom = prior.log_prob_levels(codes)
    np.testing.assert_allclose(log_top + log_bottom, expected, rtol=1e-6)


def test_the_prior_sums_to_one_over_every_code_sequence():
    levels = (("top", (1, 1)), ("bottom", (2, 2)))  # 5 codes of K = 3: 243 sequences
    prior = two_level(levels, k=3)
    every = jnp.array(list(itertools.product(range(3), repeat=5)), jnp.int32)
    np.testing.assert_allclose(float(jax.nn.logsumexp(prior.log_prob(every))), 0.0, atol=1e-5)


def test_sampling_draws_the_top_then_the_bottom_given_it():
    k = 5
    prior = two_level(k=k, seed=3)
    draw = jax.jit(lambda key, t: prior.sample(key, 6, mode="naive", temperature=t))  # the fast one: below
    codes = draw(jax.random.key(0), 1.0)
    assert codes.shape == (6, 20) and codes.dtype == jnp.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < k
    # temperature -> 0: the argmax at every position, whatever the key; each level's code is the
    # argmax of its logits given what was drawn before it: the top codes for the bottom map
    cold = draw(jax.random.key(0), 1e-4)
    np.testing.assert_array_equal(cold, draw(jax.random.key(1), 1e-4))
    maps = code_levels.split(cold, LEVELS)
    np.testing.assert_array_equal(jnp.argmax(prior.top.logits(maps["top"]), -1), maps["top"])
    np.testing.assert_array_equal(jnp.argmax(prior.bottom.logits(maps["bottom"], maps["top"]), -1), maps["bottom"])


def test_fast_conditional_sampler_draws_what_the_naive_one_does():
    prior = two_level(k=6, seed=1)
    key = jax.random.key(7)
    naive = jax.jit(lambda key: prior.sample(key, 4, mode="naive"))(key)
    fast = jax.jit(lambda key: prior.sample(key, 4, mode="fast"))(key)
    np.testing.assert_array_equal(naive, fast)


def test_the_registry_offers_it_for_code_levels_only():
    assert NAME in registry.names(latents="code_levels")
    assert NAME not in registry.names(latents="categorical")  # never offered a one-level VQ-VAE's map
    assert set(registry.names_for_levels()) == {"uniform", "transformer_codes", NAME}  # not pixelcnn_codes
    assert priors.BASELINES["code_levels"] == "uniform"
    section = ml_collections.ConfigDict({NAME: registry.get(NAME).config})
    with pytest.raises(ValueError, match="needs levels"):
        priors.build(NAME, (20,), section, num_codes=5)
    with pytest.raises(ValueError, match="hold 20 codes, but the latent shape is \\(21,\\)"):
        priors.build(NAME, (21,), section, num_codes=5, levels=LEVELS)
    # the flat sequence: the code transformer models it as a joint prior too
    transformer = priors.build("transformer_codes", (20,), ml_collections.ConfigDict(
        {"transformer_codes": registry.get("transformer_codes").smoke | {"dropout": 0.0}}), num_codes=5)
    assert transformer.sample(jax.random.key(0), 2).shape == (2, 20)
