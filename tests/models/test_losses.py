import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from priors import standard_normal
from tests.conftest import mnist_config
from vae import models
from vae.data import input_pipeline
from vae.models import losses


def test_kl_of_identical_gaussians_is_zero():
    mean, logvar = jnp.zeros((3, 5)), jnp.zeros((3, 5))
    np.testing.assert_allclose(losses.kl_standard_normal(mean, logvar), 0.0, atol=1e-7)


def test_analytic_kl_matches_monte_carlo():
    key = jax.random.key(0)
    mean = jax.random.normal(key, (4, 6))
    logvar = 0.5 * jax.random.normal(jax.random.key(1), (4, 6))
    eps = jax.random.normal(jax.random.key(2), (20000, 4, 6))
    z = mean + jnp.exp(0.5 * logvar) * eps
    mc = jax.vmap(lambda z: losses.kl_monte_carlo(z, mean, logvar))(z).mean(0)
    np.testing.assert_allclose(mc, losses.kl_standard_normal(mean, logvar), atol=0.08)


@pytest.mark.parametrize("mean, log_scale", [(0.5, -3.0), (0.0, -5.0), (1.0, -1.0), (0.3, 1.0), (-0.2, -7.5)])
def test_discretized_logistic_sums_to_one_over_256_levels(mean, log_scale):
    x = (jnp.arange(256, dtype=jnp.float32) / 255.0).reshape(256, 1)
    logp = losses.discretized_logistic_log_prob(x, jnp.full_like(x, mean), jnp.full_like(x, log_scale))
    np.testing.assert_allclose(jnp.exp(logp).sum(), 1.0, atol=1e-4)


def test_bernoulli_log_prob_matches_direct_formula():
    x = jnp.array([[1.0, 0.0, 1.0]])
    logits = jnp.array([[0.3, -1.2, 2.0]])
    p = jax.nn.sigmoid(logits)
    direct = jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p))
    np.testing.assert_allclose(losses.bernoulli_log_prob(x, logits)[0], direct, rtol=1e-6)


@pytest.mark.slow
def test_iwae_is_above_elbo_and_grows_with_k(mnist_dir):

    config = mnist_config("mnist_mlp")
    model = models.create_vae(config)
    ds = input_pipeline.load_dataset(config.data)
    x = jnp.asarray(input_pipeline.fixed_binarization(ds.test.images[:64], 0, True))
    graphdef, params = nnx.split(model)

    @functools.partial(jax.jit, static_argnums=2)
    def bound(params, key, k):
        m = nnx.merge(graphdef, params)
        return losses.iwae_bound(m.encode, m.decode, m.likelihood, x, key, k=k, chunk=4)

    def elbo(params, key):
        m = nnx.merge(graphdef, params)
        mean, logvar, z, out = m(x, key)
        return losses.elbo(x, mean, logvar, z, out, m.likelihood)["elbo"]

    elbo_avg = np.mean([elbo(params, jax.random.key(i)).mean() for i in range(20)])
    by_k = {k: np.mean([bound(params, jax.random.key(i), k).mean() for i in range(5)]) for k in (1, 8, 64)}
    assert abs(by_k[1] - elbo_avg) < 1.0  # k=1 is the ELBO
    assert by_k[1] < by_k[8] < by_k[64]
    with pytest.raises(ValueError, match="multiple of the chunk"):
        losses.iwae_bound(model.encode, model.decode, model.likelihood, x, jax.random.key(0), k=10, chunk=4)


def test_iwae_under_several_priors_equals_each_alone(mnist_dir):
    """The report scores every prior from one set of draws: each row must be what that prior
    alone gives with the same key (the decoder runs once, not once per prior)."""
    config = mnist_config("mnist_mlp")
    model = models.create_vae(config)
    ds = input_pipeline.load_dataset(config.data)
    x = jnp.asarray(input_pipeline.fixed_binarization(ds.test.images[:16], 0, True))
    wide = lambda z: losses.gaussian_log_prob(z, jnp.zeros_like(z), jnp.full_like(z, 1.0))
    key = jax.random.key(3)
    together = model.iwae(x, key, k=20, log_prior=(standard_normal.log_prob, wide))
    for row, lp in enumerate((standard_normal.log_prob, wide)):
        alone = model.iwae(x, key, k=20, log_prior=lp)
        for t, a in zip(together, alone):
            np.testing.assert_allclose(t[row], a, rtol=1e-5)
    assert not np.allclose(together[0][0], together[0][1])  # the two priors do differ


def rgb_levels():
    """Every 8-bit RGB value, (256**3, 3) in [0, 1]."""
    v = jnp.arange(256) / 255.0
    return jnp.stack(jnp.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)


def mixture_pixel(key, log_scale):
    """Parameters of one pixel's 3-component mixture with coupled channels: logits, means
    0.5 ± 0.1, log-scales `log_scale` ± 0.5, coefficients tanh(raw) with raw ~ N(0, 0.3²):
    every conditional mean stays well inside [0, 1], where the end bins clip nothing."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return jnp.concatenate([jax.random.normal(k1, (3,)), 0.5 + 0.1 * jax.random.normal(k2, (9,)),
                            log_scale + 0.5 * jax.random.normal(k3, (9,)), 0.3 * jax.random.normal(k4, (9,))])


def pixel_log_probs(params):
    """log P of every RGB value under one pixel's parameters -> (256**3,)."""
    x = rgb_levels()
    return jax.jit(lambda x: losses.discretized_logistic_mixture_log_prob(
        x[:, None, None, :], jnp.broadcast_to(params, (x.shape[0], 1, 1, params.shape[0]))))(x)


@pytest.mark.slow
@pytest.mark.parametrize("log_scale", [-2.0, -6.0])  # broad, and sharper than a bin (the pdf fallback)
def test_discretized_logistic_mixture_sums_to_one_over_every_rgb_value(log_scale):
    """One pixel, 3 components with coupled channels: P summed over all 256^3 colours is 1."""
    log_p = pixel_log_probs(mixture_pixel(jax.random.key(0), log_scale))
    assert float(jnp.sum(jnp.exp(log_p))) == pytest.approx(1.0, abs=2e-3)


def test_logistic_mixture_decoder_mean_is_the_expected_colour():
    """decoder_mean of a coupled 3-component pixel equals sum_x x P(x) over every colour."""
    params = mixture_pixel(jax.random.key(2), -3.5)
    p = jnp.exp(pixel_log_probs(params))
    expected = jnp.sum(p[:, None] * rgb_levels(), axis=0)
    np.testing.assert_allclose(losses.decoder_mean("logistic_mixture", params[None, None, None])[0, 0, 0],
                               expected, atol=2e-3)


def test_logistic_mixture_of_one_uncoupled_component_is_the_per_channel_logistic():
    key_m, key_s, key_x = jax.random.split(jax.random.key(1), 3)
    mean = jax.random.uniform(key_m, (2, 4, 4, 3))
    log_scale = jax.random.uniform(key_s, (2, 4, 4, 3), minval=-4.0, maxval=-1.0)
    x = jnp.round(jax.random.uniform(key_x, (2, 4, 4, 3)) * 255) / 255
    params = jnp.concatenate([jnp.zeros((2, 4, 4, 1)), mean, log_scale, jnp.zeros((2, 4, 4, 3))], -1)
    np.testing.assert_allclose(losses.discretized_logistic_mixture_log_prob(x, params),
                               losses.discretized_logistic_log_prob(x, mean, log_scale), rtol=1e-5)
    # decoder_mean: the means themselves (clipped to [0, 1])
    np.testing.assert_allclose(losses.decoder_mean("logistic_mixture", params), mean, atol=1e-6)


def test_the_likelihood_follows_the_data_and_refuses_a_mismatch():
    from vae.errors import ConfigError

    config = mnist_config()
    assert models.likelihood_from_config(config, 1) == "bernoulli"
    config.data.binarize = False
    assert (models.likelihood_from_config(config, 1), models.likelihood_from_config(config, 3)) == (
        "logistic", "logistic_mixture")
    for value, channels in (("bernoulli", 1), ("logistic_mixture", 1), ("gaussian", 3)):
        config.vae.likelihood = value
        with pytest.raises(ConfigError, match="config.vae.likelihood"):
            models.likelihood_from_config(config, channels)


def test_discretized_logistic_sums_to_what_its_docstring_states():
    """At the log-scale clamp (-7; -9 is clamped to it) the pdf fallback and float32 rounding move
    the sum of the 256 bins off 1, by at most what the docstring states, over a sweep of means."""
    doc = " ".join(losses.discretized_logistic_log_prob.__doc__.split())
    stated = re.search(r"at the clamp to 1 ± ([0-9.e-]+), for log-scales from -5 up to 1 ± ([0-9.e-]+)", doc)
    assert stated, "the docstring states no bound on the sum of the 256 probabilities"
    bounds = {-7.0: float(stated[1]), -9.0: float(stated[1]), -5.0: float(stated[2]), -1.0: float(stated[2])}
    x = (jnp.arange(256, dtype=jnp.float32) / 255.0).reshape(256, 1)
    total = jax.jit(jax.vmap(lambda m, s: jnp.exp(losses.discretized_logistic_log_prob(
        x, jnp.full_like(x, m), jnp.full_like(x, s))).sum()))
    means = jnp.linspace(-0.3, 1.3, 4001)
    errors = {s: np.abs(np.asarray(total(means, jnp.full_like(means, s)), np.float64) - 1.0).max() for s in bounds}
    assert all(errors[s] <= bounds[s] for s in bounds), (errors, bounds)
    assert errors[-7.0] > 1e-5  # the clamp's deviation is real: the sum is not 1 to float32's 1e-6
