"""The discrete VAE (`vae.models.dvae`, `vae.models.gumbel`).

Unit tests of the relaxation (what is true of Gumbel-softmax samples at low and high
temperature), of the KL to the uniform prior, of the schedules and of the bounds: on a tiny
dVAE whose 4^4 code maps can be enumerated, the sampled ELBO and IWAE bounds are checked
against the exact ELBO and log p(x); the posterior draws stage 2 fits follow q(c|x). Then the
smoke dVAE on real MNIST, through stage 2's code prior and the report's bound (stage 2's draws
and the report's columns: tests/train/test_dvae_priors.py).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import priors
from tests.conftest import mnist_config, read_metrics
from vae.errors import ConfigError
from vae.models import dvae, gumbel, losses, registry

# ----------------------------------------------------------------------------- the relaxation and the KL


def test_gumbel_softmax_argmax_is_softmax_and_low_temperature_samples_are_one_hot():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    n = 20000
    y = gumbel.gumbel_softmax(jax.random.key(0), jnp.broadcast_to(logits, (n, 5)), 0.01)
    assert float(jnp.mean(jnp.max(y, -1) > 0.99)) > 0.9  # near one-hot (at tau = 1: under half of them)
    assert float(jnp.mean(jnp.max(gumbel.gumbel_softmax(jax.random.key(0), y * 0 + logits, 1.0), -1) > 0.99)) < 0.5
    np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, atol=1e-5)
    freq = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=5) / n
    p = np.asarray(jax.nn.softmax(logits))
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n))  # the Gumbel-max trick, within 4 sd


def test_gumbel_softmax_high_temperature_samples_are_near_the_centre():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    y = gumbel.gumbel_softmax(jax.random.key(1), jnp.broadcast_to(logits, (20000, 5)), 1000.0)
    np.testing.assert_allclose(np.asarray(y), 0.2, atol=0.005)  # every sample, whatever the logits


def test_kl_to_uniform_is_log_k_minus_the_entropy_per_position():
    logits = 2.0 * jax.random.normal(jax.random.key(0), (3, 2, 2, 3))
    q = np.asarray(jax.nn.softmax(logits), np.float64)
    direct = np.sum(q * np.log(q * 3), axis=(1, 2, 3))  # sum_pos sum_k q log(q / (1/K))
    entropy = -np.sum(q * np.log(q), axis=(1, 2, 3))
    np.testing.assert_allclose(gumbel.kl_to_uniform(logits), direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gumbel.kl_to_uniform(logits), 4 * math.log(3) - entropy, rtol=1e-5, atol=1e-5)
    # over the joint: q(c|x) = prod_pos q_pos over all 3^4 maps, against uniform 3^-4
    maps = np.array(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    for b in range(3):
        q_map = np.exp(np.asarray(gumbel.log_q(jnp.broadcast_to(logits[b], (len(maps), 2, 2, 3)), jnp.asarray(maps))))
        np.testing.assert_allclose(q_map.sum(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.sum(q_map * np.log(q_map * 3**4)), direct[b], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("kind", gumbel.SCHEDULES)
def test_schedules_hit_their_endpoints_at_the_right_steps(kind):
    def f(step):
        return float(gumbel.schedule(step, 1.0, 1 / 16, 100, kind))

    assert f(0) == 1.0 and f(100) == 1 / 16 and f(101) == 1 / 16 and f(10**6) == 1 / 16
    assert 1 / 16 < f(99) < f(50) < f(1) < 1.0  # strictly between before step 100, decreasing
    assert f(50) == pytest.approx(0.5 * (1 + 1 / 16) if kind == "cosine" else math.sqrt(1 / 16), rel=1e-6)
    assert float(gumbel.schedule(0, 1.0, 0.5, 0, kind)) == 0.5  # no annealing: the end from the first step


def tiny_dvae(image_shape=(8, 8, 1), k=4, seed=0, **overrides):
    """A dVAE on 8x8 images: a 2x2 map of K codes (K^4 maps, few enough to enumerate)."""
    section = ml_collections.ConfigDict({**registry.get("dvae").config, "channels": (4, 8), "num_codes": k,
                                         "code_dim": 3, **overrides})
    dvae.check(section)
    model = dvae.build(section, image_shape, dvae.latent_shape(section, image_shape), "bernoulli", image_shape[-1],
                       rngs=nnx.Rngs(seed), dtype=jnp.float32)
    model.encoder.out.kernel[...] *= 20.0  # logits far from uniform, codes that matter: a gap to close
    model.codebook[...] *= 3.0
    return model


def test_the_model_schedules_follow_its_step_counter():
    model = tiny_dvae(tau_start=1.0, tau_end=0.25, tau_anneal_steps=30, kl_weight_start=0.0, kl_weight_end=1.0,
                      kl_warmup_steps=10)
    x = jnp.ones((2, 8, 8, 1))
    train_terms = nnx.jit(lambda m, key: m.train_terms(x, key))  # writes the counter back, as the train step does
    seen = {}
    for step in range(32):
        terms = train_terms(model, jax.random.key(step))
        seen[step] = (float(terms["tau"][0]), float(terms["kl_weight"][0]))
    assert float(model.steps_taken[...]) == 32
    assert seen[0] == (1.0, 0.0) and seen[10][1] == 1.0 and 0 < seen[9][1] < 1
    assert seen[30][0] == 0.25 and seen[31][0] == 0.25 and seen[29][0] > 0.25
    # the loss weighs the KL by the schedule: at step 0 it is -recon alone
    model.steps_taken[...] = jnp.float32(0)
    terms = train_terms(model, jax.random.key(0))
    np.testing.assert_allclose(terms["loss"], -terms["recon"], rtol=1e-6)


def test_config_errors_name_the_field():
    section = ml_collections.ConfigDict(registry.get("dvae").config)
    for field, bad in (("tau_end", 0.0), ("tau_schedule", "linear"), ("num_codes", 1), ("kl_warmup_steps", -1)):
        broken = ml_collections.ConfigDict(section.to_dict())
        broken[field] = bad
        with pytest.raises(ConfigError, match=f"config.vae.dvae.{field}="):
            dvae.check(broken)
    with pytest.raises(ConfigError, match="'dvae' downsamples by 4"):
        dvae.latent_shape(section, (30, 30, 1))


# ----------------------------------------------------------------------------- the bounds, against enumeration


@pytest.fixture(scope="module")
def enumerated():
    """A tiny dVAE, 3 binary 8x8 images, and per image: the exact ELBO and log p(x) under the
    uniform prior and under a fixed non-uniform prior, by summing over all 256 code maps."""
    model = tiny_dvae()
    x = (jax.random.uniform(jax.random.key(5), (3, 8, 8, 1)) < 0.4).astype(jnp.float32)
    maps = jnp.array(list(itertools.product(range(4), repeat=4)), jnp.int32).reshape(-1, 2, 2)
    prior_logits = 1.5 * jax.random.normal(jax.random.key(6), (2, 2, 4))

    def skewed(codes):  # a fixed prior over code maps, independent over positions
        return gumbel.log_q(jnp.broadcast_to(prior_logits, (*codes.shape, 4)), codes)

    uniform = priors.build("uniform", (2, 2), num_codes=4).log_prob
    logits = model.logits(x)
    exact = {"uniform": {}, "skewed": {}}
    for b in range(len(x)):
        log_px_c = losses.log_likelihood("bernoulli", jnp.broadcast_to(x[b], (256, 8, 8, 1)), model.decode(maps))
        log_q = gumbel.log_q(jnp.broadcast_to(logits[b], (256, 2, 2, 4)), maps)
        for name, lp in (("uniform", uniform), ("skewed", skewed)):
            joint = log_px_c + lp(maps)
            exact[name].setdefault("log_px", []).append(float(jax.nn.logsumexp(joint)))
            exact[name].setdefault("elbo", []).append(float(jnp.sum(jnp.exp(log_q) * (joint - log_q))))
    exact = {n: {k: np.array(v) for k, v in d.items()} for n, d in exact.items()}
    return model, x, (uniform, skewed), exact


def repeated_iwae(model, x, log_priors, k, n=400, seed=0):
    """n independent IWAE_k draws per image (the batch tiled n times): (P, n, B) bounds and ELBOs."""
    bound, elbo = jax.jit(lambda key: model.iwae(jnp.tile(x, (n, 1, 1, 1)), key, k=k, log_prior=log_priors))(
        jax.random.key(seed))
    return np.asarray(bound).reshape(len(log_priors), n, -1), np.asarray(elbo).reshape(len(log_priors), n, -1)


def test_enumerated_elbo_under_uniform_has_the_analytic_kl(enumerated):
    model, x, _, exact = enumerated
    assert np.all(exact["uniform"]["log_px"] - exact["uniform"]["elbo"] > 0.5)  # a real gap for IWAE to close
    n = 2000
    terms = jax.jit(lambda key: model.elbo(jnp.tile(x, (n, 1, 1, 1)), key))(jax.random.key(1))
    elbo = np.asarray(terms["elbo"]).reshape(n, -1)
    se = elbo.std(0) / np.sqrt(n)
    assert np.all(np.abs(elbo.mean(0) - exact["uniform"]["elbo"]) < 4 * se + 1e-3)
    np.testing.assert_allclose(np.asarray(terms["kl"][:3]), gumbel.kl_to_uniform(model.logits(x)), rtol=1e-6)


def test_iwae_with_one_sample_is_the_elbo_in_expectation(enumerated):
    model, x, log_priors, exact = enumerated
    bound, elbo = repeated_iwae(model, x, log_priors, k=1, n=4000)
    for i, name in enumerate(("uniform", "skewed")):
        se = bound[i].std(0) / np.sqrt(bound.shape[1])
        assert np.all(np.abs(bound[i].mean(0) - exact[name]["elbo"]) < 4 * se + 1e-3), name
        se = elbo[i].std(0) / np.sqrt(elbo.shape[1])  # the ELBO output: the same expectation, analytic entropy
        assert np.all(np.abs(elbo[i].mean(0) - exact[name]["elbo"]) < 4 * se + 1e-3), name


def test_iwae_increases_with_k_toward_log_px(enumerated):
    model, x, log_priors, exact = enumerated
    means = {k: repeated_iwae(model, x, log_priors, k=k, n=200, seed=k)[0].mean(1) for k in (1, 10, 100)}
    for i, name in enumerate(("uniform", "skewed")):
        log_px = exact[name]["log_px"]
        assert np.all(means[1][i] < means[10][i]) and np.all(means[10][i] < means[100][i]), name
        assert np.all(means[100][i] < log_px + 0.02), name  # a bound: below log p(x) (to sampling noise)
        gap = log_px - exact[name]["elbo"]
        assert np.all(log_px - means[100][i] < 2 / 3 * gap), name  # and a third of the ELBO's gap closed, at least


def test_iwae_of_one_prior_is_that_row_of_several(enumerated):
    model, x, log_priors, _ = enumerated
    one = model.iwae(x, jax.random.key(3), k=20, log_prior=log_priors[1])
    many = model.iwae(x, jax.random.key(3), k=20, log_prior=log_priors)
    assert many[0].shape == (2, 3) and one[0].shape == (3,)
    np.testing.assert_allclose(one[0], many[0][1], rtol=1e-6)
    np.testing.assert_allclose(one[1], many[1][1], rtol=1e-6)


def test_posterior_draws_follow_q_whatever_the_batching():
    """`evaluation_data.posterior_draws` (what stage 2 fits a dVAE's priors to): row r draws with
    fold_in(key, r), in any batch; over many rows of the same image, each position's code
    frequencies are softmax(logits) within 4 sd."""
    from vae.evaluation import evaluation_data

    model, n, key = tiny_dvae(), 3000, jax.random.key(0)
    x = np.asarray(jax.random.uniform(jax.random.key(5), (3, 8, 8, 1)) < 0.4, np.float32)
    tiled = np.tile(x, (n, 1, 1, 1))  # row r holds image r mod 3
    codes = np.asarray(evaluation_data.posterior_draws(model, tiled, key))
    again = evaluation_data.posterior_draws(model, tiled[10:60], key, rows=range(10, 60), batch_size=25)
    np.testing.assert_array_equal(codes[10:60], again)  # rows 10..59 in other batches: the same draws
    assert evaluation_data.sampled_posterior(model) and codes.dtype == np.int32
    q = np.asarray(jax.nn.softmax(model.logits(jnp.asarray(x))))  # (3, 2, 2, 4)
    for b in range(3):
        freq = np.mean(codes[b::3][..., None] == np.arange(4), axis=0)
        assert np.all(np.abs(freq - q[b]) < 4 * np.sqrt(q[b] * (1 - q[b]) / n) + 1e-3), b
    assert 0.05 < np.mean(codes[0::3] != np.argmax(q[0], -1)) < 0.95  # draws, not the argmax


# ----------------------------------------------------------------------------- the smoke dVAE on real MNIST


@pytest.mark.slow
def test_dvae_training_learns_and_uses_its_codes(dvae_run):
    workdir, _ = dvae_run
    import vae
    from vae.data import input_pipeline
    from vae.evaluation import evaluation_data

    config = mnist_config("mnist_dvae")
    records = [r for r in read_metrics(workdir) if "prior" not in r]
    val = [r for r in records if r["split"] == "validation"]
    train = [r for r in records if r["split"] == "train"]
    assert len(val) == config.train.num_epochs + 1  # + the untrained model
    assert val[-1]["recon"] > val[0]["recon"] + 200 and val[-1]["elbo"] > val[1]["elbo"]  # it learned
    assert val[-1]["codes_used"] > 1 and val[-1]["perplexity"] > 4  # not collapsed onto one code
    k = config.vae.dvae.num_codes
    assert 0 < val[-1]["kl"] < 49 * math.log(k)  # analytic: between a uniform q and a point mass
    assert train[0]["kl_weight"] < 1.0 and train[-1]["kl_weight"] == 1.0 and train[-1]["tau"] == config.vae.dvae.tau_end
    run = vae.load(str(workdir), kind="latest", learned_priors=False)
    assert float(run.model.steps_taken[...]) == run.step == val[-1]["step"]  # the schedules' counter is the step
    x = evaluation_data.EvalData(run.config, input_pipeline.load_dataset(run.config.data)).images("validation")
    codes = np.asarray(run.encode(x)[0])
    assert codes.shape == (len(x), 7, 7) and np.issubdtype(codes.dtype, np.integer)
    assert val[-1]["codes_used"] == len(np.unique(codes))


@pytest.mark.slow
def test_report_bound_of_the_smoke_dvae(dvae_run):
    """The report's bound (`bounds.iwae_under_priors`) under uniform and the fitted code prior:
    (P, N) each; under uniform the IWAE bound beats the ELBO, which matches stage 1's test ELBO."""
    import vae
    from vae.data import input_pipeline
    from vae.evaluation import bounds, evaluation_data

    run = vae.load(str(dvae_run[0]))
    assert set(run.priors) == {"uniform", "pixelcnn_codes"}
    x = evaluation_data.EvalData(run.config, input_pipeline.load_dataset(run.config.data)).images("test")[:200]
    nll, elbo = bounds.iwae_under_priors(run.model, [run.priors["uniform"], run.priors["pixelcnn_codes"]], x,
                                         jax.random.key(0), k=10)
    assert nll.shape == elbo.shape == (2, 200) and np.all(np.isfinite(nll))
    assert -nll[0].mean() > elbo[0].mean() + 1.0  # IWAE_10 over sampled codes: tighter than the ELBO
    direct = jax.jit(run.model.elbo)(jnp.asarray(x), jax.random.key(1))["elbo"]  # stage 1's ELBO, other draws
    assert elbo[0].mean() == pytest.approx(float(direct.mean()), abs=3.0)
    codes, images = run.sample(jax.random.key(0), 4, prior="pixelcnn_codes")
    assert codes.shape == (4, 7, 7) and images.shape == (4, 28, 28, 1)
