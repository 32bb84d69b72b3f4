"""The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) and what separates it from a prior.

ELBO surgery (Hoffman & Johnson 2016): the ELBO's average KL term splits exactly as
    E_n KL(q(z|x_n) || p(z)) = I(x; z) + KL(q(z) || p(z))   [mutual_info + marginal_kl].

Estimator. q(z) is the mixture of the N posteriors of an evaluated set, so log q(z) is
computed exactly (a log-sum-exp over all N components, chunked); only the expectations over
z ~ q(z) are Monte Carlo, with M draws (pick n uniformly, then z ~ q(z|x_n)). The numbers
are therefore unbiased for *this finite mixture*; as an estimate of the population
aggregate posterior they are biased: I(x; z) <= log N always, and with sharp posteriors in
many dimensions the components barely overlap, mutual_info saturates near log N and
marginal_kl (= average KL - mutual_info) is overestimated by what log N cuts off.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from priors import gaussians
from vae.models import losses


def _flat(a):
    return a.reshape(a.shape[0], -1)


@functools.partial(jax.jit, static_argnames="chunk")
def _log_q_rows(z, means, logvars, chunk):
    """log q(z) for a chunk of rows z (B, D): the uniform mixture of all N posteriors."""
    n = means.shape[0]
    return gaussians.log_mixture(z, means, logvars, jnp.full((n,), -math.log(n)), chunk=chunk)


def log_aggregate_posterior(z, means, logvars, *, chunk: int = 4096, z_chunk: int = 1000, desc=None):
    """log q(z) for z (M, *latent) under the mixture of N posteriors (means/logvars (N, *latent)).
    Accurate to ~1e-4 nats in float32 however sharp the posteriors (`priors.gaussians`)."""
    z, means, logvars = _flat(jnp.asarray(z)), _flat(jnp.asarray(means)), _flat(jnp.asarray(logvars))
    out = [_log_q_rows(z[i : i + z_chunk], means, logvars, chunk)
           for i in tqdm(range(0, len(z), z_chunk), desc=desc or "log q(z)", leave=False, disable=desc is False)]
    return jnp.concatenate(out)


def sample_aggregate_posterior(key, means, logvars, num_samples: int):
    """(z, n): draws z ~ q(z) and the index n of the posterior each came from."""
    k1, k2 = jax.random.split(key)
    n = jax.random.randint(k1, (num_samples,), 0, means.shape[0])
    z = means[n] + jnp.exp(0.5 * logvars[n]) * jax.random.normal(k2, (num_samples, *means.shape[1:]))
    return z, n


def elbo_surgery(key, means, logvars, log_prior, *, num_samples: int = 10000, batch: int = 1000) -> dict:
    """{'average_kl', 'mutual_info', 'marginal_kl'} in nats, for the prior `log_prior`.

    All three come from the same draws, so average_kl = mutual_info + marginal_kl holds
    for the estimates exactly (up to float rounding).
    """
    means, logvars = jnp.asarray(means), jnp.asarray(logvars)
    z, n = sample_aggregate_posterior(key, means, logvars, num_samples)
    log_q_z = log_aggregate_posterior(z, means, logvars, desc="marginal KL")
    log_q_zx = losses.gaussian_log_prob(z, means[n], logvars[n])
    log_p = jnp.concatenate([log_prior(z[i : i + batch]) for i in range(0, num_samples, batch)])
    mi = float(jnp.mean(log_q_zx - log_q_z))
    marginal = float(jnp.mean(log_q_z - log_p))
    return {"average_kl": mi + marginal, "mutual_info": mi, "marginal_kl": marginal,
            "mutual_info_bound_log_n": math.log(means.shape[0])}


def heldout_log_q(key, ref_means, ref_logvars, train_means, train_logvars, *, num: int = 10000) -> np.ndarray:
    """log q(z) (the mixture of training posteriors) at encoded held-out latents z ~ q(z|x),
    x from `ref_*` (the validation split): the reference for the hole threshold."""
    ref_z, _ = sample_aggregate_posterior(key, jnp.asarray(ref_means), jnp.asarray(ref_logvars), num)
    return np.asarray(log_aggregate_posterior(ref_z, train_means, train_logvars, desc="held-out log q(z)"))


def hole_threshold(heldout_log_q_values) -> float:
    """The log q(z) below which a latent is in a hole: the 1st percentile of log q(z) (the
    mixture of training posteriors) over encoded *held-out* latents, `heldout_log_q`'s values.

    Held-out, not training, latents: a training latent is scored by a mixture that holds its
    own posterior, which in high dimensions dominates the sum, so their 1st percentile lies
    above the density of any new point; every prior, q(z) itself included, would then
    score a hole rate near 1. With held-out latents the rate of q(z)'s own draws is ~1%.
    """
    return float(np.percentile(heldout_log_q_values, 1.0))


def prior_hole_rate(prior_z, train_means, train_logvars, threshold: float) -> dict:
    """Share of prior samples whose log q(z) is below `threshold` (see hole_threshold), and
    their median log q(z).

    The rate counts tail mass only. Held-out latents' log q(z) can have a long left tail
    (Fashion-MNIST: 1st percentile -858 nats, median -356), so a prior whose samples all
    sit at mediocre density (N(0, I): median -570, 1st percentile -775) can score a lower
    rate than a learned prior that is typically much closer (PixelCNN: median -459).
    Read `median_log_q` beside it, against the held-out latents' own median.
    """
    log_q = np.asarray(log_aggregate_posterior(prior_z, train_means, train_logvars, desc="prior hole rate"))
    return {"prior_hole_rate": float(np.mean(log_q < threshold)), "median_log_q": float(np.median(log_q))}
