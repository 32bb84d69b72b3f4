import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import mnist_config
from vae import input_pipeline, losses, models


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
