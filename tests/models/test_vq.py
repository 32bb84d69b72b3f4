"""The VQ-VAE (`vae.models.vq`) and the categorical priors over its code maps.

Unit tests of the quantizer (straight-through gradient, EMA to the cluster means, dead-code
restarts) and of the code priors (causal, normalized over every map, the fast samplers
draw what the naive ones do); then the smoke VQ-VAE on real MNIST through stage 2, the
report and `vae.load`.
"""

import itertools
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import priors
from tests.conftest import mnist_config, read_metrics
from tests.priors.test_priors import dependence
from vae.models import vq

CODE_PRIORS = ("pixelcnn_codes", "transformer_codes")


def code_prior(name, shape=(4, 4), k=5, seed=0):
    section = priors.registry.get(name).config | priors.registry.get(name).smoke
    import ml_collections

    return priors.build(name, shape, ml_collections.ConfigDict({name: section}), seed=seed, num_codes=k)


def test_straight_through_gradient_is_the_identity_on_the_encoder_output():
    q = vq.VectorQuantizer(8, 3, rngs=nnx.Rngs(0))
    z_e = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    z_q, codes, _ = q(z_e)
    np.testing.assert_allclose(z_q, q.lookup(codes), atol=1e-6)  # forward: the quantized vectors
    cotangent = jax.random.normal(jax.random.key(2), z_e.shape)
    _, vjp = jax.vjp(lambda z: q(z)[0], z_e)
    np.testing.assert_array_equal(vjp(cotangent)[0], cotangent)  # backward: the identity
    # the commitment pulls z_e toward its code and nothing else: d/dz_e ||z_e - sg(z_q)||^2 = 2 (z_e - z_q)
    grad = jax.grad(lambda z: jnp.sum(q(z)[2]))(z_e)
    np.testing.assert_allclose(grad, 2 * (z_e - q.lookup(codes)), atol=1e-5)


def _clusters(key, means, n_per):
    noise = 0.05 * jax.random.normal(key, (len(means), n_per, means.shape[1]))
    return (means[:, None] + noise).reshape(-1, means.shape[1])


def test_ema_moves_the_codebook_to_the_cluster_means():
    means = jnp.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -3.0]])
    q = vq.VectorQuantizer(3, 2, decay=0.9, rngs=nnx.Rngs(0))
    q.embedding[...] = means + jnp.array([[0.6, -0.5], [-0.4, 0.7], [0.5, 0.5]])  # each nearest its own cluster
    q.cluster_size[...] = jnp.ones(3)
    for step in range(200):
        x = _clusters(jax.random.key(step), means, 64)
        q.update(x, q.codes(x), jax.random.key(0))
    data = _clusters(jax.random.key(0), means, 64)  # not the exact means: the batch means, to sampling noise
    np.testing.assert_allclose(q.embedding[...], means, atol=0.02)
    assert np.all(np.asarray(q.codes(data)).reshape(3, -1) == np.arange(3)[:, None])


def test_perplexity_counts_codes_in_effective_use():
    assert float(vq.perplexity(jnp.array([5.0, 5.0, 5.0, 5.0, 0.0]))) == pytest.approx(4.0)
    assert float(vq.perplexity(jnp.array([7.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert vq.codebook_usage(jnp.array([[0, 0], [2, 2]]), 4) == {"perplexity": pytest.approx(2.0), "codes_used": 2}


def test_a_dead_code_is_restarted_at_an_encoder_output():
    means = jnp.array([[2.0, 0.0], [-2.0, 1.0]])
    q = vq.VectorQuantizer(3, 2, decay=0.5, dead_threshold=0.01, rngs=nnx.Rngs(0))
    q.embedding[...] = jnp.array([[2.0, 0.0], [-2.0, 1.0], [50.0, 50.0]])  # code 2 is never nearest
    q.cluster_size[...] = jnp.array([1.0, 1.0, 1.0])
    x = _clusters(jax.random.key(0), means, 32)
    restarted_at = None
    for step in range(20):  # its usage halves every step: below 0.01 after 7
        dead = np.asarray(q.update(x, q.codes(x), jax.random.key(step))[0])
        assert not dead[:2].any()
        if dead[2]:
            restarted_at = step
            break
    assert restarted_at == 6
    row = np.asarray(q.embedding[...][2])
    assert np.any(np.all(np.isclose(np.asarray(x), row), axis=1))  # an actual encoder output of the batch
    assert float(q.cluster_size[...][2]) == 1.0


def test_first_step_moves_every_code_to_the_data():
    """Every code starts unused: after one step the used ones sit at their assignments' mean,
    the rest restarted at encoder outputs, so the whole codebook is among the data."""
    q = vq.VectorQuantizer(16, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (200, 3)) + 10.0  # far from the N(0, 1) initial codebook
    dead, counts = q.update(x, q.codes(x), jax.random.key(0))
    dead = np.asarray(dead)
    assert int(counts.sum()) == len(x)
    assert dead.sum() >= 12  # all but the few codes nearest the data
    assert np.all(np.linalg.norm(np.asarray(q.embedding[...]) - 10.0, axis=1) < 4.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", CODE_PRIORS)
def test_code_prior_is_causal(name):
    """A perturbation check (`dependence`): changing the code at position p changes the logits
    at every later position and at none before or at p (raster order)."""
    hgt, wid, k = 4, 4, 5
    prior = code_prior(name, (hgt, wid), k)
    positions = hgt * wid
    codes = jax.random.randint(jax.random.key(0), (positions,), 0, k)
    logits = lambda c: prior.logits(c.reshape(-1, hgt, wid)).reshape(c.shape[0], positions, k)
    moved = dependence(logits, codes, lambda c: (c + 1) % k)  # [q, p]: changing p moved q
    np.testing.assert_array_equal(moved, np.tril(np.ones((positions, positions), bool), k=-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", (*CODE_PRIORS, "uniform"))
def test_code_prior_sums_to_one_over_every_code_map(name):
    k = 3
    prior = code_prior(name, (2, 2), k) if name != "uniform" else priors.build("uniform", (2, 2), num_codes=k)
    maps = jnp.array(list(itertools.product(range(k), repeat=4)), jnp.int32).reshape(-1, 2, 2)  # all 81
    total = jax.nn.logsumexp(prior.log_prob(maps))
    np.testing.assert_allclose(float(total), 0.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name,fast", [("pixelcnn_codes", "fast"), ("transformer_codes", "cached")])
def test_fast_code_sampler_draws_what_the_naive_one_does(name, fast):
    prior = code_prior(name, (4, 3), k=6, seed=1)
    key = jax.random.key(7)
    naive = jax.jit(lambda k_: prior.sample(k_, 8, mode="naive"))(key)
    quick = jax.jit(lambda k_: prior.sample(k_, 8, mode=fast))(key)
    assert quick.shape == (8, 4, 3) and quick.dtype == jnp.int32
    np.testing.assert_array_equal(naive, quick)
    assert int(quick.min()) >= 0 and int(quick.max()) < 6


# ----------------------------------------------------------------------------- the smoke VQ-VAE on real MNIST


@pytest.fixture(scope="module")
def vq_run(smoke_report, smoke_workdir, tmp_path_factory):
    """configs/mnist_vq.py:smoke trained with both code priors, and its report (the smoke
    main job's classifier copied in: same data, so the same classifier)."""
    from vae.evaluation import report
    from vae.train import stages

    workdir = tmp_path_factory.mktemp("vq") / "run"
    stages.train_and_evaluate(mnist_config("mnist_vq"), str(workdir))
    shutil.copytree(smoke_workdir / "classifier", workdir / "classifier")
    out = workdir / "report"
    return workdir, report.compare(str(workdir), str(out), n_samples=500, k=10, command="test")


def test_vq_training_reports_what_vq_users_check(vq_run):
    workdir, _ = vq_run
    config = mnist_config("mnist_vq")
    records = read_metrics(workdir)
    val = [r for r in records if r["split"] == "validation" and "prior" not in r]
    train = [r for r in records if r["split"] == "train" and "prior" not in r]
    assert len(val) == config.train.num_epochs + 1  # + the untrained model
    for r in val:
        assert 1 <= r["codes_used"] <= config.vae.vq.num_codes and 1.0 <= r["perplexity"] <= config.vae.vq.num_codes
        assert r["kl"] == pytest.approx(49 * math.log(config.vae.vq.num_codes), rel=1e-6)  # h w log K
    assert val[-1]["recon"] > val[1]["recon"] + 20  # it learned to reconstruct
    # The usage statistics of the last epoch, counted afresh from the validation codes of the
    # checkpoint that logged them.
    import vae
    from vae.data import input_pipeline
    from vae.evaluation import evaluation_data

    run = vae.load(str(workdir), kind="latest", learned_priors=False)
    x = evaluation_data.EvalData(run.config, input_pipeline.load_dataset(run.config.data)).images("validation")
    codes = np.asarray(run.encode(x)[0]).ravel()
    counts = np.bincount(codes, minlength=config.vae.vq.num_codes) / codes.size
    entropy = -np.sum(counts[counts > 0] * np.log(counts[counts > 0]))
    assert val[-1]["codes_used"] == len(np.unique(codes))
    assert val[-1]["perplexity"] == pytest.approx(np.exp(entropy), rel=1e-4)
    assert val[-1]["perplexity"] > 8  # many codes in effective use, not a collapsed codebook
    assert all("commitment" in r and "restarted_codes" in r for r in train)


def test_learned_code_priors_beat_uniform_and_the_bound_adds_up(vq_run):
    _, rep = vq_run
    p = rep["priors"]
    assert list(p) == ["uniform", *CODE_PRIORS]
    for name in CODE_PRIORS:
        assert p[name]["latent_nll"] < p["uniform"]["latent_nll"] - 20
        # The posterior is a point mass: the bound differs between priors by the code NLL alone.
        np.testing.assert_allclose(p["uniform"]["nll_iwae"] - p[name]["nll_iwae"],
                                   p["uniform"]["latent_nll"] - p[name]["latent_nll"], rtol=1e-3)
        assert p[name]["fd_classifier"] < p["uniform"]["fd_classifier"]
    assert p["uniform"]["latent_nll"] == pytest.approx(49 * math.log(32), rel=1e-6)
    assert rep["test_codes"]["codes_used"] <= 32 and rep["heldout_latent_hole_rate"] is None
    assert "uniform over codes vs learned priors" in open(vq_run[0] / "report" / "report.md").read()


def test_vq_report_files_and_load(vq_run):
    import vae

    workdir, _ = vq_run
    for name in ("uniform", *CODE_PRIORS):
        z = np.load(workdir / "report" / f"samples_{name}.npz")["z"]
        assert z.shape == (500, 7, 7) and np.issubdtype(z.dtype, np.integer) and z.min() >= 0 and z.max() < 32
        assert (workdir / "report" / f"samples_{name}.png").exists()
    run = vae.load(str(workdir))
    assert set(run.priors) == {"uniform", *CODE_PRIORS}
    codes, images = run.sample(jax.random.key(0), 4)  # the uniform prior the VQ-VAE trained with
    assert codes.shape == (4, 7, 7) and images.shape == (4, 28, 28, 1)
    x = run.dataset().test.images[:4] / 255.0
    assert run.reconstruct(x).shape == x.shape


def test_a_continuous_prior_on_a_vq_workdir_is_refused(vq_run, tmp_path):
    from vae.errors import PriorError
    from vae.train import stages

    workdir = tmp_path / "copy"
    shutil.copytree(vq_run[0], workdir)
    config = mnist_config("mnist_vq")
    config.stage, config.prior.name = "prior", "gmm"
    with pytest.raises(PriorError, match="'gmm' models continuous latents.*categorical"):
        stages.train_and_evaluate(config, str(workdir))


def test_vq_config_errors():
    from vae import models
    from vae.errors import ConfigError, PriorError
    from vae.train import stages

    config = mnist_config("mnist_vq")
    config.vae.prior = "vamp"
    with pytest.raises(ConfigError, match="uniform prior over codes"):
        models.create_vae(config)
    config = mnist_config("mnist")  # the continuous config's priors, asked of a VQ-VAE: refused before training
    config.vae.arch = "vq"
    with pytest.raises(PriorError, match="'gmm' models continuous latents"):
        stages.check_config(config)
