"""Ex-post Gaussian mixture prior (Ghosh et al. 2020, "From variational to deterministic
autoencoders"; pythae's GMM sampler), fitted by EM in JAX. Spatial latents are flattened.

covariance='full' keeps a Cholesky factor per component; 'diag' a variance vector. `reg` is
added to every variance so that components stay non-singular in the 196-dim latents.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors import gaussians
from priors.registry import Spec, register


class GMMParam(nnx.Variable):
    """Fitted by EM, not by gradients (so never picked up by an nnx.Param filter)."""


class GMM(nnx.Module):
    def __init__(self, latent_shape, num_components=20, covariance="full", reg=1e-4):
        if covariance not in ("full", "diag"):
            raise ValueError(f"config.prior.gmm.covariance={covariance!r}; expected 'full' or 'diag'")
        self.latent_shape = tuple(latent_shape)
        self.covariance = covariance
        self.reg = float(reg)
        k, d = num_components, math.prod(latent_shape)
        self.log_weights = GMMParam(jnp.full((k,), -math.log(k)))
        self.means = GMMParam(jnp.zeros((k, d)))
        # full: lower Cholesky factors of the covariances; diag: variances.
        self.scale = GMMParam(jnp.broadcast_to(jnp.eye(d), (k, d, d)) if covariance == "full" else jnp.ones((k, d)))

    def component_log_probs(self, x):
        """x (N, D) -> (N, K) log N(x; mu_k, Sigma_k), one component at a time (no (N, K, D) tensor)."""
        d = x.shape[-1]
        means = self.means[...]
        if self.covariance == "diag":
            return gaussians.diag_log_probs(x, means, jnp.log(self.scale[...]))
        chol = self.scale[...]
        # Sigma_k^-1 = A_k^T A_k with A_k = chol_k^-1: Mahalanobis = |A_k (x - mu_k)|^2, with
        # the difference taken first (no cancellation) and no TF32 in the matmul.
        inv = jax.vmap(lambda c: jax.scipy.linalg.solve_triangular(c, jnp.eye(d), lower=True))(chol)
        maha = jax.lax.map(
            lambda a: jnp.sum(jnp.matmul(x - a[1], a[0].T, precision=gaussians.HIGHEST) ** 2, -1), (inv, means)).T
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * (d * gaussians.LOG_2PI + log_det[None] + maha)

    def log_prob(self, z):
        x = z.reshape(z.shape[0], -1)
        return jax.nn.logsumexp(self.component_log_probs(x) + self.log_weights[...][None], axis=-1)

    def sample(self, key, n: int, *, temperature=1.0):
        """A component by its weight, then its Gaussian with the covariance times temperature²
        (the weights and means are kept: each component narrows around its mean)."""
        key_k, key_e = jax.random.split(key)
        k = jax.random.categorical(key_k, self.log_weights[...], shape=(n,))
        eps = temperature * jax.random.normal(key_e, (n, self.means.shape[-1]))
        if self.covariance == "diag":
            x = self.means[...][k] + jnp.sqrt(self.scale[...][k]) * eps
        else:
            x = self.means[...][k] + jnp.einsum("nij,nj->ni", self.scale[...][k], eps)
        return x.reshape(n, *self.latent_shape)

    # ------------------------------------------------------------------ EM

    def init_from_data(self, key, x):
        """Means at K distinct random data points; every covariance the data's."""
        k = self.means.shape[0]
        idx = jax.random.choice(key, x.shape[0], (k,), replace=False)
        self.means[...] = x[idx]
        centered = x - x.mean(0)
        if self.covariance == "diag":
            self.scale[...] = jnp.broadcast_to(centered.var(0) + self.reg, self.scale.shape)
        else:
            cov = centered.T @ centered / x.shape[0] + self.reg * jnp.eye(x.shape[1])
            self.scale[...] = jnp.broadcast_to(jnp.linalg.cholesky(cov), self.scale.shape)

    def em_step(self, x):
        """One EM iteration in place; returns the mean log-likelihood *before* the update."""
        log_joint = self.component_log_probs(x) + self.log_weights[...][None]
        log_norm = jax.nn.logsumexp(log_joint, axis=-1, keepdims=True)
        resp = jnp.exp(log_joint - log_norm)  # (N, K)
        nk = resp.sum(0) + 1e-10
        means = (resp.T @ x) / nk[:, None]
        if self.covariance == "diag":
            second = (resp.T @ x**2) / nk[:, None]
            self.scale[...] = jnp.maximum(second - means**2, 0.0) + self.reg
        else:
            d = x.shape[1]

            def cov(r_k, mu_k, n_k):  # one component at a time keeps memory at O(N D)
                c = x - mu_k
                return (r_k[:, None] * c).T @ c / n_k + self.reg * jnp.eye(d)

            self.scale[...] = jnp.linalg.cholesky(jax.lax.map(lambda a: cov(*a), (resp.T, means, nk)))
        self.means[...] = means
        self.log_weights[...] = jnp.log(nk / x.shape[0])
        return jnp.mean(log_norm)


def fit(gmm: GMM, key, z, num_iters: int):
    """Runs EM on latents z (N, *latent_shape) under jit; returns (gmm, log-likelihood per iteration)."""
    x = z.reshape(z.shape[0], -1)
    gmm.init_from_data(key, x)
    graphdef, state = nnx.split(gmm)

    @jax.jit
    def run(state):
        def body(state, _):
            model = nnx.merge(graphdef, state)
            ll = model.em_step(x)
            return nnx.state(model), ll

        return jax.lax.scan(body, state, None, length=num_iters)

    state, trace = run(state)
    nnx.update(gmm, state)
    return gmm, trace


register(Spec(
    name="gmm",
    fit="em",
    build=lambda latent_shape, c, rngs: GMM(latent_shape, c.num_components, c.covariance, c.reg),
    em=lambda prior, key, z, c: fit(prior, key, z, c.num_iters),
    config=dict(num_components=20, covariance="full", num_iters=100, reg=1e-4),
    smoke=dict(num_components=4, covariance="diag", num_iters=20),  # 2k latents cannot support 98x98 covariances
    doc="ex-post Gaussian mixture, fitted by EM",
))
