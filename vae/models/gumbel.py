"""The categorical posterior of the discrete VAE (`vae.models.dvae`) as pure functions: its
Gumbel-softmax relaxation, its KL to the uniform prior, and the schedules of the relaxation's
temperature and of the KL's weight.

Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017, the "concrete" distribution). With
g_i ~ Gumbel(0, 1) i.i.d., argmax_i (l_i + g_i) is exactly Categorical(softmax(l)) (the
Gumbel-max trick); replacing the argmax by softmax((l + g) / tau) gives a point of the
simplex that is differentiable in l. As tau -> 0 the samples tend to the one-hot of that
categorical draw (and the gradient's variance grows like 1/tau); as tau -> oo every sample
tends to the centre 1/K, whatever l. At any tau the *argmax* of a sample is distributed as
softmax(l); its *mean* is not softmax(l) (tests check both).

KL to uniform. Per position, KL(q || U_K) = sum_k q_k log(q_k K) = log K - H(q); the posterior
factorizes over the h w positions and so does the uniform prior over code maps, so the KL of
the whole map is the sum over positions. It is analytic: the ELBO needs no sample for it.

Schedules. A value goes from `start` at step 0 to `end` at step `steps` and stays there:
'cosine' (DALL-E's, Ramesh et al. 2021: start + (end - start)(1 - cos(pi t / T)) / 2, flat
at both ends) or 'exponential' (geometric, start (end / start)^(t / T), Jang et al.'s decay
of tau; needs start, end > 0). `steps = 0` means `end` from the first step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SCHEDULES = ("cosine", "exponential")


def gumbel_softmax(key, logits, tau):
    """A relaxed one-hot sample softmax((logits + g) / tau), g ~ Gumbel(0, 1): (..., K) -> (..., K)."""
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    return jax.nn.softmax((logits.astype(jnp.float32) + g) / tau, axis=-1)


def entropy(logits):
    """H(q) of q = softmax(logits), summed over all but the leading (batch) and last (code) axes -> (B,)."""
    log_q = jax.nn.log_softmax(logits, axis=-1)
    h = -jnp.sum(jnp.exp(log_q) * log_q, axis=-1)
    return jnp.sum(h.reshape(h.shape[0], -1), axis=-1)


def kl_to_uniform(logits):
    """KL(q(c|x) || uniform over code maps) = sum over positions of (log K - H(q_pos)) -> (B,)."""
    positions = math.prod(logits.shape[1:-1])
    return positions * math.log(logits.shape[-1]) - entropy(logits)


def log_q(logits, codes):
    """log q(codes | x) = sum over positions of log softmax(logits)[code]: logits (..., h, w, K),
    integer codes (..., h, w) with the same leading axes -> (...)."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), codes[..., None], axis=-1)[..., 0]
    return jnp.sum(picked.reshape(*picked.shape[:-2], -1), axis=-1)


def schedule(step, start: float, end: float, steps: int, kind: str = "cosine"):
    """The value at `step` (an array: traced inside the train step) of a schedule from `start`
    at step 0 to `end` at step `steps` and after."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0) if steps > 0 else jnp.float32(1.0)
    if kind == "cosine":
        w = 0.5 * (1.0 - jnp.cos(jnp.pi * frac))
        value = (1.0 - w) * start + w * end
    elif kind == "exponential":
        value = start * (end / start) ** frac
    else:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")
    return jnp.where(frac >= 1.0, jnp.float32(end), value)  # exactly `end` from step `steps` on
