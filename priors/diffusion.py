"""A latent diffusion prior: a noise-prediction network over the flattened latent under the
variance-preserving SDE (Song et al. 2021, the continuous-time limit of DDPM).

Forward process, t in [t_min, 1]: z_t = a_t z + s_t e, e ~ N(0, I), with
beta(t) = beta_min + t (beta_max - beta_min), a_t = exp(-1/2 int_0^t beta), s_t^2 = 1 - a_t^2.

  network    e_theta(z_t, t) = s_t z_t + MLP(z_t, t), the MLP's last layer at zero: the prior
             starts as exactly N(0, I) and learns corrections to it.
  fit        `fit_loss`: denoising score matching in the e-parametrization,
             ||e - e_theta(z_t, t)||^2 summed over the latent, t ~ U(t_min, 1). Stage 2 uses it
             instead of -log p (a prior may define `fit_loss(z, key)`).
  sample     the reverse-time SDE, Euler-Maruyama, `sample_steps` steps in one `lax.scan`.
  log_prob   the probability-flow ODE dz/dt = -1/2 beta(t) (z - e_theta(z, t) / s_t), run from
             t_min to 1 with `ode_steps` RK4 steps: log p(z) = log N(z_1; 0, I) + int_{t_min}^1
             div(dz/dt) dt. The divergence is exact (one forward-mode pass per latent element)
             up to `exact_divergence_dims` elements, else Hutchinson's estimate with fixed
             Rademacher probes. So log_prob is an **estimate** of the model's log-density (ODE
             discretization, and probe noise in high dimension), neither a lower nor an upper
             bound; an IWAE under it is an estimate too (`Spec.density = "estimate"`, which
             the report prints beside the numbers).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from priors.registry import Spec, register


class NoiseNet(nnx.Module):
    """An MLP with residual blocks over the flattened latent and Fourier features of t; its
    last layer starts at zero."""

    def __init__(self, d: int, hidden: int, num_blocks: int, *, rngs: nnx.Rngs):
        self.frequencies = 16
        self.inp = nnx.Linear(d + 2 * self.frequencies, hidden, rngs=rngs)
        self.norms = nnx.List([nnx.LayerNorm(hidden, rngs=rngs) for _ in range(num_blocks)])
        self.blocks = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs) for _ in range(num_blocks)])
        self.out = nnx.Linear(hidden, d, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, t):
        f = t[:, None] * np.pi * 2.0 ** np.arange(self.frequencies)[None] / 8.0  # periods 16 .. 1/2048 in t
        h = self.inp(jnp.concatenate([x, jnp.sin(f), jnp.cos(f)], axis=-1))
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(jax.nn.gelu(norm(h)))
        return self.out(jax.nn.gelu(h))


class Diffusion(nnx.Module):
    def __init__(self, latent_shape, hidden=512, num_blocks=4, beta_min=0.1, beta_max=20.0, t_min=1e-3,
                 sample_steps=500, ode_steps=50, exact_divergence_dims=16, *, rngs: nnx.Rngs):
        self.latent_shape = tuple(latent_shape)
        self.d = math.prod(self.latent_shape)
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)
        self.sample_steps, self.ode_steps = int(sample_steps), int(ode_steps)
        self.exact_divergence = self.d <= exact_divergence_dims
        self.net = NoiseNet(self.d, hidden, num_blocks, rngs=rngs)

    # ----------------------------------------------------------------- the SDE

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha_sigma(self, t):
        log_alpha = -0.5 * (self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min))
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

    def noise(self, x, t):
        """e_theta(x, t) = s_t x + net(x, t): for N(0, I) latents the best prediction is s_t x,
        so the prior starts as exactly N(0, I) (the VAE's own prior) and learns corrections."""
        return self.alpha_sigma(t)[1][:, None] * x + self.net(x, t)

    def fit_loss(self, z, key):
        """(B,): the denoising loss of latents z at random times (what stage 2 minimizes)."""
        x = z.reshape(z.shape[0], -1)
        k_t, k_e = jax.random.split(key)
        t = jax.random.uniform(k_t, (x.shape[0],), minval=self.t_min, maxval=1.0)
        e = jax.random.normal(k_e, x.shape)
        a, s = self.alpha_sigma(t)
        return jnp.sum((e - self.noise(a[:, None] * x + s[:, None] * e, t)) ** 2, axis=-1)

    def ode_drift(self, x, t):
        """dx/dt of the probability-flow ODE at x (B, d), t (B,)."""
        _, s = self.alpha_sigma(t)
        return -0.5 * self.beta(t)[:, None] * (x - self.noise(x, t) / s[:, None])

    # ----------------------------------------------------------------- density and samples

    def _drift_and_divergence(self, x, t, probes):
        if self.exact_divergence:
            def one(xi, ti):
                jac = jax.jacfwd(lambda y: self.ode_drift(y[None], ti[None])[0])(xi)
                return jnp.trace(jac)
            return self.ode_drift(x, t), jax.vmap(one)(x, t)
        drift, jvp = jax.jvp(lambda y: self.ode_drift(y, t), (x,), (probes,))
        return drift, jnp.sum(probes * jvp, axis=-1)

    def log_prob(self, z):
        x = z.reshape(z.shape[0], -1)
        probes = jax.random.rademacher(jax.random.key(0), x.shape, dtype=x.dtype)  # fixed: a deterministic estimate
        dt = (1.0 - self.t_min) / self.ode_steps

        def f(state, t):
            drift, div = self._drift_and_divergence(state[0], jnp.full(x.shape[0], t), probes)
            return drift, div

        def rk4(carry, i):
            (y, total), t = carry, self.t_min + i * dt
            k1 = f((y,), t)
            k2 = f((y + 0.5 * dt * k1[0],), t + 0.5 * dt)
            k3 = f((y + 0.5 * dt * k2[0],), t + 0.5 * dt)
            k4 = f((y + dt * k3[0],), t + dt)
            y = y + dt / 6.0 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            total = total + dt / 6.0 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            return (y, total), None

        (y, total), _ = jax.lax.scan(rk4, (x, jnp.zeros(x.shape[0])), jnp.arange(self.ode_steps))
        return jnp.sum(jax.scipy.stats.norm.logpdf(y), axis=-1) + total

    def sample(self, key, n: int, *, temperature=1.0):
        """The reverse-time SDE from t = 1 to t_min, Euler-Maruyama, from z_1 ~ N(0, temperature² I)."""
        dt = (1.0 - self.t_min) / self.sample_steps
        key, k0 = jax.random.split(key)

        def step(x, i):
            t = jnp.full(n, 1.0 - i * dt)
            _, s = self.alpha_sigma(t)
            b = self.beta(t)[:, None]
            score = -self.noise(x, t) / s[:, None]
            x = x + (0.5 * b * x + b * score) * dt  # reverse time: dx = [-f + g^2 score] (-dt)
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape)
            return x + jnp.sqrt(b * dt) * noise * (i < self.sample_steps - 1), None

        x, _ = jax.lax.scan(step, temperature * jax.random.normal(k0, (n, self.d)), jnp.arange(self.sample_steps))
        return x.reshape(n, *self.latent_shape)


register(Spec(
    name="diffusion",
    fit="gradient",
    build=lambda latent_shape, c, rngs: Diffusion(
        latent_shape, c.hidden, c.num_blocks, c.beta_min, c.beta_max, c.t_min, c.sample_steps, c.ode_steps,
        c.exact_divergence_dims, rngs=rngs),
    config=dict(hidden=512, num_blocks=4, beta_min=0.1, beta_max=20.0, t_min=1e-3, sample_steps=500, ode_steps=50,
                exact_divergence_dims=16),
    smoke=dict(hidden=32, num_blocks=1, sample_steps=50, ode_steps=10),
    density="estimate",
    doc="VP-SDE diffusion over the flattened latent; log_prob by the probability-flow ODE (an estimate)",
))
