"""The architecture registry: an encoder/decoder family registered from one place gets its
config section, is checked, trained by stage 1 and rebuilt by `vae.load`, with nothing else
changed."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import vae
from tests.conftest import mnist_config, read_metrics
from vae import models
from vae.errors import ConfigError
from vae.models import registry
from vae.models.layers import posterior
from vae.train import stages


class LinearEncoder(nnx.Module):
    def __init__(self, image_shape, latent_dim, *, rngs, dtype):
        self.out = nnx.Linear(int(np.prod(image_shape)), 2 * latent_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return posterior(self.out(x.reshape(x.shape[0], -1)))


class LinearDecoder(nnx.Module):
    def __init__(self, image_shape, latent_dim, out_channels, *, rngs, dtype):
        self.out_shape = (*image_shape[:2], out_channels)
        self.out = nnx.Linear(latent_dim, int(np.prod(self.out_shape)), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        return self.out(z).reshape(z.shape[0], *self.out_shape)


def latent_shape(section, image_shape):
    if section.latent_dim < 1:
        raise ConfigError(f"config.vae.test_linear.latent_dim={section.latent_dim} must be >= 1")
    return (section.latent_dim,)


def build(section, image_shape, shape, likelihood, out_channels, *, rngs, dtype):
    return (LinearEncoder(image_shape, shape[0], rngs=rngs, dtype=dtype),
            LinearDecoder(image_shape, shape[0], out_channels, rngs=rngs, dtype=dtype))


SPEC = registry.Spec(name="test_linear", build=build, latent_shape=latent_shape, config={"latent_dim": 3})


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry._SPECS, SPEC.name, SPEC)  # noqa: SLF001 - undone after the test


def linear_config():
    from configs import base

    config = mnist_config("mnist_mlp")
    assert "test_linear" in base.get_base_config().vae  # its section, from the spec
    config.vae.arch = "test_linear"
    config.vae.test_linear = ml_collections.ConfigDict(SPEC.config)
    config.stage = "vae"
    config.train.num_epochs = 1
    return config


def test_a_registered_architecture_is_built_with_its_section(registered):
    config = linear_config()
    model = models.create_vae(config)
    assert isinstance(model.encoder, LinearEncoder) and model.latent_shape == (3,)
    config.vae.test_linear.latent_dim = 0
    with pytest.raises(ConfigError, match="config.vae.test_linear.latent_dim=0"):
        stages.check_config(config)


@pytest.mark.slow
def test_a_registered_architecture_trains_and_loads_end_to_end(registered, tmp_path):
    workdir = tmp_path / "run"
    stages.train_and_evaluate(linear_config(), str(workdir))
    validation = [r for r in read_metrics(workdir) if r.get("split") == "validation"]
    assert validation and np.isfinite(validation[-1]["elbo"])
    run = vae.load(str(workdir))
    assert isinstance(run.model.decoder, LinearDecoder)
    mean, _ = run.encode(jnp.zeros((2, 28, 28, 1)))
    assert mean.shape == (2, 3)


def test_unknown_architecture_lists_the_registered_ones():
    config = mnist_config()
    config.vae.arch = "transformer"
    with pytest.raises(ConfigError, match=r"config.vae.arch='transformer' is unknown; expected one of .*'conv'"):
        stages.check_config(config)
    assert set(registry.names()) >= {"mlp", "conv", "resnet", "vq"}
