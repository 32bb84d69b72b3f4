"""Flax NNX encoders/decoders and the VAE that holds them.

Four families:
  * `mlp`:    vector latent (d,), dense layers;
  * `conv`:   spatial latent (H/4, W/4, c), two stride-2 convolutions each way: the shape the
    PixelCNN prior models;
  * `resnet`: spatial latent at H/2^(levels - 1), residual blocks with GroupNorm (`vae.models.resnet`),
    sized for colour images on an accelerator;
  * `vq`:     the conv stacks around a vector quantizer: a (H/4, W/4) map of integer codes
    (`vae.models.vq.VQVAE`, the same interface with `latents='categorical'`).
The posterior of the first three is a diagonal Gaussian (mean, log-variance). The decoder returns raw
parameters per pixel; `vae.models.losses` turns them into a likelihood (`config.vae.likelihood`):
Bernoulli logits (binarized), a discretized logistic's mean and log-scale per channel (8-bit
grey), or a discretized logistic mixture over RGB with linearly conditioned channels (8-bit
colour: 10 parameters per component).

The prior stage 1 trains with (`config.vae.prior`): 'normal', N(0, I) with the analytic KL;
'vamp', the VampPrior over this encoder (`priors.vamp`); or a registered gradient-fitted
prior ('pixelcnn', 'transformer', 'made', 'realnvp'), built from config.prior.<name> and
trained jointly with the VAE, the KL then a single-sample estimate log q(z|x) - log p(z).
The learned prior lives in the VAE (`VAE.prior`), so it is in every checkpoint.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

import priors
from priors.vamp import VampPrior
from vae.models import losses
from vae.errors import ConfigError
from vae.models.layers import depth_to_space, posterior
from vae.models.resnet import ResNetDecoder, ResNetEncoder
from vae.data.input_pipeline import image_shape
from vae.models.vq import VQVAE, VectorQuantizer

LIKELIHOODS = ("bernoulli", "logistic", "logistic_mixture")
# Mixed precision: layers compute in this dtype; parameters, the posterior and the decoder
# output (hence the loss) stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")


class MLPEncoder(nnx.Module):
    def __init__(self, image_shape, hidden, latent_dim, *, rngs, dtype=jnp.float32):
        sizes = [math.prod(image_shape), *hidden]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], 2 * latent_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        return posterior(self.out(h))


class MLPDecoder(nnx.Module):
    def __init__(self, image_shape, hidden, latent_dim, out_channels, *, rngs, dtype=jnp.float32):
        sizes = [latent_dim, *reversed(hidden)]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out_shape = (*image_shape[:2], out_channels)
        self.out = nnx.Linear(sizes[-1], math.prod(self.out_shape), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = z
        for layer in self.layers:
            h = nnx.gelu(layer(h))
        return self.out(h).reshape(z.shape[0], *self.out_shape)


class ConvEncoder(nnx.Module):
    """-> the posterior (mean, logvar), or with gaussian=False the latent_channels themselves (VQ's z_e)."""

    def __init__(self, image_shape, channels, latent_channels, *, rngs, dtype=jnp.float32, gaussian=True):
        c1, c2 = channels
        self.gaussian = gaussian
        self.down1 = nnx.Conv(image_shape[-1], c1, (3, 3), strides=2, dtype=dtype, rngs=rngs)  # 28 -> 14
        self.down2 = nnx.Conv(c1, c2, (3, 3), strides=2, dtype=dtype, rngs=rngs)  # 14 -> 7
        self.out = nnx.Conv(c2, (2 if gaussian else 1) * latent_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = nnx.gelu(self.down1(x))
        h = nnx.gelu(self.down2(h))
        return posterior(self.out(h)) if self.gaussian else self.out(h)


class ConvDecoder(nnx.Module):
    def __init__(self, image_shape, channels, latent_channels, out_channels, *, rngs, dtype=jnp.float32):
        c1, c2 = channels
        self.conv_in = nnx.Conv(latent_channels, c2, (3, 3), dtype=dtype, rngs=rngs)
        self.up1 = nnx.Conv(c2, 4 * c1, (3, 3), dtype=dtype, rngs=rngs)  # 7 -> 14 after depth_to_space
        self.up2 = nnx.Conv(c1, 4 * c1, (3, 3), dtype=dtype, rngs=rngs)  # 14 -> 28
        self.out = nnx.Conv(c1, out_channels, (3, 3), dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = nnx.gelu(self.conv_in(z))
        h = depth_to_space(nnx.gelu(self.up1(h)))
        h = depth_to_space(nnx.gelu(self.up2(h)))
        return self.out(h)


class VAE(nnx.Module):
    """q(z|x) = N(mean, exp(logvar)), a decoder giving p(x|z)'s parameters, and the prior p(z)
    it trains with: N(0, I) (`prior` None) or a learned one, trained jointly (`prior_name`)."""

    latents = "continuous"  # what priors it takes (`priors.registry.Spec.latents`); VQVAE: 'categorical'
    num_codes = None

    def __init__(self, encoder, decoder, latent_shape, likelihood, prior=None, prior_name: str = "normal"):
        self.encoder = encoder
        self.decoder = decoder
        self.latent_shape = tuple(latent_shape)
        self.likelihood = likelihood
        self.prior = prior
        self.prior_name = prior_name

    @property
    def joint_prior_label(self) -> str | None:
        """How reports name the prior trained with this VAE ('joint_<name>'); None for N(0, I)."""
        return None if self.prior is None else f"joint_{self.prior_name}"

    def encode(self, x):
        """x: (B, H, W, C) in [0, 1] -> mean, logvar: (B, *latent_shape), float32."""
        return self.encoder(x)

    def log_prior(self, z):
        """log p(z) under the prior the VAE trains with -> (B,)."""
        return losses.standard_normal_log_prob(z) if self.prior is None else self.prior.log_prob(z)

    def sample_prior(self, key, n: int):
        return jax.random.normal(key, (n, *self.latent_shape)) if self.prior is None else self.prior.sample(key, n)

    def elbo(self, x, key, *, beta: float = 1.0, kl: str = "analytic"):
        """The ELBO terms (`losses.elbo`) of images x with one z ~ q(z|x) drawn from `key`; under
        a learned prior the KL is the single-sample estimate at that z."""
        mean, logvar, z, out = self(x, key)
        log_prior = None if self.prior is None else self.prior.log_prob
        return losses.elbo(x, mean, logvar, z, out, self.likelihood, beta=beta, kl=kl, log_prior=log_prior)

    def train_terms(self, x, key, **kwargs):
        """What a training step minimizes ('loss') and logs: the ELBO terms. (A model with
        running statistics, the VQ-VAE's codebook, also updates them here.)"""
        return self.elbo(x, key, **kwargs)

    def iwae(self, x, key, *, k: int, log_prior):
        """(IWAE bound with k importance samples, ELBO from the same draws) per example, under
        the prior `log_prior`, or (P, B) under each of a tuple of P priors from the same draws
        (`losses.iwae_bound`, 10 draws at a time)."""
        return losses.iwae_bound(self.encode, self.decode, self.likelihood, x, key, k=k, log_prior=log_prior,
                                 chunk=min(k, 10) if k % 10 == 0 else k, with_elbo=True)

    def decode(self, z):
        """z: (B, *latent_shape) -> decoder output (B, H, W, C * channels per pixel), float32."""
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x, key):
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        return mean, logvar, z, self.decode(z)


def latent_shape_from_config(vae_config, image_shape) -> tuple[int, ...]:
    if vae_config.arch == "mlp":
        if vae_config.latent_dim < 1:
            raise ConfigError(f"config.vae.latent_dim={vae_config.latent_dim} must be >= 1")
        return (int(vae_config.latent_dim),)
    if vae_config.arch == "vq":
        if image_shape[0] % 4 or image_shape[1] % 4:
            raise ConfigError(f"config.vae.arch='vq' downsamples by 4, which does not divide {image_shape[:2]}")
        return (image_shape[0] // 4, image_shape[1] // 4)
    if vae_config.arch in ("conv", "resnet"):
        factor = 4 if vae_config.arch == "conv" else 2 ** (len(vae_config.resnet_widths) - 1)
        shape = tuple(int(s) for s in vae_config.latent_shape)
        want = (image_shape[0] // factor, image_shape[1] // factor)
        if image_shape[0] % factor or image_shape[1] % factor:
            raise ConfigError(f"config.vae.resnet_widths={tuple(vae_config.resnet_widths)} resample {image_shape[:2]} "
                              f"images by {factor}, which does not divide them; use fewer levels")
        if len(shape) != 3 or shape[:2] != want or shape[2] < 1:
            raise ConfigError(
                f"config.vae.latent_shape={shape} does not fit the {vae_config.arch} decoder: it downsamples "
                f"{image_shape[:2]} images by {factor}, so the latent must be ({want[0]}, {want[1]}, c) "
                "with c >= 1"
            )
        return shape
    raise ConfigError(f"config.vae.arch={vae_config.arch!r} is unknown; expected 'mlp', 'conv', 'resnet' or 'vq'")


def likelihood_from_config(config, image_channels: int) -> str:
    """config.vae.likelihood; 'auto': binarized data -> Bernoulli, 8-bit grey -> discretized
    logistic, 8-bit colour -> the discretized logistic mixture (8-bit: bits/dim reported)."""
    name = config.vae.get("likelihood", "auto")
    if name == "auto":
        return "bernoulli" if config.data.binarize else "logistic" if image_channels == 1 else "logistic_mixture"
    if name not in LIKELIHOODS:
        raise ConfigError(f"config.vae.likelihood={name!r}; expected 'auto' or one of {LIKELIHOODS}")
    if (name == "bernoulli") != bool(config.data.binarize):
        raise ConfigError(f"config.vae.likelihood={name!r} does not fit config.data.binarize={config.data.binarize}: "
                          "Bernoulli is the likelihood of binarized data, the logistics of 8-bit pixels")
    if name == "logistic_mixture" and image_channels != 3:
        raise ConfigError(f"config.vae.likelihood='logistic_mixture' models RGB pixels; these images have "
                          f"{image_channels} channel(s): use 'logistic'")
    return name


def decoder_channels(likelihood: str, image_channels: int, mixtures: int) -> int:
    """Channels of the decoder output per pixel: the likelihood's parameters."""
    return {"bernoulli": image_channels, "logistic": 2 * image_channels, "logistic_mixture": 10 * mixtures}[likelihood]


def build_vae(config, image_shape, *, rngs: nnx.Rngs, compute_dtype: str = "float32") -> VAE:
    """The VAE described by `config.vae` (and the likelihood implied by `config.data`)."""
    vc = config.vae
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"config.train.compute_dtype={compute_dtype!r}; expected one of {COMPUTE_DTYPES}")
    dtype = jnp.dtype(compute_dtype)
    latent_shape = latent_shape_from_config(vc, image_shape)
    likelihood = likelihood_from_config(config, image_shape[-1])
    out_channels = decoder_channels(likelihood, image_shape[-1], int(vc.get("logistic_mixtures", 10)))
    if vc.arch == "vq":
        return build_vqvae(config, image_shape, latent_shape, likelihood, out_channels, rngs, dtype)
    if vc.arch == "mlp":
        hidden = tuple(vc.hidden)
        encoder = MLPEncoder(image_shape, hidden, latent_shape[0], rngs=rngs, dtype=dtype)
        decoder = MLPDecoder(image_shape, hidden, latent_shape[0], out_channels, rngs=rngs, dtype=dtype)
    elif vc.arch == "resnet":
        widths, blocks = tuple(vc.resnet_widths), int(vc.resnet_blocks)
        encoder = ResNetEncoder(image_shape, widths, blocks, latent_shape[-1], rngs=rngs, dtype=dtype)
        decoder = ResNetDecoder(image_shape, widths, blocks, latent_shape[-1], out_channels, rngs=rngs, dtype=dtype)
    else:
        channels = tuple(vc.channels)
        encoder = ConvEncoder(image_shape, channels, latent_shape[-1], rngs=rngs, dtype=dtype)
        decoder = ConvDecoder(image_shape, channels, latent_shape[-1], out_channels, rngs=rngs, dtype=dtype)
    prior_name = vc.get("prior", "normal")
    return VAE(encoder, decoder, latent_shape, likelihood, build_stage1_prior(config, prior_name, encoder,
                                                                               image_shape, latent_shape, rngs),
               prior_name)


def build_vqvae(config, image_shape, latent_shape, likelihood, out_channels, rngs, dtype) -> VQVAE:
    """The conv encoder/decoder of arch='conv' around a K x D codebook (config.vae.num_codes, code_dim)."""
    vc = config.vae
    if vc.get("prior", "normal") != "normal":
        raise ConfigError(f"config.vae.prior={vc.prior!r}: the VQ-VAE trains with the uniform prior over codes; "
                          "leave it 'normal' and fit learned priors to the codes in stage 2")
    channels, k, d = tuple(vc.channels), int(vc.num_codes), int(vc.code_dim)
    if k < 2 or d < 1:
        raise ConfigError(f"config.vae.num_codes={k}, code_dim={d}: expected num_codes >= 2 and code_dim >= 1")
    encoder = ConvEncoder(image_shape, channels, d, rngs=rngs, dtype=dtype, gaussian=False)
    decoder = ConvDecoder(image_shape, channels, d, out_channels, rngs=rngs, dtype=dtype)
    quantizer = VectorQuantizer(k, d, decay=float(vc.codebook_decay), dead_threshold=float(vc.dead_code_threshold),
                                rngs=rngs)
    return VQVAE(encoder, decoder, quantizer, latent_shape, likelihood, float(vc.commitment))


def stage1_priors() -> tuple[str, ...]:
    """What config.vae.prior may name: N(0, I), the VampPrior, or a registered prior fitted by
    gradient with an exact log-density (one that can sit in the ELBO)."""
    joint = [n for n in priors.registry.names(fit="gradient") if priors.registry.get(n).density == "exact"]
    return ("normal", "vamp", *joint)


def build_stage1_prior(config, name: str, encoder, image_shape, latent_shape, rngs):
    """The learned prior config.vae.prior names (None for 'normal', N(0, I))."""
    if name == "normal":
        return None
    if name == "vamp":
        return VampPrior(encoder, image_shape, latent_shape, int(config.vae.get("vamp_components", 500)), rngs=rngs)
    if name not in stage1_priors():
        raise ConfigError(f"config.vae.prior={name!r}; expected one of {stage1_priors()}: 'normal', 'vamp' or a "
                          "gradient-fitted prior with an exact log-density, trained jointly")
    section = config.prior.get(name) if "prior" in config else None
    if section is None and priors.registry.get(name).config:
        raise ConfigError(f"config.prior.{name} is missing: the hyper-parameters of the prior config.vae.prior "
                          "names")
    try:
        prior = priors.registry.get(name).build(tuple(latent_shape), section, rngs)
    except ValueError as e:
        raise ConfigError(f"config.vae.prior={name!r}: {e}") from None
    if section is not None and section.get("dropout", 0.0) > 0:
        raise ConfigError(f"config.prior.{name}.dropout={section.dropout}: a prior trained in the ELBO runs without "
                          "dropout; set it to 0 (stage 2's fits use it)")
    if hasattr(prior, "fit_loss"):
        raise ConfigError(f"config.vae.prior={name!r} is fitted by its own objective, not by log p(z): it cannot "
                          "be trained in the ELBO")
    return prior


def create_vae(config, seed: int | None = None) -> VAE:
    """The VAE of `config` (its data, vae and train.compute_dtype fields), initialized from
    `seed` (default config.seed): what every checkpoint of a run is restored into."""
    seed = config.seed if seed is None else seed
    dtype = config.train.get("compute_dtype", "float32")
    return build_vae(config, image_shape(config.data.name), rngs=nnx.Rngs(seed), compute_dtype=dtype)
