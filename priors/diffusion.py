"""A latent diffusion prior fitted and scored by its variational bound: VDM (Kingma et al. 2021,
"Variational Diffusion Models"; google-research/vdm) in continuous time, over the VAE's latents x.

Forward process, t in [0, 1]: z_t = alpha_t x + sigma_t eps, eps ~ N(0, I), alpha_t^2 =
sigmoid(-gamma(t)), sigma_t^2 = sigmoid(gamma(t)); gamma = -log SNR is the noise schedule
(`priors.diffusion_schedule`: VDM's fixed linear one, or its learned monotone network).

The model. x is continuous, so VDM's discrete decoder at t = 0 becomes a Gaussian one:
    p(x) = int N(x; z_0 / alpha_0, sigma_0^2 / alpha_0^2 I) p(z_0) dz_0,
with z_1 ~ N(0, I) and the reverse process from the denoiser eps_hat(z_t, gamma_t) in between
(`priors.diffusion_nets`; eps_hat = sigma_t (z_t + f), f = 0 being N(0, I)'s exact denoiser).
At gamma_0 = -13.3 the decoder's sd exp(gamma_0 / 2) is 1.3e-3: p is the latent density
smoothed at that scale.

VDM's bound, -log p(x) <= L(x) = recon + prior + diffusion, with
    recon     = E_q(z_0|x) -log N(x; z_0/alpha_0, sigma_0^2/alpha_0^2) = d/2 (log 2 pi + gamma_0 + 1),
    prior     = KL(q(z_1 | x) || N(0, I)) = 1/2 sum(sigma_1^2 + alpha_1^2 x^2 - log sigma_1^2 - 1),
    diffusion = 1/2 E_{t ~ U(0,1), eps} gamma'(t) ||eps - eps_hat(z_t, gamma_t)||^2.
Computed as a control variate: N(0, I)'s denoiser sigma_t z_t has E_eps||eps - sigma_t z_t||^2 =
alpha_t^4 d + sigma_t^2 alpha_t^2 ||x||^2 in closed form, whose gamma'-weighted integral over t
is too; with recon and prior it adds up to `reference_bound`,
    R(x) = -d/2 log 2 pi - d/2 softplus(gamma_0) - d/2 sigma_0^2 - alpha_0^2 ||x||^2 / 2,
and only the network's excess is estimated by Monte Carlo:
    log p(x) >= R(x) - 1/2 E_{t, eps} gamma'(t) (||eps - eps_hat||^2 - ||eps - sigma_t z_t||^2).
Same expectation as VDM's sum, far less noise: in continuous latents ||eps||^2 (chi-square, d
degrees of freedom, weighted by gamma' ~ 18) would dominate the estimate at every t, and cancels
here. R is exact: with f = 0 the bound is R, below N(x; 0, (1 + sigma_0^2) / alpha_0^2 I) by
KL(q(z_0 | x) || p(z_0 | x)) (tests/priors/test_diffusion.py derives it). t is drawn
low-discrepancy (VDM's antithetic t_i = (u + i / B) mod 1).

  fit_loss   -(the bound) per latent, one (t, eps) per latent: stage 2 minimizes the negative
             bound, i.e. maximizes a bound on the likelihood (train records: fit_loss/diffusion,
             nats per latent). A learned schedule's shape gets the gradient of the estimate's
             variance instead (`diffusion_schedule.variance_gradient`).
  log_prob   the bound, averaged over `bound_samples` stratified t = (u + m / M) mod 1, each at
             eps and -eps (antithetic), drawn from a key made of the latent's own bits: a
             deterministic function of each latent alone (its batch does not matter), with
             independent noise across latents, whose expectation is a lower bound on log p(x)
             (`Spec.density = "bound"`). Stage 2's held-out latent NLL is then an upper bound;
             an IWAE over it only nearly (its noise, ~4 nats per Fashion latent at 16 draws,
             passes through the log-sum-exp: ~1 nat optimistic at k = 10, docs/priors.md).
  sample     `sampler` ('ancestral', 'ddim', 'dpmpp_2m', 'dpmpp_2m_sde', 'heun';
             `priors.diffusion_samplers`) in `sample_steps` steps; `temperature` T draws
             z_1 ~ N(0, T^2 I). The default, DPM-Solver++(2M) SDE in 10 steps, matched the
             256-step ancestral sampler's image FD on Fashion-MNIST (docs/priors.md).
  log_prob_ode  the probability-flow ODE's log-density, an estimate (neither bound), to compare.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors import diffusion_nets, diffusion_samplers, diffusion_schedule
from priors.registry import Spec, register

BOUND_KEY = 0  # log_prob's draws of t and eps: from this key and each latent's bits


def latent_keys(z, key):
    """(B,) keys, one per latent, folded from `key` and a hash of the latent's float32 bits: the
    same latent always gets the same key (log_prob is a function of z), different latents
    independent draws (their noise averages out over a data set, as it would not if shared)."""
    bits = jax.lax.bitcast_convert_type(z.reshape(z.shape[0], -1).astype(jnp.float32), jnp.uint32)
    odd = jnp.arange(bits.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) | jnp.uint32(1)
    return jax.vmap(lambda h: jax.random.fold_in(key, h))(jnp.sum(bits * odd, axis=-1, dtype=jnp.uint32))


def excess_loss(net, gamma_min, gamma_max, endpoints, shape_values, data):
    """(B,): 1/2 gamma'(t) (||eps - eps_hat||^2 - ||eps - sigma_t z_t||^2) at one t per latent,
    for latents x (B, ...) and noise eps; gamma(t) = g0 + (g1 - g0) u(t). A function of its
    arguments only (so `variance_gradient` can route each part's gradient)."""
    (g0, g1), (u, du), (x, eps) = endpoints, shape_values, data
    gamma, slope = g0 + (g1 - g0) * u, (g1 - g0) * du
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    alpha, sigma = jnp.sqrt(jax.nn.sigmoid(-gamma))[expand], jnp.sqrt(jax.nn.sigmoid(gamma))[expand]
    z_t = alpha * x + sigma * eps
    correction = sigma * net(z_t, (gamma - gamma_min) / (gamma_max - gamma_min))  # eps_hat - sigma_t z_t
    # ||base - c||^2 - ||base||^2 with base = eps - sigma_t z_t, without the cancelling squares
    gain = jnp.sum((correction * (correction - 2.0 * (eps - sigma * z_t))).reshape(x.shape[0], -1), axis=-1)
    return 0.5 * slope * gain


class Diffusion(nnx.Module):
    def __init__(self, latent_shape, network="auto", channels=(32, 64), bottleneck=64, hidden=256, num_blocks=2,
                 schedule="fixed", gamma_min=-13.3, gamma_max=5.0, learn_endpoints=False, sampler="dpmpp_2m_sde",
                 sample_steps=10, bound_samples=16, ode_steps=50, exact_divergence_dims=16, *, rngs: nnx.Rngs):
        if sampler not in diffusion_samplers.SAMPLERS:
            raise ValueError(f"config.prior.diffusion.sampler={sampler!r}; expected one of "
                             f"{diffusion_samplers.SAMPLERS}")
        counts = {"sample_steps": sample_steps, "bound_samples": bound_samples, "ode_steps": ode_steps}
        for field, value in counts.items():
            if int(value) < 1:
                raise ValueError(f"config.prior.diffusion.{field}={value}; expected a positive integer")
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.d = math.prod(self.latent_shape)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.sampler, self.sample_steps = sampler, int(sample_steps)
        self.bound_samples, self.ode_steps = int(bound_samples), int(ode_steps)
        self.exact_divergence = self.d <= exact_divergence_dims
        self.schedule = diffusion_schedule.build(schedule, gamma_min, gamma_max, bool(learn_endpoints), rngs=rngs)
        self.net = diffusion_nets.build(network, self.latent_shape, channels, bottleneck, hidden, num_blocks, rngs=rngs)

    # ----------------------------------------------------------------- schedule and denoiser

    def gamma(self, t):
        """(gamma(t), dgamma/dt) for times t of any shape."""
        g0, g1 = self.schedule.endpoints()
        u, du = self.schedule.shape(t)
        return g0 + (g1 - g0) * u, (g1 - g0) * du

    def score_correction(self, z, gamma):
        """f(z, nu) at z (B, ...) and noise levels gamma (B,): -grad log p_t(z) - z, as predicted."""
        return self.net(z, (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min))

    def eps_hat(self, z, gamma):
        """The predicted noise at z (B, ...) and noise levels gamma (B,): sigma (z + f)."""
        sigma = jnp.sqrt(jax.nn.sigmoid(gamma)).reshape(-1, *(1,) * (z.ndim - 1))
        return sigma * (z + self.score_correction(z, gamma))

    # ----------------------------------------------------------------- the bound

    def reference_bound(self, x):
        """(B,): the bound's closed-form part, R(x) (module docstring): recon + prior + N(0, I)'s
        denoiser's diffusion loss, which depends on gamma_0 alone."""
        g0, _ = self.schedule.endpoints()
        squares = jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)
        return (-0.5 * self.d * (math.log(2 * math.pi) + jax.nn.softplus(g0) + jax.nn.sigmoid(g0))
                - 0.5 * jax.nn.sigmoid(-g0) * squares)

    def excess(self, x, eps, t, *, variance_gradient: bool = False):
        """(B,): the Monte-Carlo part of -bound at times t (B,) and noise eps (B, ...); with
        `variance_gradient` (fit_loss, learned shape) its gradient trains the schedule's shape
        for a less noisy estimate."""
        endpoints, shape_values = self.schedule.endpoints(), self.schedule.shape(t)
        if not (variance_gradient and self.schedule.learned_shape):
            return excess_loss(self.net, self.gamma_min, self.gamma_max, endpoints, shape_values, (x, eps))
        graphdef, state = nnx.split(self.net)
        gamma_min, gamma_max = self.gamma_min, self.gamma_max

        def per_example(params, shape, data):
            net_state, ends = params
            return excess_loss(nnx.merge(graphdef, net_state), gamma_min, gamma_max, ends, shape, data)

        return diffusion_schedule.variance_gradient(per_example, (state, endpoints), shape_values, (x, eps))

    def fit_loss(self, z, key):
        """(B,): -(the bound) of each latent, one draw of (t, eps) each, t antithetic over the batch."""
        k_t, k_eps = jax.random.split(key)
        b = z.shape[0]
        t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / b, 1.0)
        eps = jax.random.normal(k_eps, z.shape)
        return self.excess(z, eps, t, variance_gradient=True) - self.reference_bound(z)

    def log_prob(self, z):
        """(B,): the bound on log p(z), averaged over `bound_samples` draws of (t, eps), each at
        eps and -eps, t stratified; the draws come from a key made of the latent's own bits."""
        keys = latent_keys(z, jax.random.key(BOUND_KEY))
        m = self.bound_samples
        offsets = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, m)))(keys)

        def draw(total, i):
            t = jnp.mod(offsets + i / m, 1.0)
            eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), self.latent_shape))(keys)
            return total + 0.5 * (self.excess(z, eps, t) + self.excess(z, -eps, t)), None

        total, _ = jax.lax.scan(draw, jnp.zeros(z.shape[0]), jnp.arange(m))
        return self.reference_bound(z) - total / m

    def log_prob_ode(self, z):
        """(B,): the probability-flow ODE's log-density estimate (`ode_steps` RK4 steps)."""
        return diffusion_samplers.ode_log_prob(self, z, self.ode_steps, self.exact_divergence)

    # ----------------------------------------------------------------- samples

    def sample(self, key, n: int, temperature: float = 1.0):
        """n latents by `sampler` in `sample_steps` steps from z_1 ~ N(0, temperature^2 I)
        ('ancestral' also scales its per-step noise by temperature). temperature=1.0, a Python
        float, draws what sample(key, n) draws, bit for bit (a traced 1.0 compiles to another
        program: equal to float rounding)."""
        return diffusion_samplers.sample(self, self.sampler, key, n, self.sample_steps, temperature)


def build(latent_shape, c, rngs):
    return Diffusion(latent_shape, c.network, tuple(c.channels), c.bottleneck, c.hidden, c.num_blocks, c.schedule,
                     c.gamma_min, c.gamma_max, c.learn_endpoints, c.sampler, c.sample_steps, c.bound_samples,
                     c.ode_steps, c.exact_divergence_dims, rngs=rngs)


register(Spec(
    name="diffusion",
    fit="gradient",
    build=build,
    config=dict(network="auto", channels=(32, 64), bottleneck=64, hidden=256, num_blocks=2, schedule="fixed",
                gamma_min=-13.3, gamma_max=5.0, learn_endpoints=False, sampler="dpmpp_2m_sde",
                sample_steps=10, bound_samples=16, ode_steps=50, exact_divergence_dims=16,
                # Its stage-2 settings (priors.OWN_FIT_SETTINGS), beside the shared
                # config.prior.*: a higher learning rate and an EMA of the weights (docs/priors.md).
                learning_rate=3e-3, ema_decay=0.999),
    smoke=dict(channels=(8, 16), bottleneck=32, hidden=32, num_blocks=1, sample_steps=4, bound_samples=4,
               ode_steps=10),
    density="bound",
    doc="VDM diffusion (U-Net over spatial latents, MLP over vectors); log_prob is its variational bound",
))
