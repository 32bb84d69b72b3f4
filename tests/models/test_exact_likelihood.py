"""The IWAE bound under each prior against the exact log p(x), computed by quadrature.

With a 2-D latent, log p(x) = log ∫ p(x|z) p(z) dz is a log-sum-exp over a fine grid on
[-8, 8]^2 of log p(x|z) + log p(z) + log(cell area). For N(0, I), the GMM (diagonal and full
covariance) and MADE fitted to a trained 2-D MLP VAE, on 16 binarized test digits, the IWAE
bound (mean over keys) must stay below log p(x) + 0.05, not decrease with k, and be within 0.5
nats of it at k=1000 for every digit whose q(z|x) covers its exact posterior (>= 99% of the
posterior mass within 6 sd of q's mean; 13 of the 16 here). The other digits show the
amortization gap: q sits away from the posterior's mass (one digit: 13 sd away, 0% coverage,
23 nats), which no number of draws from q recovers.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import priors
from priors import gmm as gmm_lib
from tests.conftest import mnist_config
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.evaluation import evaluation_data
from vae.models import losses
from vae.train import stages

# Keys averaged per k. The mean of n single-sample bounds scatters by about sqrt(2 gap / n)
# around its expectation (gap = log p(x) - ELBO, for near-Gaussian weights): at k=1 with 20
# keys that is the size of the 0.05-nat tolerance itself, so small k get more keys.
KEYS = {1: 400, 10: 100, 100: 20, 1000: 20}
KS = tuple(KEYS)
GRID = 801  # points per axis on [-8, 8]: cells of 0.02
EPOCHS = 20


@pytest.fixture(scope="module")
def two_d_run(mnist_dir, tmp_path_factory):
    """A 2-D MLP VAE (the full config, offline MNIST's 7k digits) with its GMM (diag), MADE and a
    full-covariance GMM. An encoder trained this long covers each digit's posterior well enough
    for IWAE to converge; the 2k-digit smoke encoder misses modes of ambiguous digits."""
    config = mnist_config("mnist_mlp", preset="")
    config.vae.mlp.latent_dim = 2
    config.train.num_epochs = EPOCHS
    config.prior.num_epochs = 10
    config.prior.made.hidden = (64, 64)
    config.prior.gmm.num_components = 10
    config.prior.name = "gmm,made"
    workdir = tmp_path_factory.mktemp("two_d") / "run"
    stages.train_and_evaluate(config, str(workdir))
    wd = workdir_lib.open(workdir)
    vae, step, _ = wd.restore_vae()
    fitted_to = workdir_lib.vae_fingerprint(vae, step)
    eval_data = evaluation_data.EvalData(config, input_pipeline.load_dataset(config.data))
    prior_set = {name: wd.load_prior(name, (2,), fitted_to) for name in ("standard_normal", "gmm", "made")}
    mean, logvar = eval_data.posteriors(vae, "train")
    full = priors.GMM((2,), num_components=8, covariance="full", reg=1e-4)
    prior_set["gmm_full"], _ = gmm_lib.fit(full, jax.random.key(0), evaluation_data.draw_latents(jax.random.key(1), mean, logvar), 100)
    return vae, prior_set, jnp.asarray(eval_data.images("test", limit=16))


@pytest.fixture(scope="module")
def grid_log_lik(two_d_run):
    """log p(x|z) of each test digit at every grid point, (GRID rows, digits, GRID): the
    decoder's part of the quadrature, the same under every prior (rows under lax.map)."""
    vae, _, x = two_d_run
    g = jnp.linspace(-8.0, 8.0, GRID)
    flat_x = x.reshape(len(x), -1)
    graphdef, state = nnx.split(vae)

    @jax.jit
    def row(y, state):
        logits = nnx.merge(graphdef, state).decode(grid_row(g, y)).reshape(GRID, -1)
        return (jnp.matmul(flat_x, logits.T, precision=jax.lax.Precision.HIGHEST)
                - jnp.sum(jax.nn.softplus(logits), axis=1)[None])  # = losses.bernoulli_log_prob

    return jax.lax.map(lambda y: row(y, state), g)


def grid_row(g, y):
    return jnp.stack([g, jnp.full_like(g, y)], axis=1)  # (GRID, 2): the grid's row at height y


def quadrature(vae, prior, x, log_lik):
    """(log p(x), coverage) per digit by quadrature over the grid, from the decoder's grid_log_lik.
    coverage: the share of the exact posterior p(z|x) within 6 sd of q(z|x)'s mean."""
    g = jnp.linspace(-8.0, 8.0, GRID)
    pg, ps = nnx.split(prior)
    q_mean, q_logvar = vae.encode(x)

    @jax.jit
    def row(y, log_lik_row, ps):
        z = grid_row(g, y)
        log_joint = log_lik_row + nnx.merge(pg, ps).log_prob(z)[None]  # (digits, GRID)
        maha = jnp.sum((z[None] - q_mean[:, None]) ** 2 * jnp.exp(-q_logvar)[:, None], axis=-1)
        return jax.nn.logsumexp(log_joint, axis=1), jax.nn.logsumexp(jnp.where(maha < 36.0, log_joint, -jnp.inf), axis=1)

    rows, inside = jax.lax.map(lambda args: row(*args, ps), (g, log_lik))  # (GRID, digits) each
    total = jax.nn.logsumexp(rows, axis=0)
    coverage = jnp.exp(jax.nn.logsumexp(inside, axis=0) - total)
    return np.asarray(total + 2 * math.log(float(g[1] - g[0]))), np.asarray(coverage)


def iwae(vae, prior, x, k):
    """The IWAE bound per digit, mean over KEYS[k] keys."""
    graphdef, state = nnx.split(vae)
    pg, ps = nnx.split(prior)

    @jax.jit
    def bound(state, ps, key):
        v, p = nnx.merge(graphdef, state), nnx.merge(pg, ps)
        return losses.iwae_bound(v.encode, v.decode, v.likelihood, x, key, k=k, log_prior=p.log_prob,
                                 chunk=min(k, 100))

    return np.mean([np.asarray(bound(state, ps, jax.random.key(i))) for i in range(KEYS[k])], axis=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["standard_normal", "gmm", "gmm_full", "made"])
def test_iwae_is_a_bound_that_reaches_the_exact_likelihood(two_d_run, grid_log_lik, name):
    vae, prior_set, x = two_d_run
    prior = prior_set[name]
    log_px, coverage = quadrature(vae, prior, x, grid_log_lik)
    bounds = {k: iwae(vae, prior, x, k) for k in KS}
    for k in KS:
        assert np.all(bounds[k] <= log_px + 0.05), (k, np.max(bounds[k] - log_px))
    means = [float(bounds[k].mean()) for k in KS]
    assert all(b >= a - 1e-3 for a, b in zip(means, means[1:])), means  # does not decrease with k
    # IWAE reaches log p(x) where q(z|x) covers the posterior. For a digit whose encoder put q
    # away from the posterior's mass (the amortization gap), no k of draws from q finds it.
    covered = coverage >= 0.99
    assert covered.sum() >= 12, coverage
    gap = np.abs(bounds[1000] - log_px)
    assert np.all(gap[covered] < 0.5), (gap, coverage)
