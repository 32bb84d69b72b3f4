import json
import logging

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest

from tests.conftest import mnist_config
from vae import models
from vae.data import input_pipeline
from vae.evaluation import diagnostics
from vae.train import stages


def test_statistics_of_a_synthetic_encoder_match_hand_computation():
    # dim 0: means on a grid {-1, +1} (Var = 1, active); dim 1: constant 0.3 (Var = 0);
    # dim 2: {-0.05, +0.05} (Var = 0.0025 < 0.01: inactive). Posterior variances 0.25, 1, 0.5.
    n = 4000
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    means = np.stack([sign, np.full(n, 0.3), 0.05 * sign], 1)
    variances = np.array([0.25, 1.0, 0.5])
    logvars = np.broadcast_to(np.log(variances), means.shape)
    s = diagnostics.posterior_statistics(means, logvars, jax.random.key(0))
    np.testing.assert_allclose(s["var_of_mu"], [1.0, 0.0, 0.0025], atol=1e-12)
    assert s["active_units"] == 1
    by_hand = 0.5 * (variances + np.array([1.0, 0.09, 0.0025]) - 1.0 - np.log(variances))
    np.testing.assert_allclose(s["kl_per_dim"], by_hand, rtol=1e-9)
    assert s["average_kl"] == pytest.approx(by_hand.sum())
    # law of total variance: Var z = Var mu + E sigma^2 (Monte Carlo, one draw per x)
    np.testing.assert_allclose(s["var_of_z"], [1.25, 1.0, 0.5025], rtol=0.06)
    # dims 0 and 2 move together (dim 2 = 0.05 dim 0): one eigenvalue 1 + 0.05^2, the rest 0
    np.testing.assert_allclose(s["eigenvalues_cov_mu"], [1.0025 * n / (n - 1), 0.0, 0.0], atol=1e-9)


def test_a_dimension_the_decoder_ignores_is_counted_inactive(mnist_dir):
    """Trained on real digits with z[0] cut off from the decoder, the KL term alone acts on
    dim 0 and pulls every q(z_0|x) to N(0, 1): Var mu_0 -> 0, while used dims stay active."""
    import optax
    from flax import nnx

    from vae.models import losses

    config = mnist_config("mnist_mlp")
    config.vae.mlp.latent_dim = 4
    config.vae.mlp.hidden = (128,)
    images = jnp.asarray(input_pipeline.load_dataset(config.data).train.images[:1024])
    model = models.create_vae(config)
    graphdef, params = nnx.split(model)
    tx = optax.adam(2e-3)

    def loss_fn(params, idx, key):
        m = nnx.merge(graphdef, params)
        k_bin, k_z = jax.random.split(key)
        x = input_pipeline.prepare_images(images[idx], k_bin, True)
        mean, logvar = m.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mean.shape)
        out = m.decode(z.at[:, 0].set(0.0))  # the decoder never sees z[0]
        return jnp.mean(losses.elbo(x, mean, logvar, z, out, m.likelihood)["loss"])

    @jax.jit
    def train(params, key):
        def step(carry, i):
            params, opt = carry
            idx = jax.random.choice(jax.random.fold_in(key, i), len(images), (128,), replace=False)
            grads = jax.grad(loss_fn)(params, idx, jax.random.fold_in(key, -i - 1))
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), None
        return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(400))[0][0]

    params = train(params, jax.random.key(0))
    x = input_pipeline.fixed_binarization(np.asarray(images), 1, True)
    mean, logvar = nnx.merge(graphdef, params).encode(jnp.asarray(x))
    s = diagnostics.posterior_statistics(mean, logvar, jax.random.key(1))
    assert s["var_of_mu"][0] < diagnostics.ACTIVE_THRESHOLD < min(s["var_of_mu"][1:])
    assert s["kl_per_dim"][0] < 0.05 < min(s["kl_per_dim"][1:])  # nats
    assert s["active_units"] == 3


def _is_real_png(path, min_side=100):
    img = plt.imread(path)
    return min(img.shape[:2]) >= min_side and img.std() > 0.01


def test_command_on_a_spatial_latent_skips_2d_plots_with_a_log_line(smoke_workdir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vae"):
        result = diagnostics.diagnose(str(smoke_workdir), str(tmp_path))
    assert "skipping the 2-D latent map" in caplog.text
    assert sorted(result["files"]) == ["histograms.png", "pca.png", "posterior_statistics.png"]
    for name in result["files"]:
        assert _is_real_png(tmp_path / name)
    on_disk = json.loads((tmp_path / "diagnostics.json").read_text())
    assert on_disk["statistics"]["num_dims"] == 98
    surgery = on_disk["elbo_surgery_test"]
    assert set(surgery) == {"standard_normal", "gmm", "pixelcnn", "transformer"}
    normal, n_test = surgery["standard_normal"], 2000
    # I(x; z) of the aggregate posterior over n images is at most log n; the learned priors,
    # fitted to q(z), are closer to it than N(0, I) is.
    assert 0 < normal["mutual_info"] <= np.log(n_test) + 1e-6
    for name in ("gmm", "pixelcnn", "transformer"):
        assert 0 < surgery[name]["marginal_kl"] < normal["marginal_kl"]


@pytest.mark.slow
def test_command_on_a_2d_latent_draws_the_maps(tmp_path, mnist_dir):
    config = mnist_config("mnist_mlp")
    config.vae.mlp.latent_dim = 2
    config.prior.name = "gmm"
    stages.train_and_evaluate(config, str(tmp_path / "w"))
    result = diagnostics.diagnose(str(tmp_path / "w"))
    assert {"latent_map.png", "aggregate_posterior.png", "manifold.png"} <= set(result["files"])
    for name in result["files"]:
        assert _is_real_png(tmp_path / "w" / "diagnostics" / name)
    # A 2-D latent trained on MNIST uses both dimensions: the means vary far above the threshold.
    var_of_mu = np.asarray(result["statistics"]["var_of_mu"])
    assert result["statistics"]["active_units"] == int(np.sum(var_of_mu > diagnostics.ACTIVE_THRESHOLD)) == 2
