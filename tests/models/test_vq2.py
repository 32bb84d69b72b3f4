"""VQ-VAE-2 (`vae.models.vq2`): two levels of codes as one flat code sequence.

Unit tests on a tiny model (8x8 images: a 2x2 top and a 4x4 bottom map): the split/join of the
sequence, straight-through gradients through both quantizers, each level's EMA step and
dead-code restarts, the uniform prior's KL, per-level code usage, the config's errors. Then
(slow) configs/mnist_vq2.py:smoke on real MNIST through stage 2 (the two-level PixelCNN and
uniform) and the report.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from priors import code_levels
from tests.conftest import mnist_config
from vae.models import registry, vq, vq2

LEVELS = (("top", (2, 2)), ("bottom", (4, 4)))


def tiny_model(commitment=0.25, decay=0.99, dead_code_threshold=0.01, seed=0):
    section = ml_collections.ConfigDict(registry.get("vq2").config)
    section.update(channels=(4, 6), num_codes=6, code_dim=3, commitment=commitment, codebook_decay=decay,
                   dead_code_threshold=dead_code_threshold)
    image_shape = (8, 8, 1)
    return vq2.build(section, image_shape, vq2.latent_shape(section, image_shape), "bernoulli", 1,
                     rngs=nnx.Rngs(seed), dtype=jnp.float32)


# Jitted (nnx.jit carries train_terms' codebook updates back to the model): one compile each,
# where eager calls compile every op of the tiny model.
encode = nnx.jit(lambda model, x: model.encode(x))
decode = nnx.jit(lambda model, codes: model.decode(codes))
quantize = nnx.jit(lambda model, x: model._quantize(x))  # noqa: SLF001 - what a training step quantizes
train_terms = nnx.jit(lambda model, x, key: model.train_terms(x, key))


def images(n=4, seed=0):
    return (jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1)) > 0.5).astype(jnp.float32)


def test_split_and_join_are_inverse():
    codes = jax.random.randint(jax.random.key(0), (3, 20), 0, 7)
    maps = code_levels.split(codes, LEVELS)
    assert list(maps) == ["top", "bottom"] and maps["top"].shape == (3, 2, 2) and maps["bottom"].shape == (3, 4, 4)
    np.testing.assert_array_equal(maps["top"].reshape(3, -1), codes[:, :4])  # the top map first, raster order
    np.testing.assert_array_equal(code_levels.join(maps, LEVELS), codes)
    with pytest.raises(ValueError, match="hold 20 codes"):
        code_levels.split(codes[:, :19], LEVELS)


@pytest.mark.slow  # the tiny model's first compiles
def test_the_model_reads_and_writes_one_code_sequence():
    model = tiny_model()
    assert model.levels == LEVELS and model.latent_shape == (20,)
    codes, logvar = encode(model, images())
    assert logvar is None and codes.shape == (4, 20) and codes.dtype == jnp.int32
    assert decode(model, codes).shape == (4, 8, 8, 1)
    # the decoder reads both maps: changing one code of either level changes the output
    for position in (0, 10):
        changed = codes.at[:, position].set((codes[:, position] + 1) % model.num_codes)
        assert float(jnp.max(jnp.abs(decode(model, changed) - decode(model, codes)))) > 1e-6


def test_elbo_kl_is_the_uniform_prior_over_both_maps():
    model = tiny_model()
    x = images()
    terms = model.elbo(x)
    np.testing.assert_allclose(terms["kl"], 20 * math.log(6), rtol=1e-6)  # (h_t w_t + h_b w_b) log K
    np.testing.assert_allclose(terms["elbo"], terms["recon"] - terms["kl"], rtol=1e-6)
    np.testing.assert_allclose(terms["commitment"], terms["commitment_top"] + terms["commitment_bottom"], rtol=1e-6)
    bound, _ = model.iwae(x, jax.random.key(0), k=1, log_prior=model.log_prior)
    np.testing.assert_allclose(bound, terms["elbo"], rtol=1e-5)


def test_gradient_reaches_the_encoder_through_both_quantizers():
    """Without the commitment term the encoder's last layers reach the loss only through the
    quantizers; straight-through passes the reconstruction's gradient to both."""
    model = tiny_model(commitment=0.0)
    x = images()

    def loss(model):
        return jnp.mean(model.elbo(x)["loss"])

    grads = nnx.jit(nnx.grad(loss))(model)  # jitted: one compile, not one per eager op
    for layer in ("top_out", "bottom_out"):  # z_e_top's and z_e_bottom's own convs
        assert float(jnp.max(jnp.abs(grads.encoder[layer].kernel[...]))) > 0, layer
    # and the quantizer is the identity backwards: the gradient at z_e_top is the one at z_q_top
    h_b = model.encoder.bottom_features(x)
    z_e_top = model.encoder.top(h_b)

    def through_quantizer(z_e):
        z_q, _, _ = model.top_quantizer(z_e)
        return jnp.sum(model.encoder.bottom(h_b, z_q) ** 2)

    def at_codes(z_q):
        return jnp.sum(model.encoder.bottom(h_b, z_q) ** 2)

    z_q_top = model.top_quantizer.lookup(model.top_quantizer.codes(z_e_top))
    np.testing.assert_allclose(jax.jit(jax.grad(through_quantizer))(z_e_top), jax.jit(jax.grad(at_codes))(z_q_top),
                               rtol=1e-5, atol=1e-6)


def test_each_level_takes_its_own_ema_step_toward_its_assignments():
    model = tiny_model(decay=0.5, dead_code_threshold=0.0)
    for quantizer in (model.top_quantizer, model.bottom_quantizer):  # a consistent running state
        quantizer.cluster_size[...] = jnp.ones(6)
        quantizer.embed_sum[...] = quantizer.embedding[...]
    x = images(16)
    levels = quantize(model, x)  # what the step's update reads
    before = {"top": np.asarray(model.top_quantizer.embedding[...]),
              "bottom": np.asarray(model.bottom_quantizer.embedding[...])}
    train_terms(model, x, jax.random.key(0))
    after = {"top": model.top_quantizer.embedding[...], "bottom": model.bottom_quantizer.embedding[...]}
    for name in ("top", "bottom"):
        z_e, _, codes, _ = levels[name]
        z_e, codes = np.asarray(z_e).reshape(-1, 3), np.asarray(codes).reshape(-1)
        used = np.unique(codes)
        assert len(used) >= 1
        for k in used:
            mean = z_e[codes == k].mean(0)
            assert np.linalg.norm(after[name][k] - mean) < np.linalg.norm(before[name][k] - mean), (name, k)


def test_dead_codes_restart_per_level_at_that_levels_encoder_outputs():
    """The codebooks start unused: the first step restarts each level's unused codes at encoder
    outputs of that level, and reports how many per level."""
    model = tiny_model()
    x = images(8)
    levels = quantize(model, x)
    terms = train_terms(model, x, jax.random.key(1))
    for name, quantizer in (("top", model.top_quantizer), ("bottom", model.bottom_quantizer)):
        z_e, _, codes, _ = levels[name]
        rows = np.asarray(z_e).reshape(-1, 3)
        used = set(np.unique(np.asarray(codes)).tolist())
        restarted = sorted(set(range(6)) - used)
        assert float(terms[f"restarted_codes_{name}"][0]) == len(restarted) > 0
        for k in restarted:
            row = np.asarray(quantizer.embedding[...][k])
            assert np.any(np.all(np.isclose(rows, row), axis=1)), (name, k)  # one of this level's outputs
        assert 1.0 <= float(terms[f"perplexity_{name}"][0]) <= len(used)


def test_codebook_usage_per_level():
    codes = jnp.concatenate([jnp.zeros((2, 4), jnp.int32), jnp.tile(jnp.arange(4), (2, 4))], axis=1)
    usage = vq.codebook_usage(codes, 6, LEVELS)
    assert usage["codes_used_top"] == 1 and usage["perplexity_top"] == pytest.approx(1.0)
    assert usage["codes_used_bottom"] == 4 and usage["perplexity_bottom"] == pytest.approx(4.0)
    assert usage["codes_used"] == 4
    assert vq.codebook_usage(codes, 6) == {"perplexity": usage["perplexity"], "codes_used": 4}  # one level: as before


def test_vq2_config_errors():
    from vae import models
    from vae.errors import ConfigError, PriorError
    from vae.train import stages

    config = mnist_config("mnist_vq2")
    assert models.latent_shape_from_config(config.vae, (28, 28, 1)) == (49 + 196,)
    config.vae.vq2.bottom_downsampling = 4
    assert models.latent_shape_from_config(config.vae, (28, 28, 1)) == (16 + 49,)  # 4x4 top, 7x7 bottom
    config.vae.vq2.bottom_downsampling = 3
    with pytest.raises(ConfigError, match=r"config.vae.vq2.bottom_downsampling=3 is out of range"):
        stages.check_config(config)
    config = mnist_config("mnist_vq2")
    config.prior.name = "pixelcnn_codes"  # one (h, w) map: refused before training
    with pytest.raises(PriorError, match="'pixelcnn_codes' models one \\(h, w\\) map of codes.*VQ-VAE-2"):
        stages.check_config(config)
    config = mnist_config("mnist_vq")
    config.prior.name = "pixelcnn_codes_2level"  # levels, asked of a one-level VQ-VAE
    with pytest.raises(PriorError, match="'pixelcnn_codes_2level' models code_levels latents.*categorical"):
        stages.check_config(config)


# ----------------------------------------------------------------------------- the smoke VQ-VAE-2 on real MNIST


@pytest.mark.slow
def test_smoke_vq2_trains_fits_the_two_level_prior_and_reports(mnist_dir, tmp_path, monkeypatch):
    """configs/mnist_vq2.py:smoke: stage 1, stage 2 (the two-level PixelCNN; uniform needs no
    fit), the report and `vae.load`. The report's classifier is left out (it would train one
    for this workdir): the test is about the codes, not the sample metrics."""
    import vae
    from tests.conftest import read_metrics
    from vae.evaluation import report, scoring
    from vae.train import stages

    workdir = tmp_path / "run"
    config = mnist_config("mnist_vq2")
    config.prior.name = "pixelcnn_codes_2level"
    config.vae.vq2.bottom_downsampling = 4  # 7x7 bottom, 4x4 top: L = 65, a quarter of the default's cost
    config.train.num_epochs, config.prior.num_epochs = 3, 2  # enough to learn, as asserted below
    stages.train_and_evaluate(config, str(workdir))
    records = read_metrics(workdir)
    val = [r for r in records if r["split"] == "validation" and "prior" not in r]
    assert val[-1]["recon"] > val[1]["recon"] + 10  # it learned to reconstruct
    assert all(1 <= r["codes_used_top"] <= 32 and 1 <= r["codes_used_bottom"] <= 32 for r in val)
    assert val[-1]["kl"] == pytest.approx(65 * math.log(32), rel=1e-6)
    train = [r for r in records if r["split"] == "train" and "prior" not in r]
    assert all(f"{k}_{level}" in r for r in train for k in ("perplexity", "restarted_codes")
               for level in ("top", "bottom"))

    monkeypatch.setattr(scoring, "load_classifier", lambda *args: None)
    rep = report.compare(str(workdir), str(tmp_path / "report"), n_samples=100, k=1, command="test")
    p = rep["priors"]
    assert list(p) == ["uniform", "pixelcnn_codes_2level"]
    assert p["uniform"]["latent_nll"] == pytest.approx(65 * math.log(32), rel=1e-6)
    assert p["pixelcnn_codes_2level"]["latent_nll"] < p["uniform"]["latent_nll"] - 20
    np.testing.assert_allclose(p["uniform"]["nll_iwae"] - p["pixelcnn_codes_2level"]["nll_iwae"],
                               p["uniform"]["latent_nll"] - p["pixelcnn_codes_2level"]["latent_nll"], rtol=1e-3)
    for level in ("top", "bottom"):
        assert 1 <= rep["test_codes"][f"codes_used_{level}"] <= 32
        assert all(f"sample_perplexity_{level}" in r for r in p.values())
    table = (tmp_path / "report" / "report.md").read_text()
    assert "the top map's" in table and "bottom code perplexity of samples" in table
    z = np.load(tmp_path / "report" / "samples_pixelcnn_codes_2level.npz")["z"]
    assert z.shape == (100, 65) and z.min() >= 0 and z.max() < 32

    run = vae.load(str(workdir))
    assert set(run.priors) == {"uniform", "pixelcnn_codes_2level"}
    codes, images_ = run.sample(jax.random.key(0), 2, prior="pixelcnn_codes_2level")
    assert codes.shape == (2, 65) and images_.shape == (2, 28, 28, 1)
