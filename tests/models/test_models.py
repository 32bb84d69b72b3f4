import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import fashion_mnist, mnist, mnist_mlp
from tests.conftest import mnist_config
from vae import models
from vae.errors import ConfigError


@pytest.mark.parametrize("module, latent, out_channels", [
    (mnist, (7, 7, 2), 1),          # conv, Bernoulli
    (mnist_mlp, (16,), 1),          # mlp, Bernoulli
    (fashion_mnist, (7, 7, 2), 2),  # conv, discretized logistic (mean, log-scale)
])
def test_shapes(module, latent, out_channels):
    config = module.get_config("smoke")
    model = models.create_vae(config)
    x = jnp.zeros((3, 28, 28, 1))
    mean, logvar, z, out = model(x, jax.random.key(0))
    assert mean.shape == logvar.shape == z.shape == (3, *latent)
    assert model.latent_shape == latent
    assert out.shape == (3, 28, 28, out_channels)


def test_mlp_with_two_latent_dims():
    config = mnist_mlp.get_config("smoke")
    config.vae.mlp.latent_dim = 2
    mean, _, _, out = models.create_vae(config)(jnp.zeros((2, 28, 28, 1)), jax.random.key(0))
    assert mean.shape == (2, 2) and out.shape == (2, 28, 28, 1)


@pytest.mark.parametrize("shape", [(8, 8, 4), (7, 7, 0), (7, 7)])
def test_latent_shape_that_does_not_fit_the_conv_decoder(shape):
    config = mnist.get_config("smoke")
    config.vae.conv.latent_shape = shape
    with pytest.raises(ConfigError, match=r"config.vae.conv.latent_shape=.*\(7, 7, c\)"):
        models.create_vae(config)


def test_bad_arch_and_latent_dim():
    config = mnist_mlp.get_config("smoke")
    config.vae.mlp.latent_dim = -3
    with pytest.raises(ConfigError, match="latent_dim=-3"):
        models.create_vae(config)
    config.vae.arch = "transformer"
    with pytest.raises(ConfigError, match="arch='transformer'"):
        models.create_vae(config)


def test_bfloat16_compute_keeps_float32_parameters_and_loss(mnist_dir):
    from vae.data import input_pipeline
    from vae.models import losses

    x = input_pipeline.to_float(input_pipeline.load_dataset(mnist_config("mnist_mlp").data).test.images[:64])
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = mnist_config("mnist_mlp")
        config.train.compute_dtype = dtype
        model = models.create_vae(config)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        mean, logvar, z, out = model(x, jax.random.key(0))
        assert mean.dtype == logvar.dtype == out.dtype == jnp.float32
        results[dtype] = float(jnp.mean(losses.elbo(x, mean, logvar, z, out, model.likelihood)["loss"]))
    # same initial weights: bf16 matmuls change the loss by rounding only (< 1%)
    assert abs(results["bfloat16"] - results["float32"]) < 0.01 * abs(results["float32"])
