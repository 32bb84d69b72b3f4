"""Priors over VAE latents, all with one small interface (`Prior`), found by name in a registry.

A prior is fitted by maximum likelihood to latents of a frozen encoder (stage 2), or trained
with the VAE in its ELBO (stage 1, `config.vae.prior`: any gradient-fitted prior here, or
`vamp`, the VampPrior over the VAE's own encoder, which the VAE builds and the registry does
not list); nothing here imports training code. Each module registers itself (see `priors.registry`); importing this
package imports every module in it, so a new prior is one new file.
`build(name, latent_shape, prior_config)` makes one from config.prior; `fit_settings(prior_config,
name)` is config.prior as stage 2 fits that prior.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Protocol

import jax
from flax import nnx

from priors import code_levels, registry

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from priors.gmm import GMM  # noqa: E402
from priors.made import MADE  # noqa: E402
from priors.pixelcnn import PixelCNN  # noqa: E402
from priors.standard_normal import StandardNormal  # noqa: E402
from priors.transformer import Transformer  # noqa: E402

__all__ = ["GMM", "MADE", "NAMES", "BASELINE", "PixelCNN", "Prior", "StandardNormal", "Transformer", "build",
           "fit_settings", "registry"]
NAMES = registry.names()
BASELINE = "standard_normal"  # N(0, I), the default stage-1 prior; every report scores it beside the others
BASELINES = {"continuous": BASELINE, "categorical": "uniform", "code_levels": "uniform"}  # stage 1's, per latent kind


# Shared stage-2 settings (config.prior.*) a prior's own section may set for that prior alone: the
# diffusion prior's registry config carries its learning rate and an EMA; every gradient-fitted
# prior's section has a num_epochs (configs/base.py), None there meaning the shared one.
OWN_FIT_SETTINGS = ("learning_rate", "ema_decay", "num_epochs")


def fit_settings(prior_config, name: str):
    """config.prior as stage 2 fits prior `name`: the shared settings, except those of OWN_FIT_SETTINGS
    that config.prior.<name> sets to a value (not None), which win for this prior (a copy then; else
    `prior_config` itself).
    So `--config.prior.ema_decay` does not reach a prior whose section sets its own: set
    `--config.prior.<name>.ema_decay`."""
    section = prior_config.get(name) or {}
    own = {k: section[k] for k in OWN_FIT_SETTINGS if section.get(k) is not None}
    if not own:
        return prior_config
    settings = prior_config.copy_and_resolve_references()
    with settings.unlocked():
        settings.update(own)
    return settings


class Prior(Protocol):
    latent_shape: tuple[int, ...]

    def log_prob(self, z: jax.Array) -> jax.Array:
        """(B, *latent_shape) -> (B,): normalized log-density in nats (over a VQ-VAE's integer
        code maps: the log-probability of each map). Priors with a `dropout` option also take
        `dropout_key=` (stage 2 passes a fresh one per training step)."""

    def sample(self, key: jax.Array, n: int, *, temperature=1.0) -> jax.Array:
        """-> (n, *latent_shape). `temperature` T (a float or a traced scalar) narrows (T < 1) or
        widens the draws, one meaning per family: N(0, T² I); a Gaussian mixture's covariances
        times T²; each mixture-of-logistics conditional's scales times T; a flow's base noise
        times T; softmax(logits / T) over codes. T = 1 draws exactly what no temperature draws."""


def build(name: str, latent_shape, prior_config=None, *, seed: int = 0, num_codes: int | None = None,
          levels=None) -> Prior:
    """The prior `name` for `latent_shape` with hyper-parameters from config.prior.<name>; a
    categorical prior (over code maps) also needs the codebook size `num_codes`, and one over
    code levels (VQ-VAE-2's, `priors.code_levels`) the model's `levels` too (the other priors
    ignore them: they model the flat code sequence, or refuse its shape)."""
    if name not in registry.names():
        raise ValueError(f"config.prior.name: unknown prior {name!r}; expected one of {registry.names()}")
    spec = registry.get(name)
    section = prior_config.get(name) if prior_config is not None else None
    if spec.config and section is None:
        raise ValueError(f"config.prior.{name} is missing: the hyper-parameters of prior {name!r}")
    shape, rngs = tuple(int(s) for s in latent_shape), nnx.Rngs(seed)
    if spec.latents in ("categorical", "code_levels") and num_codes is None:
        raise ValueError(f"prior {name!r} models VQ code maps: it needs num_codes")
    if spec.latents == "code_levels":
        if levels is None:
            raise ValueError(f"prior {name!r} models a VQ-VAE-2's levels of code maps: it needs levels (the "
                             "model's), and this latent has none")
        if code_levels.length(levels) != math.prod(shape):
            raise ValueError(f"prior {name!r}: levels {tuple(levels)} hold {code_levels.length(levels)} codes, "
                             f"but the latent shape is {shape}")
        return spec.build(shape, section, rngs, num_codes=int(num_codes), levels=code_levels.normalize(levels))
    if spec.latents == "categorical":
        return spec.build(shape, section, rngs, num_codes=int(num_codes))
    return spec.build(shape, section, rngs)
