"""The architecture registry: each encoder/decoder family registers its name, its config
section and how it is built.

A `Spec` says everything the rest of the codebase needs to know about an architecture:
  config        defaults of config.vae.<name> (configs/base.py builds the section from them);
                `smoke` overrides them in the smoke preset
  latents       'continuous' (a diagonal-Gaussian posterior; the VAE wraps the pair with the
                prior it trains with) or 'categorical' (integer code maps, e.g. the VQ-VAE)
  latent_shape  (section, image_shape) -> the latent's shape, or a ConfigError naming the field
  build         (section, image_shape, latent_shape, likelihood, out_channels, *, rngs, dtype) ->
                (encoder, decoder) for 'continuous'; the whole model for 'categorical'
  check         section -> None, a ConfigError naming the first field that cannot work
  levels        'categorical' only: True when the latent is several code maps flattened into one
                sequence (VQ-VAE-2, `priors.code_levels`; the model has `levels`): stage 2 then
                offers the priors over code sequences and over levels, not those of one (h, w) map

Adding an architecture is one module in vae/models/ that calls `register(Spec(...))`,
imported by `vae/models/__init__.py`; `--config.vae.arch=<name>` then selects it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from vae.errors import ConfigError
from vae.registry import Registry

LATENTS = ("continuous", "categorical")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    build: Callable
    latent_shape: Callable
    config: dict = dataclasses.field(default_factory=dict)
    smoke: dict = dataclasses.field(default_factory=dict)
    latents: str = "continuous"
    check: Callable | None = None
    levels: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.latents not in LATENTS:
            raise ValueError(f"architecture {self.name!r}: latents={self.latents!r}; expected one of {LATENTS}")
        if self.levels and self.latents != "categorical":
            raise ValueError(f"architecture {self.name!r}: levels=True is for latents='categorical' (maps of codes)")


def _unknown(name: str, known) -> ConfigError:
    return ConfigError(f"config.vae.arch={name!r} is unknown; expected one of {known}")


_REGISTRY: Registry[Spec] = Registry("architecture", _unknown)
_SPECS = _REGISTRY.specs  # tests register one for a single test with monkeypatch.setitem
register = _REGISTRY.register
unregister = _REGISTRY.unregister
names = _REGISTRY.names
get = _REGISTRY.get
