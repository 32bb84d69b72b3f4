"""DALL-E's discrete VAE (Ramesh et al. 2021): a map of integer codes with a true categorical
posterior (`config.vae.arch='dvae'`).

config.vae.dvae: channels (the conv stacks' widths), num_codes (K), code_dim (D), the relaxation's
temperature tau_start -> tau_end over tau_anneal_steps (tau_schedule 'cosine' or 'exponential'),
and the KL's weight kl_weight_start -> kl_weight_end over kl_warmup_steps (cosine).

  x -> conv encoder (`vae.models.conv.ConvEncoder`'s stack) -> logits (B, H/4, W/4, K): q(c|x),
       independent over the h w positions
    -> training: y = softmax((logits + g) / tau), g ~ Gumbel (`vae.models.gumbel`); evaluation:
       one-hot codes (sampled, or the argmax: `encode`)
    -> y @ codebook (K x D, learned by gradient; DALL-E's 1x1 convolution on the one-hots)
    -> conv decoder (`vae.models.conv.ConvDecoder` on D channels) -> p(x | c)

The prior is uniform over the K^(h w) code maps, so the KL is analytic (`gumbel.kl_to_uniform`):
  ELBO(x) = E_q[log p(x|c)] - sum_positions (log K - H(q_pos)).
Training maximizes the relaxed ELBO: log p(x|y) at one relaxed sample, minus kl_weight(t) * KL.
The decoder sees relaxed one-hots in training and exact one-hots at evaluation; that gap closes
as tau falls, while the gradient's variance grows like 1/tau. DALL-E anneals tau from 1 to 1/16
over 150k updates of a large model. A run of a few thousand steps stops at 1/4 here: on MNIST's
smoke dVAE (320 steps), tau_end 1/2, 1/4, 1/16 gave validation ELBOs of -145.4, -143.3, -144.2
nats; the relaxed training ELBO sat 18, 7, 2 nats above the hard-code one, and the gradient norm
was 37, 44, 75 (clipped to 1: noise spent as steps). The KL weight starts at 0 (the encoder first
learns to use the codes, as DALL-E's does) and ends at 1, the ELBO itself (DALL-E ends at 6.6 to
spread codebook usage; that is no longer a bound's objective).

The step the schedules read is the model's own counter (`steps_taken`, a `vq.Statistic`: the
train step writes it back beside the VQ codebook's statistics, and the checkpoint keeps it), so
it equals the train state's step without the train step passing one.

Evaluation: `elbo` draws one hard code map c ~ q(c|x) for E_q[log p(x|c)] (unbiased) and adds
the analytic KL. `encode` gives the argmax code map (the mode of q), which the usage statistics
count, as they do the VQ-VAE's codes. `iwae` samples k hard maps from q(c|x) per image:
log w = log p(x|c) + log p(c) - log q(c|x), a true IWAE bound under any prior over code maps,
unlike the VQ-VAE's point-mass bound (`point_mass` False: the report keeps the ELBO column).

Stage 2 fits the code priors to draws c ~ q(c|x) (`sample_posterior`, a fresh one per training
image per epoch; `prior.fit_target='mean'`: the argmax maps), and scores them on draws too: the
prior maximizing E_q[log p(c)], the term of the bound a prior changes, is the aggregate posterior.
The uniform prior keeps q(c|x) broad (its ELBO rewards entropy: 233 of 272 nats after the full
MNIST run), so the argmax maps are far from its draws, and priors fitted to them scored a worse
bound than uniform (156 against 114 nats). DALL-E fits its transformer to argmax codes because
its posterior is nearly deterministic (tau 1/16, KL weight 6.6): there the two targets agree.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from priors.uniform import Uniform
from vae.errors import ConfigError
from vae.models import gumbel, losses, registry
from vae.models.conv import DOWNSAMPLING, ConvDecoder, ConvEncoder
from vae.models.vq import Statistic, perplexity


class DiscreteVAE(nnx.Module):
    """The VAE interface over a categorical posterior: `encode` gives the argmax code map (and
    None where a Gaussian posterior has its log-variance), `decode` takes code maps."""

    latents = "categorical"
    prior = None
    prior_name = "uniform"
    joint_prior_label = None
    point_mass = False  # q(c|x) is a distribution: the report's bound samples it (the VQ-VAE's does not)

    def __init__(self, encoder, decoder, codebook, latent_shape, likelihood, *, tau=(1.0, 0.25, 1000, "cosine"),
                 kl_weight=(0.0, 1.0, 500)):
        self.encoder, self.decoder = encoder, decoder
        self.codebook = codebook  # nnx.Param (K, D)
        self.latent_shape = tuple(latent_shape)  # (h, w): one code per position
        self.likelihood = likelihood
        self.tau_start, self.tau_end, self.tau_anneal_steps, self.tau_schedule = tau
        self.kl_weight_start, self.kl_weight_end, self.kl_warmup_steps = kl_weight
        self.steps_taken = Statistic(jnp.zeros((), jnp.float32))  # training steps so far (float: grad-safe)

    @property
    def num_codes(self) -> int:
        return self.codebook[...].shape[0]

    def schedules(self, step):
        """(tau, kl_weight) at training step `step`."""
        tau = gumbel.schedule(step, self.tau_start, self.tau_end, self.tau_anneal_steps, self.tau_schedule)
        return tau, gumbel.schedule(step, self.kl_weight_start, self.kl_weight_end, self.kl_warmup_steps)

    def logits(self, x):
        """x (B, H, W, C) in [0, 1] -> logits of q(c|x), (B, h, w, K) float32."""
        return self.encoder(x).astype(jnp.float32)

    def encode(self, x):
        """x (B, H, W, C) in [0, 1] -> (argmax codes (B, h, w) int32, None): the mode of q(c|x)."""
        return jnp.argmax(self.logits(x), axis=-1).astype(jnp.int32), None

    def decode(self, codes):
        """Integer code maps (B, h, w) -> decoder output: the one-hots times the codebook is its rows."""
        return self.decoder(jnp.take(self.codebook[...], codes, axis=0)).astype(jnp.float32)

    def _decode_relaxed(self, y):
        z = jnp.einsum("...k,kd->...d", y, self.codebook[...], precision=jax.lax.Precision.HIGHEST)
        return self.decoder(z).astype(jnp.float32)

    def log_prior(self, codes):
        """log p(c) under the uniform prior of training: -h w log K for every code map."""
        return Uniform(self.latent_shape, self.num_codes).log_prob(codes)

    def sample_prior(self, key, n: int):
        return Uniform(self.latent_shape, self.num_codes).sample(key, n)

    def sample_posterior(self, key, x, n: int | None = None):
        """Hard code maps c ~ q(c|x), one categorical draw per position from the encoder's logits:
        (B, h, w), or (n, B, h, w) with n given. What stage 2 fits and scores the code priors on."""
        logits = self.logits(x)
        shape = logits.shape[:-1] if n is None else (n, *logits.shape[:-1])
        return jax.random.categorical(key, logits, axis=-1, shape=shape).astype(jnp.int32)

    def elbo(self, x, key, *, beta: float = 1.0, kl: str = "analytic"):
        """{'elbo', 'recon', 'kl', 'loss'} per example: 'recon' is log p(x|c) at one code map
        c ~ q(c|x) drawn from `key` (unbiased for E_q[log p(x|c)]), 'kl' the analytic
        KL(q(c|x) || uniform). (`beta` and `kl` are the continuous VAE's and change nothing
        here: the KL's weight is the schedule's, in training only.)"""
        logits = self.logits(x)
        codes = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
        recon = losses.log_likelihood(self.likelihood, x, self.decode(codes))
        kl_term = gumbel.kl_to_uniform(logits)
        return {"elbo": recon - kl_term, "recon": recon, "kl": kl_term, "loss": kl_term - recon}

    def train_terms(self, x, key, **kwargs):
        """The relaxed objective of one training step: 'loss' = -log p(x|y) + kl_weight * KL at
        one Gumbel-softmax sample y; 'elbo' = log p(x|y) - KL (relaxed: the decoder read y, not a
        one-hot). Also the step's 'tau' and 'kl_weight' and the batch's argmax-code 'perplexity'.
        Advances the step counter the schedules read."""
        step = jax.lax.stop_gradient(self.steps_taken[...])
        tau, kl_weight = self.schedules(step)
        logits = self.logits(x)
        y = gumbel.gumbel_softmax(key, logits, tau)
        recon = losses.log_likelihood(self.likelihood, x, self._decode_relaxed(y))
        kl_term = gumbel.kl_to_uniform(logits)
        counts = jnp.sum(jax.nn.one_hot(jnp.argmax(logits, -1), self.num_codes).reshape(-1, self.num_codes), 0)
        self.steps_taken[...] = step + 1.0
        per_batch = {"tau": tau, "kl_weight": kl_weight, "perplexity": perplexity(counts)}  # logged per example
        return {"elbo": recon - kl_term, "recon": recon, "kl": kl_term, "loss": kl_weight * kl_term - recon,
                **{name: jnp.full((x.shape[0],), v, jnp.float32) for name, v in per_batch.items()}}

    def iwae(self, x, key, *, k: int, log_prior):
        """(IWAE bound with k code maps c_i ~ q(c|x), ELBO) per example, under `log_prior`, or
        (P, B) each under a tuple of P priors from the same draws. `log_prior` functions take
        integer code maps (B, h, w) -> (B,). log w_i = log p(x|c_i) + log p(c_i) - log q(c_i|x);
        the bound is log mean_i exp(log w_i); the ELBO is mean_i [log p(x|c_i) + log p(c_i)] + H(q)
        (the entropy analytic: less variance than the mean of log w, the same expectation). The
        draws go 10 at a time (k a multiple of 10) inside a `lax.scan`: memory O(10 B)."""
        many = isinstance(log_prior, (tuple, list))
        log_priors = tuple(log_prior) if many else (log_prior,)
        chunk = min(k, 10) if k % 10 == 0 else k
        logits = self.logits(x)
        batch, num = x.shape[0], len(log_priors)
        xs = jnp.broadcast_to(x, (chunk, *x.shape)).reshape(chunk * batch, *x.shape[1:])

        def body(carry, key_i):
            codes = jax.random.categorical(key_i, logits, axis=-1, shape=(chunk, *logits.shape[:-1]))
            codes = codes.astype(jnp.int32)
            flat = codes.reshape(chunk * batch, *codes.shape[2:])
            log_px = losses.log_likelihood(self.likelihood, xs, self.decode(flat)).reshape(chunk, batch)
            log_pc = jnp.stack([lp(flat).reshape(chunk, batch) for lp in log_priors])  # (P, chunk, B)
            log_w = log_px + log_pc - gumbel.log_q(logits[None], codes)
            lse, total = carry
            return (jnp.logaddexp(lse, jax.nn.logsumexp(log_w, axis=1)), total + jnp.sum(log_px + log_pc, 1)), None

        init = (jnp.full((num, batch), -jnp.inf), jnp.zeros((num, batch)))
        (lse, total), _ = jax.lax.scan(body, init, jax.random.split(key, k // chunk))
        bound, elbo_ = lse - math.log(k), total / k + gumbel.entropy(logits)
        return (bound, elbo_) if many else (bound[0], elbo_[0])


def check(section) -> None:
    rules = [("channels", len(tuple(section.channels)) == 2 and min(section.channels) >= 1, "two widths >= 1"),
             ("num_codes", section.num_codes >= 2, ">= 2"), ("code_dim", section.code_dim >= 1, ">= 1"),
             ("tau_start", section.tau_start > 0, "> 0"), ("tau_end", section.tau_end > 0, "> 0"),
             ("tau_anneal_steps", section.tau_anneal_steps >= 0, ">= 0"),
             ("tau_schedule", section.tau_schedule in gumbel.SCHEDULES, f"one of {gumbel.SCHEDULES}"),
             ("kl_weight_start", section.kl_weight_start >= 0, ">= 0"),
             ("kl_weight_end", section.kl_weight_end >= 0, ">= 0"),
             ("kl_warmup_steps", section.kl_warmup_steps >= 0, ">= 0")]
    for field, ok, expected in rules:
        if not ok:
            raise ConfigError(f"config.vae.dvae.{field}={section[field]!r} is out of range; expected {expected}")


def latent_shape(section, image_shape) -> tuple[int, int]:
    if image_shape[0] % DOWNSAMPLING or image_shape[1] % DOWNSAMPLING:
        raise ConfigError(f"config.vae.arch='dvae' downsamples by {DOWNSAMPLING}, which does not divide "
                          f"{image_shape[:2]}")
    return (image_shape[0] // DOWNSAMPLING, image_shape[1] // DOWNSAMPLING)


def build(section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype) -> DiscreteVAE:
    """The conv stacks of arch='conv' around K logits per position and a K x D codebook."""
    channels, k, d = tuple(section.channels), int(section.num_codes), int(section.code_dim)
    encoder = ConvEncoder(image_shape, channels, k, rngs=rngs, dtype=dtype, gaussian=False)
    decoder = ConvDecoder(image_shape, channels, d, out_channels, rngs=rngs, dtype=dtype)
    codebook = nnx.Param(jax.random.normal(rngs.params(), (k, d)))
    tau = (float(section.tau_start), float(section.tau_end), int(section.tau_anneal_steps), str(section.tau_schedule))
    kl_weight = (float(section.kl_weight_start), float(section.kl_weight_end), int(section.kl_warmup_steps))
    return DiscreteVAE(encoder, decoder, codebook, latent_shape, likelihood, tau=tau, kl_weight=kl_weight)


registry.register(registry.Spec(
    name="dvae", build=build, latent_shape=latent_shape, check=check, latents="categorical",
    config={"channels": (32, 64), "num_codes": 256, "code_dim": 16, "tau_start": 1.0, "tau_end": 0.25,
            "tau_anneal_steps": 1000, "tau_schedule": "cosine", "kl_weight_start": 0.0, "kl_weight_end": 1.0,
            "kl_warmup_steps": 500},
    smoke={"channels": (8, 16), "num_codes": 32, "code_dim": 8, "tau_anneal_steps": 150, "kl_warmup_steps": 50},
    doc="DALL-E's discrete VAE: conv stacks around a categorical posterior over K codes per position, "
        "trained with the Gumbel-softmax relaxation"))
