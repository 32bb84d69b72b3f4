"""The prior registry: a prior registered from one place is configured, fitted by stage 2,
loaded by `vae.load` and scored by the report, with nothing else changed."""

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import priors
import vae
from priors import registry
from tests.conftest import mnist_config, read_metrics
from vae.evaluation import report
from vae.train import stages


class DiagonalGaussian(nnx.Module):
    """N(mu, diag sigma^2) with learned mu and log sigma: the smallest gradient-fitted prior."""

    def __init__(self, latent_shape, init_log_scale):
        self.latent_shape = tuple(latent_shape)
        self.mean = nnx.Param(jnp.zeros(latent_shape))
        self.log_scale = nnx.Param(jnp.full(latent_shape, float(init_log_scale)))

    def log_prob(self, z):
        u = (z - self.mean[...]) * jnp.exp(-self.log_scale[...])
        per_element = -0.5 * u**2 - self.log_scale[...] - 0.5 * math.log(2 * math.pi)
        return per_element.reshape(z.shape[0], -1).sum(-1)

    def sample(self, key, n, *, temperature=1.0):
        eps = temperature * jax.random.normal(key, (n, *self.latent_shape))
        return self.mean[...] + jnp.exp(self.log_scale[...]) * eps


SPEC = registry.Spec(
    name="test_diagonal",
    fit="gradient",
    build=lambda latent_shape, c, rngs: DiagonalGaussian(latent_shape, c.init_log_scale),
    config=dict(init_log_scale=0.0),
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry._SPECS, SPEC.name, SPEC)  # noqa: SLF001 - undone after the test


def test_a_registered_prior_is_configured_fitted_loaded_and_reported(registered, smoke_workdir, smoke_report,
                                                                    copy_of):
    workdir = copy_of(smoke_workdir)  # after smoke_report: its cached classifier comes along
    config = mnist_config()
    assert config.prior.test_diagonal.init_log_scale == 0.0  # its config section, from the spec
    config.stage = "prior"
    config.prior.name = "test_diagonal"
    stages.train_and_evaluate(config, str(workdir))

    held_out = [r for r in read_metrics(workdir) if r.get("prior") == "test_diagonal" and r["split"] == "validation"]
    assert [r["epoch"] for r in held_out] == list(range(1, config.prior.num_epochs + 1))
    # Fitted by maximum likelihood, a diagonal Gaussian beats N(0, I) on held-out latents.
    assert held_out[-1]["latent_nll/test_diagonal"] < held_out[-1]["latent_nll/standard_normal"] - 1.0

    run = vae.load(str(workdir))
    assert list(run.priors) == ["standard_normal", "gmm", "pixelcnn", "test_diagonal", "transformer"]
    z, images = run.sample(jax.random.key(0), 4, prior="test_diagonal")
    assert z.shape == (4, *run.latent_shape) and images.shape == (4, 28, 28, 1)

    result = report.compare(str(workdir), n_samples=100, k=2)
    assert list(result["priors"]) == ["standard_normal", "gmm", "pixelcnn", "test_diagonal", "transformer"]
    assert result["priors"]["test_diagonal"]["nll_iwae"] < result["priors"]["standard_normal"]["nll_iwae"]


def test_registry_lists_every_prior_by_fit_kind():
    assert registry.names(fit="none") == ("standard_normal", "uniform")
    assert registry.names(fit="none", latents="continuous") == ("standard_normal",)
    assert set(registry.names(latents="categorical")) == {"uniform", "pixelcnn_codes", "transformer_codes"}
    assert set(registry.names(fit="gradient")) >= {"made", "pixelcnn", "transformer"}
    assert registry.names(fit="em") == ("gmm",)
    assert set(priors.NAMES) == set(registry.names())
    with pytest.raises(ValueError, match="needs em="):
        registry.Spec(name="broken", fit="em", build=lambda *a: None)
    with pytest.raises(ValueError, match="fit='adam'"):
        registry.Spec(name="broken", fit="adam", build=lambda *a: None)
    with pytest.raises(ValueError, match="latents='discrete'"):
        registry.Spec(name="broken", fit="none", latents="discrete", build=lambda *a: None)
    with pytest.raises(ValueError, match="needs num_codes"):
        priors.build("uniform", (2, 2))
    with pytest.raises(ValueError, match="unknown prior 'flow'"):
        priors.build("flow", (2,))
