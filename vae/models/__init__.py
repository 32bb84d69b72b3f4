"""Models: the encoder/decoder families behind an architecture registry, the VAE that holds
them, and the likelihoods and bounds as pure functions (`losses`).

Families (`config.vae.arch`, each with its settings in config.vae.<arch>):
  * `mlp`:    vector latent (d,), dense layers (`vae.models.mlp`);
  * `conv`:   spatial latent (H/4, W/4, c), two stride-2 convolutions each way: the shape the
              PixelCNN prior models (`vae.models.conv`);
  * `resnet`: spatial latent at H/2^(levels - 1), residual blocks with GroupNorm, sized for
              colour images on an accelerator (`vae.models.resnet`);
  * `vq`:     the conv stacks around a vector quantizer: a (H/4, W/4) map of integer codes
              (`vae.models.vq`, `latents='categorical'`);
  * `dvae`:   DALL-E's discrete VAE: the conv stacks around a categorical posterior over K codes
              per position, trained through the Gumbel-softmax relaxation (`vae.models.dvae`);
  * `vq2`:    VQ-VAE-2: a top and a bottom map of codes, flattened into one sequence, top first
              (`vae.models.vq2`, `latents='categorical'`, `levels`).
The continuous families' posterior is a diagonal Gaussian (`gaussian_vae.VAE`). The decoder
returns raw parameters per pixel; `losses` turns them into a likelihood (`config.vae.likelihood`):
Bernoulli logits (binarized), a discretized logistic's mean and log-scale per channel (8-bit
grey), or a discretized logistic mixture over RGB with linearly conditioned channels (8-bit
colour: 10 parameters per component).

The prior stage 1 trains with (`config.vae.prior`): 'standard_normal', N(0, I) with the analytic KL;
'vamp', the VampPrior over this encoder (`priors.vamp`); or a registered gradient-fitted
prior with an exact density ('pixelcnn', 'transformer', 'made', 'realnvp'), built from
config.prior.<name> and trained jointly with the VAE, the KL then a single-sample estimate
log q(z|x) - log p(z).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

import priors
from priors.vamp import VampPrior
from vae.data import registry as data_registry
from vae.errors import ConfigError
from vae.models import conv, dvae, mlp, registry, resnet, vq, vq2  # noqa: F401 - the modules register their architectures
from vae.models.gaussian_vae import STANDARD_NORMAL, VAE

LIKELIHOODS = ("bernoulli", "logistic", "logistic_mixture")
# Mixed precision: layers compute in this dtype; parameters, the posterior and the decoder
# output (hence the loss) stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")


def arch_section(vae_config):
    """config.vae.<arch>: the settings of the architecture config.vae.arch names."""
    spec = registry.get(vae_config.arch)
    section = vae_config.get(spec.name)
    if section is None:
        old = [k for k in ("latent_shape", "latent_dim", "channels", "num_codes") if k in vae_config]
        if old:  # the flat layout, before each architecture had its section
            raise ConfigError(f"config.vae.{spec.name} is missing and config.vae holds {old} directly: this config "
                              "comes from the older flat layout of config.vae; retrain with this code's configs")
        raise ConfigError(f"config.vae.{spec.name} is missing: the settings of the architecture config.vae.arch names")
    return section


def latent_shape_from_config(vae_config, image_shape) -> tuple[int, ...]:
    """The latent shape of config.vae's architecture for images of `image_shape`."""
    spec = registry.get(vae_config.arch)
    section = arch_section(vae_config)
    if spec.check is not None:
        spec.check(section)
    return tuple(spec.latent_shape(section, tuple(image_shape)))


def likelihood_from_config(config, image_channels: int) -> str:
    """config.vae.likelihood; 'auto': binarized data -> Bernoulli, 8-bit grey -> discretized
    logistic, 8-bit colour -> the discretized logistic mixture (8-bit: bits/dim reported)."""
    name = config.vae.likelihood
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


def build_vae(config, image_shape, *, rngs: nnx.Rngs, compute_dtype: str = "float32"):
    """The model described by `config.vae` (and the likelihood implied by `config.data`)."""
    vc = config.vae
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"config.train.compute_dtype={compute_dtype!r}; expected one of {COMPUTE_DTYPES}")
    spec = registry.get(vc.arch)
    latent_shape = latent_shape_from_config(vc, image_shape)
    likelihood = likelihood_from_config(config, image_shape[-1])
    out_channels = decoder_channels(likelihood, image_shape[-1], int(vc.logistic_mixtures))
    if spec.latents == "categorical" and vc.prior != STANDARD_NORMAL:
        raise ConfigError(f"config.vae.prior={vc.prior!r}: a model of code maps trains with the uniform prior "
                          f"over codes; leave it at {STANDARD_NORMAL!r} (the default) and fit learned priors to "
                          "the codes in stage 2")
    built = spec.build(arch_section(vc), image_shape, latent_shape, likelihood, out_channels, rngs=rngs,
                       dtype=jnp.dtype(compute_dtype))
    if spec.latents == "categorical":
        return built
    encoder, decoder = built
    prior = build_stage1_prior(config, vc.prior, encoder, image_shape, latent_shape, rngs)
    return VAE(encoder, decoder, latent_shape, likelihood, prior, vc.prior)


def stage1_priors() -> tuple[str, ...]:
    """What config.vae.prior may name: N(0, I), the VampPrior, or a registered prior fitted by
    gradient with an exact log-density (one that can sit in the ELBO)."""
    joint = [n for n in priors.registry.names(fit="gradient") if priors.registry.get(n).density == "exact"]
    return (STANDARD_NORMAL, "vamp", *joint)


def build_stage1_prior(config, name: str, encoder, image_shape, latent_shape, rngs):
    """The prior config.vae.prior names: N(0, I) or a learned one."""
    if name == STANDARD_NORMAL:
        return priors.StandardNormal(latent_shape)
    if name == "vamp":
        return VampPrior(encoder, image_shape, latent_shape, int(config.vae.vamp_components), rngs=rngs)
    if name not in stage1_priors():
        raise ConfigError(f"config.vae.prior={name!r}; expected one of {stage1_priors()}: N(0, I), 'vamp' or a "
                          "gradient-fitted prior with an exact log-density, trained jointly")
    section = config.prior.get(name)
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


def create_vae(config, seed: int | None = None):
    """The model of `config` (its data, vae and train.compute_dtype fields), initialized from
    `seed` (default config.seed): what every checkpoint of a run is restored into."""
    seed = config.seed if seed is None else seed
    return build_vae(config, data_registry.image_shape(config.data.name), rngs=nnx.Rngs(seed),
                     compute_dtype=config.train.compute_dtype)
