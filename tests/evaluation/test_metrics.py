import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from priors import standard_normal
from vae.data import mnist
from vae.evaluation import analysis, metrics
from vae.models import losses


@pytest.fixture(scope="module")
def mnist_pixels(mnist_dir):
    _, test, _ = mnist.load_idx_dir(str(mnist_dir))
    # 64 random projections of real digits: a feature space we need no training for
    proj = np.random.default_rng(0).normal(size=(784, 64)) / 28.0
    x = test.images.reshape(len(test), -1) / 255.0
    return x, proj


def test_frechet_distance_on_real_images(mnist_pixels):
    x, proj = mnist_pixels
    rng = np.random.default_rng(1)
    half_a, half_b = x[:3000] @ proj, x[3000:6000] @ proj
    same = metrics.frechet_distance(half_a, half_b)
    noisy = [metrics.frechet_distance(half_a, np.clip(x[3000:6000] + s * rng.normal(size=(3000, 784)), 0, 1) @ proj)
             for s in (0.3, 0.6, 1.0)]
    assert same < 0.1 * noisy[0]  # halves of one real set are ~0 relative to noisy images
    assert noisy[0] < noisy[1] < noisy[2]  # monotone in the noise
    assert metrics.frechet_distance(half_b, half_a) == pytest.approx(same, rel=1e-6)


def test_frechet_distance_matches_direct_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(300, 5)) * 1.5 + 0.3
    ma, mb, ca, cb = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    direct = np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real)
    assert metrics.frechet_distance(a, b) == pytest.approx(direct, rel=1e-9)


def test_precision_recall_with_known_overlap():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(1000, 8)).astype(np.float32)
    same = metrics.precision_recall(real, real.copy())
    assert same["precision"] > 0.99 and same["recall"] > 0.99
    far = metrics.precision_recall(real, real + 100.0)
    assert far["precision"] < 0.01 and far["recall"] < 0.01
    # a tight subset of the real data: faithful samples, poor coverage
    subset = real[np.linalg.norm(real, axis=1) < 2.0][:300]
    sub = metrics.precision_recall(real, subset)
    assert sub["precision"] > 0.95 and sub["recall"] < 0.5


def test_manifold_radii_match_a_full_sort_with_duplicates():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    x[100:110] = x[0]  # ties: the k-th smallest counts each duplicate once
    d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    for k in (1, 3, 5):
        np.testing.assert_allclose(metrics.manifold_radii(x, k, chunk=128), np.sort(d, axis=1)[:, k], rtol=1e-4, atol=1e-4)
    fake = x + rng.normal(size=x.shape).astype(np.float32) * 0.3
    assert metrics.precision_recall(x, fake, real_radii=metrics.manifold_radii(x)) == metrics.precision_recall(x, fake)


def test_label_stats():
    uniform = metrics.label_stats(np.arange(1000) % 10)
    assert uniform["label_entropy"] == pytest.approx(math.log(10))
    collapsed = metrics.label_stats(np.zeros(100, int))
    assert collapsed["label_entropy"] == 0.0 and collapsed["class_frequencies"][0] == 1.0


def test_elbo_surgery_identical_posteriors_have_zero_mutual_info():
    # every q(z|x) = N(m, s^2): q(z) is that Gaussian, I = 0, marginal KL is analytic
    n, d = 500, 3
    means = jnp.full((n, d), 0.7)
    logvars = jnp.full((n, d), math.log(0.3))
    r = analysis.elbo_surgery(jax.random.key(0), means, logvars, standard_normal.log_prob, num_samples=20000)
    exact = float(losses.kl_standard_normal(means[:1], logvars[:1])[0])
    assert abs(r["mutual_info"]) < 1e-4
    assert r["marginal_kl"] == pytest.approx(exact, abs=0.03)


def test_elbo_surgery_separated_posteriors_have_mutual_info_log_n():
    # posteriors centred on a grid, far apart relative to their width: I(x; z) = log N exactly
    g = jnp.arange(-3.0, 3.01, 1.0)
    means = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # 49 components
    logvars = jnp.full_like(means, math.log(0.01**2))
    r = analysis.elbo_surgery(jax.random.key(1), means, logvars, standard_normal.log_prob, num_samples=20000)
    # (float32: the expanded quadratic form loses ~1e-3 nats at precision 1e4)
    assert r["mutual_info"] == pytest.approx(math.log(49), abs=0.01)
    average_kl = float(losses.kl_standard_normal(means, logvars).mean())
    # the split is exact: average KL = I + marginal KL, within Monte-Carlo error
    assert r["mutual_info"] + r["marginal_kl"] == pytest.approx(average_kl, abs=0.1)


def test_hole_rate_calibration_and_detection():
    # q(z): two tight clusters; prior samples from the gap between them are all in a hole
    key = jax.random.key(2)
    centers = jnp.array([[-3.0, 0.0], [3.0, 0.0]])
    means = centers[jnp.arange(2000) % 2] + 0.3 * jax.random.normal(key, (2000, 2))
    logvars = jnp.full_like(means, math.log(0.2**2))
    train, held = (means[:1500], logvars[:1500]), (means[1500:], logvars[1500:])
    threshold = analysis.hole_threshold(analysis.heldout_log_q(jax.random.key(3), *held, *train))
    fresh, _ = analysis.sample_aggregate_posterior(jax.random.key(4), *held, 10000)
    assert 0.003 < analysis.prior_hole_rate(fresh, *train, threshold)["prior_hole_rate"] < 0.03
    gap = jnp.stack([jnp.zeros(1000), jax.random.normal(key, (1000,))], 1)
    in_gap = analysis.prior_hole_rate(gap, *train, threshold)
    assert in_gap["prior_hole_rate"] > 0.95
    assert in_gap["median_log_q"] < analysis.prior_hole_rate(fresh, *train, threshold)["median_log_q"]


def test_log_aggregate_posterior_matches_direct_mixture():
    key = jax.random.key(5)
    means = jax.random.normal(key, (300, 4))
    logvars = 0.3 * jax.random.normal(jax.random.key(6), (300, 4))
    z = jax.random.normal(jax.random.key(7), (50, 4))
    direct = jax.nn.logsumexp(jax.vmap(lambda zi: losses.gaussian_log_prob(jnp.broadcast_to(zi, means.shape), means, logvars))(z), axis=1) - math.log(300)
    fast = analysis.log_aggregate_posterior(z, means, logvars, chunk=64, z_chunk=16, desc=False)
    np.testing.assert_allclose(fast, direct, rtol=1e-4, atol=1e-3)


def test_frechet_distance_of_a_singular_covariance_product_retries_with_eps_and_warns(caplog):
    # 4 samples of 3 binary features, the first two equal in `a`: sqrtm finds no root of this
    # singular product (all NaN), so the distance was NaN.
    a = np.array([[1.0, 1, 1], [0, 0, 1], [0, 0, 1], [1, 1, 1]])
    b = np.array([[1.0, 0, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]])
    ca, cb = np.cov(a.T), np.cov(b.T)
    assert not np.isfinite(scipy.linalg.sqrtm(ca @ cb)).all()
    with caplog.at_level("WARNING", logger="vae.evaluation.metrics"):
        fd = metrics.frechet_distance(a, b)
    assert any("adding 1e-06 * I" in r.getMessage() for r in caplog.records), caplog.text
    # Exact: Tr (S_a S_b)^(1/2) = Tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), a root of a PSD matrix. eps * I
    # moves the trace of the root by about sqrt(eps) per singular direction: 1.7e-3 here.
    half = scipy.linalg.sqrtm(ca).real
    exact = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
             - 2 * np.trace(scipy.linalg.sqrtm(half @ cb @ half).real))
    assert np.isfinite(fd) and fd == pytest.approx(exact, abs=5e-3)


def test_frechet_distance_refuses_a_large_imaginary_component(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    sqrtm = scipy.linalg.sqrtm
    # A root whose diagonal is 0.01i off: not the rounding noise .real may drop.
    monkeypatch.setattr(metrics.scipy.linalg, "sqrtm", lambda m: sqrtm(m) + 0.01j * np.eye(len(m)))
    with pytest.raises(ValueError, match="imaginary diagonal component of 0.01"):
        metrics.frechet_distance(a, b)
