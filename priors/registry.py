"""The prior registry: each prior module registers its name, config and how it is fitted.

A `Spec` says everything the rest of the codebase needs to know about a prior:
  build(latent_shape, section, rngs) -> Prior   `section` is config.prior.<name> (None if the
                                                prior has no hyper-parameters)
  fit        'gradient': Adam on the mean -log_prob(z) of latent batches (stage 2's fit loop)
             'em':       `em(prior, key, z, section) -> (prior, log-likelihood per iteration)`
             'none':     nothing to fit (N(0, I)); always available to sample.py and vae.load
  config     defaults of config.prior.<name>; `smoke` overrides them in the smoke preset.
  density    what log_prob returns: 'exact' (a normalized log-density), 'bound' (a lower bound
             on log p: a variational bound, or a Monte-Carlo estimate of one whose expectation
             is a lower bound, as the diffusion prior's) or 'estimate' (neither, e.g. a
             probability-flow ODE); the report labels numbers not computed from an exact one.
             Under a 'bound', a latent NLL is an upper bound on -log p(z) and a negative ELBO one
             on -log p(x) (in expectation, where the bound is a Monte-Carlo estimate); an IWAE
             under an exact bound is a lower bound on log p(x) (log-sum-exp is increasing), but
             a Monte-Carlo bound's noise passes through the convex log-sum-exp and can lift it
             by up to about half the estimate's variance per latent (docs/priors.md measures it).
  latents    'continuous' (real latents of a Gaussian-posterior VAE), 'categorical' (a
             VQ-VAE's integer code maps (h, w) in [0, K): build then also takes num_codes=K,
             log_prob is the log-probability of the map, sample returns maps) or 'code_levels'
             (a VQ-VAE-2's maps of codes flattened into one (L,) sequence, `priors.code_levels`:
             build also takes num_codes=K and levels=((name, (h, w)), ...)).
  code_sequence  'categorical' priors: True if it models a flat (L,) sequence of codes as well
             as a map (uniform, transformer_codes), so it is offered the flattened levels of a
             VQ-VAE-2 too; one that needs an (h, w) map (pixelcnn_codes) is not.

Adding a prior is one module in priors/ that calls `register(Spec(...))`; `configs/base.py`
builds config.prior.<name> from the spec, and stage 2, sample.py and `vae.load` find it here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from vae.registry import Registry

FIT_KINDS = ("gradient", "em", "none")
DENSITIES = ("exact", "bound", "estimate")
LATENTS = ("continuous", "categorical", "code_levels")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    build: Callable
    fit: str
    config: dict = dataclasses.field(default_factory=dict)
    smoke: dict = dataclasses.field(default_factory=dict)
    em: Callable | None = None
    density: str = "exact"
    latents: str = "continuous"
    code_sequence: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.fit not in FIT_KINDS:
            raise ValueError(f"prior {self.name!r}: fit={self.fit!r}; expected one of {FIT_KINDS}")
        if self.density not in DENSITIES:
            raise ValueError(f"prior {self.name!r}: density={self.density!r}; expected one of {DENSITIES}")
        if self.latents not in LATENTS:
            raise ValueError(f"prior {self.name!r}: latents={self.latents!r}; expected one of {LATENTS}")
        if self.code_sequence and self.latents != "categorical":
            raise ValueError(f"prior {self.name!r}: code_sequence=True is for latents='categorical'")
        if (self.fit == "em") != (self.em is not None):
            raise ValueError(f"prior {self.name!r}: an 'em' prior needs em=, and only it")


def _unknown(name: str, known) -> KeyError:
    return KeyError(f"{name!r} is not a registered prior; expected one of {known}")


_REGISTRY: Registry[Spec] = Registry("prior", _unknown)
_SPECS = _REGISTRY.specs  # tests register a prior for one test with monkeypatch.setitem
register = _REGISTRY.register
get = _REGISTRY.get


def names(fit: str | None = None, latents: str | None = None) -> tuple[str, ...]:
    """Registered prior names (those fitted as `fit`, over `latents`, if given), in registration order."""
    return _REGISTRY.names(fit=fit, latents=latents)


def names_for_levels(fit: str | None = None) -> tuple[str, ...]:
    """The priors a VQ-VAE-2's flattened code levels can take: those over any code sequence
    (`code_sequence`), then those built for levels ('code_levels')."""
    return (_REGISTRY.names(fit=fit, latents="categorical", code_sequence=True)
            + _REGISTRY.names(fit=fit, latents="code_levels"))
