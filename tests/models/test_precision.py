"""High-dimensional Gaussian log-densities against a float64 direct sum: the GMM prior and the
aggregate posterior q(z) at D = 196 with posteriors as sharp as the encoder's logvar clip,
with default float32 matmuls and under TF32 (the float32 default on recent NVIDIA GPUs)."""

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import priors
from priors import gaussians
from vae.evaluation import analysis

D = 196
TOLERANCE = 0.01  # nats: the largest error at draws from the density itself
# Far from every component (N(0, I) draws against std-0.0025 posteriors) log-densities reach
# -2e7 nats, where float32's spacing is 2 nats: there the check is relative, at float32's
# resolution (what a threshold comparison such as the hole rate needs).
RELATIVE = 1e-6


def assert_close(got, expected, num_own):
    err = np.abs(np.asarray(got, np.float64) - expected)
    assert err[:num_own].max() < TOLERANCE, err[:num_own].max()
    relative = err[num_own:] / np.abs(expected[num_own:])
    assert np.all(relative < RELATIVE), relative.max()
PRECISIONS = ["default", "tensorfloat32"]


def float64_log_mixture(z, means, variances, log_weights):
    """log sum_k w_k N(z; mu_k, diag var_k), all in float64, row by row."""
    z, means, variances = (np.asarray(a, np.float64) for a in (z, means, variances))
    out = []
    for row in z:
        maha = np.sum((row - means) ** 2 / variances, axis=1)
        logp = -0.5 * (D * math.log(2 * math.pi) + np.sum(np.log(variances), 1) + maha) + log_weights
        top = logp.max()
        out.append(top + math.log(np.exp(logp - top).sum()))
    return np.asarray(out)


def posteriors(sigma, n=1500, seed=0):
    """n posteriors with means like encoded latents and stds around `sigma`."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, D)).astype(np.float32)
    logvars = (2 * np.log(sigma) + rng.uniform(-0.3, 0.3, size=(n, D))).astype(np.float32)
    return means, logvars


OWN = 150


def queries(means, logvars, seed=1):
    """OWN draws from the mixture itself (where q(z) is evaluated in practice), then 50 from N(0, I)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(means), 150)
    own = means[pick] + np.exp(0.5 * logvars[pick]) * rng.normal(size=(150, D)).astype(np.float32)
    return np.concatenate([own, rng.normal(size=(50, D)).astype(np.float32)])


def under(precision):
    return jax.default_matmul_precision(precision) if precision != "default" else contextlib.nullcontext()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("sigma", [0.0025, 0.01, 0.1])
def test_aggregate_posterior_log_density_matches_float64(sigma, precision):
    means, logvars = posteriors(sigma)
    z = queries(means, logvars)
    expected = float64_log_mixture(z, means, np.exp(logvars.astype(np.float64)), -math.log(len(means)))
    with under(precision):
        got = analysis.log_aggregate_posterior(z, means, logvars, chunk=512, z_chunk=100, desc=False)
    assert_close(got, expected, OWN)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_near_duplicate_sharp_posteriors(precision):
    """Pairs of almost identical std-0.0025 posteriors: several components share the top, so
    the mass outside it must not be taken by subtraction (float32 rounding of the total,
    scaled by the expansion's errors, once outweighed the exact top by 24 nats)."""
    rng = np.random.default_rng(4)
    means = (3 * rng.normal(size=(64, D))).astype(np.float32)
    means[1::2] = means[0::2] + (0.0005 * rng.normal(size=(32, D))).astype(np.float32)
    logvars = np.full((64, D), 2 * np.log(0.0025), np.float32)
    z = (means[0::2] + 0.0025 * rng.normal(size=(32, D))).astype(np.float32)
    expected = float64_log_mixture(z, means, np.exp(logvars.astype(np.float64)), -math.log(64))
    with under(precision):
        got = analysis.log_aggregate_posterior(z, means, logvars, chunk=16, z_chunk=32, desc=False)
    assert_close(got, expected, len(z))


def test_the_plain_expansion_would_fail_this_check():
    """The matmul expansion alone (what log_mixture refines) is off by far more than the
    tolerance at these scales: the check above can fail."""
    means, logvars = posteriors(0.0025)
    z = queries(means, logvars)
    expected = float64_log_mixture(z, means, np.exp(logvars.astype(np.float64)), -math.log(len(means)))
    plain = jax.nn.logsumexp(gaussians.diag_log_probs_expanded(jnp.asarray(z), means, logvars), axis=1)
    assert np.max(np.abs(np.asarray(plain) - math.log(len(means)) - expected)[:OWN]) > 100 * TOLERANCE


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("sigma", [0.0025, 0.01, 0.1])
def test_gmm_log_prob_matches_float64(covariance, sigma, precision):
    rng = np.random.default_rng(2)
    k = 20
    gmm = priors.GMM((D,), num_components=k, covariance=covariance, reg=0.0)
    means = rng.normal(size=(k, D)).astype(np.float32)
    stds = (sigma * np.exp(rng.uniform(-0.3, 0.3, size=(k, D)))).astype(np.float32)
    gmm.means[...] = jnp.asarray(means)
    log_weights = np.log(rng.dirichlet(np.ones(k))).astype(np.float32)
    gmm.log_weights[...] = jnp.asarray(log_weights)
    gmm.scale[...] = jnp.asarray(stds**2 if covariance == "diag" else np.stack([np.diag(s) for s in stds]))
    z = queries(means, 2 * np.log(stds))
    expected = float64_log_mixture(z, means, stds.astype(np.float64) ** 2, log_weights.astype(np.float64))
    with under(precision):
        got = jax.jit(gmm.log_prob)(jnp.asarray(z))
    assert_close(got, expected, OWN)


def test_gmm_full_covariance_with_correlations_matches_float64():
    rng = np.random.default_rng(3)
    k, sigma = 5, 0.01
    gmm = priors.GMM((D,), num_components=k, covariance="full", reg=0.0)
    means = rng.normal(size=(k, D))
    chols = np.stack([sigma * (np.eye(D) + np.tril(0.05 * rng.normal(size=(D, D)), -1)) for _ in range(k)])
    gmm.means[...] = jnp.asarray(means, jnp.float32)
    gmm.scale[...] = jnp.asarray(chols, jnp.float32)
    z = means[rng.integers(0, k, 100)] + np.einsum("nij,nj->ni", chols[rng.integers(0, k, 100)], rng.normal(size=(100, D)))
    expected = []
    for row in z:
        logp = []
        for mu, c in zip(means, chols):
            y = np.linalg.solve(c, row - mu)
            logp.append(-0.5 * (D * math.log(2 * math.pi) + 2 * np.sum(np.log(np.diag(c))) + y @ y) - math.log(k))
        expected.append(np.logaddexp.reduce(logp))
    got = jax.jit(gmm.log_prob)(jnp.asarray(z, jnp.float32))
    assert_close(got, np.asarray(expected), len(z))
