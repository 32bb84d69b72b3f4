import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

import priors
from configs import base
from priors import gmm as gmm_lib
from priors import mixture
from tests.conftest import read_metrics
from vae import workdir as workdir_lib
from vae.errors import PriorError
from vae.evaluation import evaluation_data
from vae.train import prior_fits, prior_stage


def small(name, shape, **kw):
    c = base.apply_smoke(base.get_base_config()).prior
    for k, v in kw.items():
        c[name][k] = v
    return priors.build(name, shape, c, seed=1)


def dependence(f, z, change=lambda z: z + 1.0):
    """What f's outputs depend on, by a perturbation check rather than a Jacobian (XLA:CPU
    compiles batched VJPs of convolutions slowly). f maps a batch (B, n) of flat inputs to
    (B, m, ...), an output being its trailing numbers; z is one input (n,). Returns [i, j], (m, n):
    output i differs, bitwise, when element j alone is changed to change(z)[j].
    Row j of one batch has element j changed; it is compared with row j of a batch of n copies
    of z, through the same jitted f: XLA:CPU may round a row differently by its place in the
    batch (the U-Net's convolutions do, in the rows past the last multiple of 4), so comparing
    with row 0 would see changes that are not there. No tolerance: a masked weight adds exactly
    0 * x = 0, so an output that does not depend on element j is computed from the same numbers
    in the same order, and stays identical."""
    n = z.shape[0]
    f = jax.jit(f)
    same = jnp.broadcast_to(z, (n, n))
    changed = jnp.where(jnp.eye(n, dtype=bool), change(z)[None], same)  # row j: element j changed
    out, ref = np.asarray(f(changed)), np.asarray(f(same))
    return np.any((out != ref).reshape(n, out.shape[1], -1), axis=-1).T


def jitter(model, scale, seed=0):
    """`model` with every parameter moved by scale * N(0, 1), biases and zero-initialized layers
    included. numpy draws: jax.random eagerly per parameter compiles once per shape (seconds)."""
    rng = np.random.default_rng(seed)
    noise = lambda a: a + scale * rng.standard_normal(a.shape).astype(a.dtype)  # noqa: E731
    nnx.update(model, jax.tree.map(noise, nnx.state(model, nnx.Param)))
    return model


@pytest.mark.parametrize("name, shape, size", [
    ("pixelcnn", (7, 7, 4), "default"), ("pixelcnn", (3, 5, 2), "smoke"), ("pixelcnn", (5, 2, 3), "smoke"),
    ("transformer", (7, 7, 4), "default"), ("transformer", (3, 5, 2), "smoke"), ("transformer", (6,), "smoke"),
    ("made", (6,), "smoke"),
])
@pytest.mark.slow
def test_every_conditional_sees_every_earlier_element_and_nothing_else(name, shape, size):
    """A perturbation check (`dependence`): changing element j changes the mixture parameters
    of every later element and of none at or before j (the raster/channel order)."""
    c = base.get_base_config()
    prior = priors.build(name, shape, (base.apply_smoke(c) if size == "smoke" else c).prior, seed=1)
    # random, non-trivial weights everywhere
    jitter(prior, 0.3)
    size = math.prod(shape)
    f = lambda z: prior.params(z.reshape(-1, *shape)).reshape(z.shape[0], size, -1)  # each element's mixture params
    seen = dependence(f, jax.random.normal(jax.random.key(0), (size,)))
    assert seen.shape == (size, size)
    assert not np.any(np.triu(seen))  # element i ignores every element at or after i
    rows, cols = np.tril_indices(size, -1)
    blind = [(int(i), int(j)) for i, j in zip(rows, cols) if not seen[i, j]]
    assert not blind, f"{len(blind)} (element, earlier element) pairs unseen, e.g. {blind[:5]}"  # every earlier one


def grid_mass(prior, lim=14.0, n=561):
    g = np.linspace(-lim, lim, n)
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logp = prior.log_prob(jnp.asarray(zz).reshape(-1, *prior.latent_shape))
    return float(jnp.exp(logp).sum()) * (g[1] - g[0]) ** 2


@pytest.mark.parametrize("name, shape, kw", [
    ("standard_normal", (2,), {}),
    ("made", (2,), {}),
    ("pixelcnn", (1, 2, 1), {}),
    ("pixelcnn", (1, 1, 2), {}),
    ("transformer", (2,), {}),
    ("transformer", (1, 1, 2), {}),
    ("gmm", (2,), {"covariance": "full"}),
    ("gmm", (2,), {"covariance": "diag"}),
])
@pytest.mark.slow
def test_density_integrates_to_one(name, shape, kw):
    prior = small(name, shape, **kw)
    if name == "gmm":
        x = jax.random.normal(jax.random.key(0), (500, 2)) * jnp.array([1.0, 2.0]) + 1.0
        gmm_lib.fit(prior, jax.random.key(1), x.reshape(-1, *shape), 10)
    elif name != "standard_normal":
        # Random weights, shrunk so that the conditionals' tails (their scales grow with
        # |z|) stay inside the integration grid; any weights give a normalized density.
        nnx.update(prior, jax.tree.map(lambda a: 0.3 * a, nnx.state(prior, nnx.Param)))
    assert abs(grid_mass(prior) - 1.0) < 0.01


def mixture_data(key, n):
    """4 Gaussians at (+-2, +-2), std 0.5: a known non-Gaussian density."""
    centers = jnp.array([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    k1, k2 = jax.random.split(key)
    return centers[jax.random.randint(k1, (n,), 0, 4)] + 0.5 * jax.random.normal(k2, (n, 2))


def true_log_prob(x):
    centers = jnp.array([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    d = ((x[:, None, :] - centers[None]) / 0.5) ** 2
    return jax.nn.logsumexp(-0.5 * d.sum(-1) - 2 * math.log(0.5) - math.log(2 * math.pi), axis=-1) - math.log(4)


def fit_config(name):
    c = base.get_base_config()
    c.prior.name = name
    c.prior.fit_target = "mean"  # fit the points themselves
    c.prior.num_epochs = 25
    c.prior.batch_size = 256
    c.prior.learning_rate = 3e-3
    c.prior.unroll = False  # no convolutions here: a rolled scan compiles faster (base.py)
    c.prior.made.hidden = (64, 64)
    c.prior.made.num_mixtures = 4
    c.prior.gmm.num_components = 4
    c.prior.transformer.update(features=32, num_layers=1, num_heads=2, num_mixtures=4)
    c.prior.realnvp.update(num_blocks=8, hidden=64)
    if name == "transformer":  # measured: 0.009 nats from the entropy in 12 epochs of 512 (29 s, not 43)
        c.prior.update(num_epochs=12, batch_size=512)
    return c


@pytest.mark.slow
@pytest.mark.parametrize("name", ["made", "gmm", "transformer", "realnvp"])
def test_fitting_recovers_a_known_density(name, tmp_path):
    train = mixture_data(jax.random.key(0), 20000)
    held = mixture_data(jax.random.key(1), 20000)
    entropy = -float(true_log_prob(held).mean())
    config = fit_config(name)
    prior = priors.build(name, (2,), config.prior, seed=0)
    logvar = jnp.full_like(train, -jnp.inf)
    (tmp_path / "priors").mkdir()
    wd, posteriors, key = workdir_lib.Workdir(str(tmp_path)), lambda i: (train, logvar), jax.random.key(2)
    if name == "gmm":
        prior = prior_fits.fit_em(config, wd, name, prior, posteriors, held, key)
    else:
        prior = prior_fits.fit_gradient(config, wd, name, prior, posteriors, len(train), held, key)
    nll = evaluation_data.latent_nll(prior, held)
    normal = evaluation_data.latent_nll(priors.StandardNormal((2,)), held)
    cov = np.cov(np.asarray(train).T)
    single = -float(jax.scipy.stats.multivariate_normal.logpdf(held, train.mean(0), cov).mean())
    # Affine couplings move mass between well-separated modes through thin bridges: RealNVP
    # ends 0.06 nats above the entropy here (measured), the autoregressive priors under 0.05.
    assert abs(nll - entropy) < (0.1 if name == "realnvp" else 0.05), (nll, entropy)
    assert nll < single - 0.5 and nll < normal - 0.5


def test_gmm_em_log_likelihood_never_decreases():
    x = mixture_data(jax.random.key(3), 3000)
    for cov in ("full", "diag"):
        g = priors.GMM((2,), num_components=6, covariance=cov, reg=0.0)
        _, trace = gmm_lib.fit(g, jax.random.key(4), x, 40)
        assert np.all(np.diff(np.asarray(trace)) >= -1e-4), cov


def test_mixture_head_log_prob_matches_its_sampler():
    params = jnp.array([0.3, -0.5, 1.0, -2.0, 0.5, 1.5, -1.0, -0.3, 0.2])  # K=3
    draws = mixture.sample(jax.random.key(0), jnp.broadcast_to(params, (100000, 9)))
    grid = jnp.linspace(-12, 12, 4001)
    density = np.asarray(jnp.exp(mixture.log_prob(jnp.broadcast_to(params, (4001, 9)), grid)))
    model_cdf = np.cumsum(density) * float(grid[1] - grid[0])
    assert abs(model_cdf[-1] - 1.0) < 1e-3  # the density integrates to 1 on the grid
    sample_cdf = np.searchsorted(np.sort(np.asarray(draws)), np.asarray(grid), side="right") / len(draws)
    # Kolmogorov-Smirnov distance of 100,000 draws: 0.006 is its 99.9% point when they follow
    # the density; a wrong weight, scale or location in either function moves it far past that.
    assert np.max(np.abs(sample_cdf - model_cdf)) < 0.008


@pytest.mark.slow
@pytest.mark.parametrize("name, fast", [("pixelcnn", "fast"), ("transformer", "cached")])
def test_fast_and_naive_sampling_agree(name, fast):
    prior = small(name, (4, 4, 3))
    graphdef, state = nnx.split(prior)
    sample = jax.jit(lambda s, k, mode: nnx.merge(graphdef, s).sample(k, 64, mode=mode), static_argnums=2)
    quick, naive = sample(state, jax.random.key(5), fast), sample(state, jax.random.key(5), "naive")
    # Same key, same element order, same draws: they differ only by float rounding of the
    # same network computed on one row/position (with cached activations) instead of the whole
    # canvas; a rounding difference in one element moves the later ones it conditions.
    np.testing.assert_allclose(np.asarray(quick), np.asarray(naive), atol=1e-3, rtol=1e-3)
    assert np.median(np.abs(np.asarray(quick) - np.asarray(naive))) < 1e-5
    assert not np.allclose(np.asarray(quick), np.asarray(sample(state, jax.random.key(6), fast)))


def test_smoke_priors_beat_standard_normal_and_match_latent_moments(smoke_workdir):
    nll = {}
    for m in read_metrics(smoke_workdir):
        if m.get("split") == "validation" and "prior" in m:
            nll[m["prior"]] = (m[f"latent_nll/{m['prior']}"], m["latent_nll/standard_normal"])
    assert set(nll) == {"gmm", "pixelcnn", "transformer"}
    for name, (learned, normal) in nll.items():
        assert learned < normal - 3.0, (name, learned, normal)  # nats per example
    # samples of the fitted PixelCNN have the training latents' moments
    from vae.data import input_pipeline

    wd = workdir_lib.open(smoke_workdir)
    config = wd.load_config()
    vae, _, _ = wd.restore_vae(config)
    ev = evaluation_data.EvalData(config, input_pipeline.load_dataset(config.data))
    mean, logvar = ev.posteriors(vae, "train")
    z = evaluation_data.draw_latents(jax.random.key(0), mean, logvar)
    prior = wd.load_prior("pixelcnn", vae.latent_shape)
    s = jax.jit(lambda k: prior.sample(k, 2000))(jax.random.key(1))
    per_channel = lambda a: (np.asarray(a).mean(axis=(0, 1, 2)), np.asarray(a).std(axis=(0, 1, 2)))
    (m_z, s_z), (m_s, s_s) = per_channel(z), per_channel(s)
    np.testing.assert_allclose(m_s, m_z, atol=0.15)
    np.testing.assert_allclose(s_s, s_z, rtol=0.15)


def test_prior_for_another_latent_shape_is_refused(smoke_workdir):
    with pytest.raises(PriorError, match=r"latent shape \(7, 7, 2\).*\(7, 7, 3\)"):
        workdir_lib.open(smoke_workdir).load_prior("pixelcnn", (7, 7, 3))
    with pytest.raises(PriorError, match="'flow' is not a registered prior"):
        prior_stage.prior_names(ConfigDict(dict(name="gmm,flow")))


@pytest.mark.slow
def test_fit_keeps_the_best_epoch_stops_early_and_stays_stopped(tmp_path):
    """Held-out latents wider than the training ones: the held-out NLL gets worse once the fit
    sharpens on the training clusters, so the best epoch is an early one."""
    from vae.workdir import checkpoint

    train = mixture_data(jax.random.key(0), 4000)
    held = 3.0 * jax.random.normal(jax.random.key(1), (2000, 2))
    config = fit_config("transformer")
    config.prior.update(num_epochs=12, patience=2, ema_decay=0.9)
    config.prior.transformer.dropout = 0.1
    (tmp_path / "priors").mkdir()
    wd = workdir_lib.Workdir(str(tmp_path))
    fit = lambda: prior_fits.fit_gradient(config, wd, "transformer", priors.build("transformer", (2,), config.prior),
                                           lambda i: (train, jnp.full_like(train, -jnp.inf)), len(train), held,
                                           jax.random.key(2))
    prior = fit()
    records = [r for r in read_metrics(tmp_path) if r["split"] == "validation"]
    nll = [r["latent_nll/transformer"] for r in records]
    best = int(np.argmin(nll))
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert len(records) == best + 1 + 2 < 12, nll  # two epochs without a new best, then stopped
    assert checkpoint.latest(wd.prior_checkpoints("transformer")) == records[best]["step"]
    assert abs(evaluation_data.latent_nll(prior, held) - nll[best]) < 1e-4  # what readers get is the best epoch
    train_state = checkpoint.restore(wd.prior_train_state("transformer"), None)
    assert not np.allclose(jax.tree.leaves(train_state["ema"])[0], jax.tree.leaves(train_state["params"])[0])
    fit()  # a rerun finds the fit converged: no epoch more
    assert len([r for r in read_metrics(tmp_path) if r["split"] == "validation"]) == len(records)


def test_a_train_state_saved_without_ema_resumes(tmp_path):
    """Train states written before stage 2 carried the EMA resume, averaging from then on."""
    from vae.workdir import checkpoint

    train, held = mixture_data(jax.random.key(0), 2000), mixture_data(jax.random.key(1), 500)
    config = fit_config("made")
    config.prior.update(num_epochs=2, ema_decay=0.5)
    (tmp_path / "priors").mkdir()
    wd = workdir_lib.Workdir(str(tmp_path))
    fit = lambda **kw: prior_fits.fit_gradient(config, wd, "made", priors.build("made", (2,), config.prior),
                                                lambda i: (train, jnp.full_like(train, -jnp.inf)), len(train), held,
                                                jax.random.key(2), **kw)
    fit(max_epochs_this_run=1)
    directory = wd.prior_train_state("made")
    state = checkpoint.restore(directory, None)
    step = int(state["step"])
    shutil.rmtree(os.path.join(directory, "latest", str(step)))
    checkpoint.save(directory, step, {k: v for k, v in state.items() if k != "ema"})  # the old layout
    prior = fit()
    assert [r["epoch"] for r in read_metrics(tmp_path) if r["split"] == "validation"] == [1, 2]
    assert "ema" in checkpoint.restore(directory, None)
    assert np.isfinite(evaluation_data.latent_nll(prior, held))


def perturbed(name, shape, scale):
    """Prior `name` (smoke size) with every parameter moved by scale * N(0, 1): non-trivial
    layers everywhere (a flow's couplings start as the identity)."""
    return jitter(small(name, shape), scale)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 2), (5,)])
def test_flow_log_det_is_the_jacobians_and_inverse_inverts(shape):
    prior = perturbed("realnvp", shape, 0.3)
    z = jax.random.normal(jax.random.key(0), (4, *shape))
    u, log_det = prior.forward(z)
    for i in range(len(z)):
        jac = jax.jacfwd(lambda x: prior.forward(x.reshape(1, *shape))[0][0])(z[i].reshape(-1))
        assert float(log_det[i]) == pytest.approx(float(jnp.linalg.slogdet(jac)[1]), abs=1e-3)
    # float32 through couplings with weights moved by 0.3: CPUs round differently (1.2e-4 off at
    # 1.62 on an AMD EPYC); an inverse that is wrong is off by tenths.
    np.testing.assert_allclose(np.asarray(prior.inverse(u)), np.asarray(z), rtol=2e-4, atol=1e-4)
    expected = jnp.sum(jax.scipy.stats.norm.logpdf(u), -1) + log_det
    np.testing.assert_allclose(np.asarray(prior.log_prob(z)), np.asarray(expected), rtol=1e-6)


def test_flow_density_integrates_to_one_and_its_samples_agree_with_it():
    prior = perturbed("realnvp", (2,), 0.1)  # 0.3 pushes mass past the grid
    g = np.linspace(-14.0, 14.0, 561)
    logp = prior.log_prob(jnp.asarray(np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)))
    cell = (g[1] - g[0]) ** 2
    assert float(jnp.exp(logp).sum()) * cell == pytest.approx(1.0, abs=0.01)
    entropy = -float((jnp.exp(logp) * logp).sum()) * cell  # 2.23 nats (N(0, I): 2.84)
    samples = prior.log_prob(prior.sample(jax.random.key(5), 20000))
    # -E[log p] over the model's own samples is its entropy: within 5 standard errors (~0.03)
    assert -float(samples.mean()) == pytest.approx(entropy, abs=5 * float(samples.std()) / math.sqrt(20000))
