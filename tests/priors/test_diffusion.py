"""The diffusion prior (priors/diffusion.py): its bound against closed forms and a known
density, its schedules, samplers and temperature, and its spatial denoiser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import priors
from configs import base, fashion_mnist
from priors import diffusion_schedule
from tests.conftest import read_metrics
from tests.priors.test_priors import dependence, fit_config, jitter, mixture_data, true_log_prob
from vae import workdir as workdir_lib
from vae.evaluation import evaluation_data
from vae.train import prior_fits


def build(shape, seed=0, **overrides):
    config = base.get_base_config().prior
    config.diffusion.update(overrides)
    return priors.build("diffusion", shape, config, seed=seed)


def perturbed(prior, scale=0.3):
    """Every parameter moved by scale * N(0, 1): the zero-initialized output layers too."""
    return jitter(prior, scale, seed=7)


@pytest.mark.parametrize("shape, gamma_min", [((3,), -13.3), ((3,), -2.0), ((2, 2, 2), -2.0)])
def test_bound_of_the_standard_normal_denoiser_is_the_closed_form(shape, gamma_min):
    """With the network at zero, eps_hat = sigma_t z_t: N(0, I) data's exact denoiser. Then
    (x in R^d; a_t^2 = sigmoid(-g_t), s_t^2 = sigmoid(g_t), a^2 + s^2 = 1; E over eps):
      recon     = d/2 (log 2 pi + g_0 + 1)
      prior     = 1/2 sum_i (s_1^2 + a_1^2 x_i^2 - log s_1^2 - 1)
      diffusion = 1/2 int_0^1 g'(t) E||eps - s_t z_t||^2 dt, and eps - s_t z_t = a^2 eps - s a x, so
                = 1/2 int_{g_0}^{g_1} (a^4 d + s^2 a^2 ||x||^2) dg
                = d/2 [log s^2 - s^2]_{g_0}^{g_1} + ||x||^2/2 [s^2]_{g_0}^{g_1}
      (d/dg log s^2 = a^2, d/dg s^2 = s^2 a^2, a^4 = a^2 - s^2 a^2). Summing, g_1 cancels:
      -bound(x) = d/2 log 2 pi + d/2 log(1 + e^{g_0}) + d/2 s_0^2 + a_0^2 ||x||^2 / 2.
    The model is p(x) = int N(x; z_0/a_0, e^{g_0}) N(z_0; 0, I) dz_0 = N(x; 0, (1 + s_0^2)/a_0^2 I)
    (the reverse process is exact, so z_0 ~ N(0, I)); the bound is below log p by exactly
    KL(q(z_0|x) || p(z_0|x)) = d/2 (s_0^2 - log(1 + s_0^2)) + a_0^2 s_0^2 ||x||^2 / (2 (1 + s_0^2)).
    At g_0 = -13.3 both are N(0, I) to ~1e-6 per dimension."""
    prior = build(shape, gamma_min=gamma_min, bound_samples=2, channels=(4,), bottleneck=8)
    x = 1.5 * jax.random.normal(jax.random.key(0), (6, *shape))
    d, sq = math.prod(shape), np.sum(np.asarray(x, np.float64).reshape(6, -1) ** 2, axis=-1)
    s2 = 1.0 / (1.0 + math.exp(-gamma_min))
    a2 = 1.0 - s2
    expected = -0.5 * d * (math.log(2 * math.pi) + math.log1p(math.exp(gamma_min)) + s2) - 0.5 * a2 * sq
    np.testing.assert_allclose(np.asarray(prior.log_prob(x)), expected, rtol=1e-5)
    variance = (1.0 + s2) / a2
    model = -0.5 * d * math.log(2 * math.pi * variance) - 0.5 * sq / variance
    kl = 0.5 * d * (s2 - math.log1p(s2)) + 0.5 * a2 * s2 * sq / (1.0 + s2)
    np.testing.assert_allclose(model - expected, kl, rtol=1e-4, atol=1e-5)


def test_bound_equals_vdm_sum_of_its_three_losses_for_any_network():
    """The control-variate form (closed-form part minus the network's excess) against VDM's
    recon + prior + diffusion losses on the same draws of (t, eps), for a network far from
    zero: equal in expectation (their difference is the baseline's centred loss); and log_prob
    is their average over its own draws."""
    g0, g1 = -6.0, 4.0
    prior = perturbed(build((2,), gamma_min=g0, gamma_max=g1, bound_samples=256, hidden=32, num_blocks=1))
    n = 100_000
    k_t, k_e = jax.random.split(jax.random.key(1))
    t, eps = jax.random.uniform(k_t, (n,)), jax.random.normal(k_e, (n, 2))
    s2_1 = jax.nn.sigmoid(g1)
    for xi in jnp.array([[0.3, -1.2], [2.0, 0.5]]):
        x = jnp.broadcast_to(xi, (n, 2))
        gamma = g0 + (g1 - g0) * t
        z_t = jnp.sqrt(jax.nn.sigmoid(-gamma))[:, None] * x + jnp.sqrt(jax.nn.sigmoid(gamma))[:, None] * eps
        recon = math.log(2 * math.pi) + g0 + 1.0  # d/2 (log 2 pi + g_0 + 1), d = 2
        kl = 0.5 * jnp.sum(s2_1 + (1 - s2_1) * xi**2 - jnp.log(s2_1) - 1.0)
        diffusion = 0.5 * (g1 - g0) * jnp.sum((eps - prior.eps_hat(z_t, gamma)) ** 2, axis=-1)
        direct = -(recon + kl + diffusion)
        ours = prior.reference_bound(x) - prior.excess(x, eps, t)
        difference = direct - ours
        assert abs(float(difference.mean())) < 5 * float(difference.std()) / math.sqrt(n)
        bound = float(prior.log_prob(xi[None])[0])
        assert abs(bound - float(ours.mean())) < 5 * float(ours.std()) * (1 / math.sqrt(256) + 1 / math.sqrt(n))


def test_the_bound_does_not_depend_on_the_learned_schedule_shape():
    """In continuous time only gamma_0 and gamma_1 enter the bound: a learned shape, perturbed
    far from linear, moves where t lands, not the expectation."""
    fixed = perturbed(build((2,), hidden=32, num_blocks=1, bound_samples=1024))
    learned = build((2,), hidden=32, num_blocks=1, bound_samples=1024, schedule="learned")
    nnx.update(learned.net, nnx.state(fixed.net))
    schedule = learned.schedule
    schedule.l2.kernel[...] = 10.0 * schedule.l2.kernel[...]  # steep sigmoids at random places: strongly non-linear
    schedule.l2.bias[...] = 5.0 * jax.random.normal(jax.random.key(4), schedule.l2.bias.shape)
    schedule.l3.kernel[...] = 100.0 * schedule.l3.kernel[...]
    grid = jnp.linspace(0, 1, 11)
    u = np.asarray(schedule.shape(grid)[0])
    assert np.max(np.abs(u - np.asarray(grid))) > 0.05, u
    assert u[0] == pytest.approx(0.0, abs=1e-6) and u[-1] == pytest.approx(1.0, abs=1e-6) and np.all(np.diff(u) > 0)
    x = mixture_data(jax.random.key(0), 2000)
    assert float(learned.log_prob(x).mean()) == pytest.approx(float(fixed.log_prob(x).mean()), abs=0.02)


def test_variance_gradient_routes_the_mean_to_parameters_and_the_variance_to_the_shape():
    def per_example(params, shape, data):
        (u,) = shape
        return params["w"] * data**2 + jnp.sin(u) * params["w"] + u**2

    params, u, data = {"w": jnp.array(1.3)}, jnp.array([0.1, 0.5, 0.9, 1.4]), jnp.array([0.2, -1.0, 0.7, 2.0])

    def mean_custom(params, u):
        return jnp.mean(diffusion_schedule.variance_gradient(per_example, params, (u,), data))

    d_params, d_u = jax.grad(mean_custom, argnums=(0, 1))(params, u)
    expected_params = jax.grad(lambda p: jnp.mean(per_example(p, (u,), data)))(params)
    losses = per_example(params, (u,), data)
    expected_u = jax.grad(lambda v: jnp.mean((per_example(params, (v,), data) - jnp.mean(losses)) ** 2))(u)
    np.testing.assert_allclose(d_params["w"], expected_params["w"], rtol=1e-6)
    np.testing.assert_allclose(d_u, expected_u, rtol=1e-5)


def spread(samples):
    return float(np.mean(np.sum((samples - samples.mean(0)) ** 2, axis=tuple(range(1, samples.ndim)))))


def num_params(prior):
    return sum(a.size for a in jax.tree.leaves(nnx.state(prior, nnx.Param)))


def sampler_of(prior):
    """prior.sample under jit: (key, n[, temperature]) -> samples; without a temperature it
    calls sample(key, n), as every caller of the Prior interface does. The temperature is a
    Python float, static: T = 1.0 then multiplies by a constant one, which XLA folds away (a
    traced 1.0 compiles to another program, equal to the last bit or two only). `state=` draws
    from another prior of the same structure with the same compiled programs."""
    graphdef, own_state = nnx.split(prior)

    def run(s, key, n, temperature):
        model = nnx.merge(graphdef, s)
        return model.sample(key, n) if temperature is None else model.sample(key, n, temperature)

    jitted = jax.jit(run, static_argnums=(2, 3))
    return lambda key, n, temperature=None, state=own_state: np.asarray(jitted(state, key, n, temperature))


@pytest.mark.slow  # 8-12 s a sampler on the 2-core CPU: three programs, each compiled once
@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "heun"])
def test_temperature_one_is_the_default_and_below_one_shrinks_the_spread(sampler):
    """T = 1 draws what sample(key, n) draws, bit for bit; T = 1/2 shrinks a trained-looking
    prior's spread, and the N(0, I) prior's (network at zero: every sampler is then linear in
    z_1 and the per-step noise, all scaled by T) by exactly T."""
    small = {"sampler": sampler, "sample_steps": 4, "channels": (4, 8), "bottleneck": 16}
    standard, key = sampler_of(build((3, 3, 2), **small)), jax.random.key(3)
    trained = nnx.state(perturbed(build((3, 3, 2), **small), 0.1))
    default = standard(key, 2000, state=trained)
    np.testing.assert_array_equal(default, standard(key, 2000, 1.0, state=trained))
    cold = standard(key, 2000, 0.5, state=trained)
    assert np.isfinite(cold).all() and spread(cold) < 0.5 * spread(default)
    ratio = np.std(standard(key, 2000, 0.5)) / np.std(standard(key, 2000, 1.0))
    assert ratio == pytest.approx(0.5, abs=0.02)
    if sampler == "heun":  # exact for N(0, I) at any step count: x = z_1 / alpha_0
        assert np.std(standard(key, 2000)) == pytest.approx(1.0, abs=0.03)
    if sampler == "dpmpp_2m":  # its second-order term: first order (DDIM) shrinks N(0, I) to sd 0.6 in 4 steps
        assert np.std(standard(key, 2000)) == pytest.approx(1.0, abs=0.1)
    if sampler == "dpmpp_2m_sde":  # sd 0.86 in 4 steps, where the ancestral sampler's is 0.51
        assert np.std(standard(key, 2000)) == pytest.approx(1.0, abs=0.15)


def test_log_prob_is_a_function_of_each_latent_alone():
    prior = perturbed(build((2, 2, 1), channels=(4,), bottleneck=16, bound_samples=2), 0.1)
    log_prob = jax.jit(prior.log_prob)
    z = jax.random.normal(jax.random.key(0), (6, 2, 2, 1))
    whole = np.asarray(log_prob(z))
    np.testing.assert_allclose(np.asarray(log_prob(z[::-1])), whole[::-1], rtol=1e-6)  # its place in the batch
    np.testing.assert_allclose(np.asarray(log_prob(jnp.concatenate([z[3:5], z[:4]]))[:2]), whole[3:5], rtol=1e-6)


@pytest.mark.slow  # ~18 s each on the 2-core CPU, nearly all of it building and perturbing the prior
@pytest.mark.parametrize("shape, size", [((7, 7, 4), {}), ((5, 3, 2), {"channels": (8, 16)}),
                                         ((12, 9, 1), {"channels": (4, 8, 8)})])
def test_unet_output_at_a_position_depends_on_the_whole_latent(shape, size):
    """At the default size on the main config's latent, and at other shapes and depths: a
    perturbation check (`dependence`) that every input position has an element whose change
    alone changes the output channels at position (h - 1, 0)."""
    prior = perturbed(build(shape, **size), 0.05)

    def corner(x):  # (B, h w c) -> (B, 1, c): the output channels at position (h - 1, 0)
        return prior.net(x.reshape(-1, *shape), jnp.full((x.shape[0],), 0.4))[:, None, shape[0] - 1, 0]

    moved = dependence(corner, jax.random.normal(jax.random.key(0), (math.prod(shape),)))  # (1, h w c)
    seen = moved.reshape(shape).any(axis=-1)  # (h, w): the input positions that move it
    assert seen.all(), f"{(~seen).sum()} positions unseen"


def test_default_size_is_near_the_pixelcnn_prior_at_the_main_config():
    config = fashion_mnist.get_config()
    shape = tuple(config.vae.conv.latent_shape)
    def abstract(name):  # shapes only: nothing initialized, nothing compiled
        return nnx.eval_shape(lambda: priors.build(name, shape, config.prior))

    diffusion = abstract("diffusion")
    assert type(diffusion.net).__name__ == "UNet"  # network='auto' on a spatial latent
    ratio = num_params(diffusion) / num_params(abstract("pixelcnn"))
    assert 0.8 < ratio < 1.25, ratio


@pytest.mark.parametrize("field, value, message", [
    ("network", "resnet", "network='resnet'"), ("sampler", "euler", "sampler='euler'"),
    ("schedule", "cosine", "schedule='cosine'"), ("sample_steps", 0, "sample_steps=0"),
    ("gamma_min", 6.0, "gamma_min=6.0"), ("learn_endpoints", True, "learn_endpoints=True"),
])
def test_bad_config_is_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"config.prior.diffusion.*{message}"):
        build((7, 7, 4), **{field: value})
    with pytest.raises(ValueError, match="network='unet' needs a spatial latent"):
        build((8,), network="unet")


@pytest.mark.slow
def test_fitted_to_a_mixture_its_bound_is_tight_and_every_sampler_finds_the_modes(tmp_path):
    """Stage 2's fit (the negative bound) on 4 Gaussians with the EMA of the weights: the mean
    bound is below the mean true log-density (it is a bound: the model is not the truth and
    the bound has slack) by under 0.1 nats; the probability-flow ODE's estimate of the same
    model is within 0.05 nats of the bound (measured: 0.005); every sampler puts a quarter of its
    draws in each mode (5,000 draws: sd 0.006)."""
    train, held = mixture_data(jax.random.key(0), 20000), mixture_data(jax.random.key(1), 5000)
    config = fit_config("diffusion")
    config.prior.update(num_epochs=15, ema_decay=0.999)  # measured: bound 0.044 nats from the entropy
    config.prior.diffusion.update(hidden=128, num_blocks=2, ode_steps=25)
    (tmp_path / "priors").mkdir()
    prior = prior_fits.fit_gradient(config, workdir_lib.Workdir(str(tmp_path)), "diffusion",
                                     priors.build("diffusion", (2,), config.prior, seed=0),
                                     lambda i: (train, jnp.full_like(train, -jnp.inf)), len(train), held[:1000],
                                     jax.random.key(2))
    records = read_metrics(tmp_path)
    assert "fit_loss/diffusion" in next(r for r in records if r["split"] == "train")  # trained on -bound
    heldout = [r["latent_nll/diffusion"] for r in records if r["split"] == "validation"]
    assert len(heldout) == 15 and heldout[-1] < heldout[0] - 0.5  # the bound, every epoch

    bound, truth = float(jax.jit(prior.log_prob)(held).mean()), float(true_log_prob(held).mean())
    assert truth - 0.1 < bound < truth, (bound, truth)
    assert evaluation_data.latent_nll(prior, held) == pytest.approx(-bound, abs=1e-3)
    ode = float(jax.jit(prior.log_prob_ode)(held).mean())
    assert abs(ode - bound) < 0.05, (ode, bound)

    for sampler, steps in (("ancestral", 256), ("ddim", 32), ("dpmpp_2m", 8), ("dpmpp_2m_sde", 10), ("heun", 16)):
        prior.sampler, prior.sample_steps = sampler, steps
        samples = sampler_of(prior)(jax.random.key(3), 5000)
        quadrants = np.histogram2d(samples[:, 0], samples[:, 1], bins=[[-9, 0, 9], [-9, 0, 9]])[0].ravel()
        np.testing.assert_allclose(quadrants / len(samples), 0.25, atol=0.03, err_msg=sampler)
