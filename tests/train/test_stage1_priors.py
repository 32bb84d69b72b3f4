"""Priors trained with the VAE (config.vae.prior): the VampPrior's density and sampler, and a
VAE trained jointly with a PixelCNN prior: the ELBO uses it, the checkpoint holds it, and
readers (vae.load, sample.py's report) score it as `joint_pixelcnn` beside N(0, I)."""

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from priors.vamp import VampPrior
from tests.conftest import mnist_config, read_metrics
from vae import models
from vae.models import losses, mlp


def small_vamp(k=3, seed=0):
    encoder = mlp.MLPEncoder((4, 4, 1), (8,), 2, rngs=nnx.Rngs(seed))
    return VampPrior(encoder, (4, 4, 1), (2,), k, rngs=nnx.Rngs(seed + 1))


def test_vamp_log_prob_is_the_mixture_of_posteriors_and_integrates_to_one():
    prior = small_vamp()
    mean, logvar = prior.encoder(prior.pseudo_inputs())
    z = jax.random.normal(jax.random.key(0), (50, 2)) * 2
    brute = jax.nn.logsumexp(jnp.stack([losses.gaussian_log_prob(z, mean[i], logvar[i]) for i in range(3)]), 0)
    np.testing.assert_allclose(prior.log_prob(z), brute - math.log(3), atol=1e-4)

    lo, hi, n = -8.0, 8.0, 400
    g = jnp.linspace(lo, hi, n)
    grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    mass = jnp.sum(jnp.exp(prior.log_prob(grid))) * ((hi - lo) / (n - 1)) ** 2
    assert abs(float(mass) - 1.0) < 5e-3


def test_vamp_samples_follow_its_density():
    """Sample moments match the mixture's, and the samples' mean -log p matches the entropy
    computed on a grid (within 0.03 nats at 40,000 samples)."""
    prior = small_vamp(k=4, seed=3)
    mean, logvar = prior.components()
    z = prior.sample(jax.random.key(1), 40000)
    assert z.shape == (40000, 2)
    want_mean = jnp.mean(mean, 0)
    want_second = jnp.mean(jnp.exp(logvar) + mean**2, 0)
    np.testing.assert_allclose(jnp.mean(z, 0), want_mean, atol=0.03)
    np.testing.assert_allclose(jnp.mean(z**2, 0), want_second, rtol=0.03)

    g = jnp.linspace(-8.0, 8.0, 400)
    grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    logp = prior.log_prob(grid)
    entropy = -jnp.sum(jnp.exp(logp) * logp) * (16.0 / 399) ** 2
    assert abs(float(-jnp.mean(prior.log_prob(z))) - float(entropy)) < 0.03


def test_the_vamp_vae_shares_one_encoder():
    """The prior holds the VAE's encoder, not a copy: the state has it once, plus K pseudo-inputs."""
    config = mnist_config()
    plain = models.create_vae(config)
    config.vae.prior = "vamp"
    vamp = models.create_vae(config)
    assert vamp.prior.encoder is vamp.encoder
    size = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m)))  # noqa: E731
    assert size(vamp) == size(plain) + config.vae.vamp_components * 28 * 28


@pytest.mark.parametrize("name, expected", [("gmm", "config.vae.prior='gmm'"), ("diffusion", "'diffusion'")])
def test_stage1_prior_that_cannot_sit_in_the_elbo_is_refused(name, expected):
    from vae.errors import ConfigError
    from vae.train import stages

    config = mnist_config()
    config.vae.prior = name
    with pytest.raises(ConfigError, match=expected):
        stages.check_config(config)


@pytest.fixture(scope="module")
def joint_run(smoke_workdir, smoke_report, tmp_path_factory):
    """The smoke VAE trained 2 epochs with the PixelCNN prior in its ELBO (the classifier
    copied from the smoke main job's report: it depends on the data only)."""
    from vae.train import stages

    config = mnist_config()
    config.stage = "vae"
    config.vae.prior = "pixelcnn"
    config.train.num_epochs = 2
    workdir = tmp_path_factory.mktemp("joint") / "run"
    stages.train_and_evaluate(config, str(workdir))
    shutil.copytree(smoke_workdir / "classifier", workdir / "classifier")
    return workdir, config


def test_joint_prior_is_trained_in_the_elbo_and_kept_in_the_checkpoint(joint_run):
    import vae
    from vae.data import input_pipeline
    from vae.evaluation import evaluation_data

    workdir, config = joint_run
    run = vae.load(str(workdir))
    model = run.model
    assert sorted(run.priors) == ["joint_pixelcnn", "standard_normal"]
    assert run.priors["joint_pixelcnn"] is model.prior
    initial = models.create_vae(config).prior
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(nnx.state(model.prior)),
                                                              jax.tree.leaves(nnx.state(initial)))]
    assert max(moved) > 1e-3  # the optimizer trained the prior with the VAE

    # The ELBO's KL is log q(z|x) - log p(z) under the learned prior at the drawn z.
    x = evaluation_data.EvalData(config, input_pipeline.load_dataset(config.data)).images("test")[:16]
    key = jax.random.key(5)
    terms = model.elbo(jnp.asarray(x), key)
    mean, logvar, z, _ = model(jnp.asarray(x), key)
    np.testing.assert_allclose(terms["kl"], losses.gaussian_log_prob(z, mean, logvar) - model.prior.log_prob(z),
                               rtol=1e-5, atol=1e-3)
    assert not np.allclose(terms["kl"], losses.kl_standard_normal(mean, logvar), atol=1.0)

    # Stage 1's recorded test ELBO is the reader's evaluation of the restored checkpoint.
    last = [r for r in read_metrics(workdir) if r["split"] == "test"][-1]
    assert run.evaluate("test")["elbo"] == pytest.approx(last["elbo"], rel=1e-5)
    z, images = run.sample(jax.random.key(0), 4)  # default: the prior it trained with
    assert z.shape == (4, *model.latent_shape) and images.shape == (4, 28, 28, 1)


def test_report_scores_the_joint_prior_beside_standard_normal(joint_run, tmp_path):
    from vae.evaluation import report

    workdir, _ = joint_run
    rep = report.compare(str(workdir), str(tmp_path), n_samples=200, k=2, command="test")
    assert list(rep["priors"]) == ["standard_normal", "joint_pixelcnn"]
    assert rep["vae"]["trained_with_prior"] == "pixelcnn"
    assert rep["priors"]["joint_pixelcnn"]["density"] == "exact"
    # The VAE was trained under its own prior: N(0, I) is a worse prior for it.
    assert rep["priors"]["joint_pixelcnn"]["nll_iwae"] < rep["priors"]["standard_normal"]["nll_iwae"]
    assert rep["priors"]["joint_pixelcnn"]["latent_nll"] < rep["priors"]["standard_normal"]["latent_nll"]
    md = (tmp_path / "report.md").read_text()
    assert "| joint_pixelcnn |" in md and "the prior the VAE was trained with" in md


def test_a_joint_prior_is_part_of_the_model(tmp_path):
    """With a prior inside the VAE, its size is part of the model, so changing it refuses the
    resume (another prior's size does not); dropout in the ELBO is refused."""
    from vae.errors import ConfigError, TrainingError
    from vae.workdir import Workdir

    config = mnist_config()
    config.vae.prior = "pixelcnn"
    (tmp_path / "config.json").write_text(config.to_json())
    config.prior.pixelcnn.features = 8
    with pytest.raises(TrainingError, match="prior.pixelcnn.features: 16 in workdir, 8 now"):
        Workdir(str(tmp_path)).check_resumable(config)
    config.prior.pixelcnn.features, config.prior.transformer.features = 16, 8  # not in this VAE: free
    Workdir(str(tmp_path)).check_resumable(config)

    config.prior.pixelcnn.dropout = 0.1
    with pytest.raises(ConfigError, match="config.prior.pixelcnn.dropout=0.1"):
        models.create_vae(config)
