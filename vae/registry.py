"""What every registry of the codebase is: named specs, registered once, found by name.

The prior (`priors.registry`), dataset (`vae.data.registry`), architecture
(`vae.models.registry`) and sample-metric (`vae.evaluation.sample_metrics`) registries each hold
a `Registry` of their own `Spec`s; this module imports nothing, so `priors` can use it too.
"""

from __future__ import annotations

from typing import Generic, TypeVar

SpecT = TypeVar("SpecT")


class Registry(Generic[SpecT]):
    """Specs (each with a `.name`) in registration order.

    `kind` names the thing in messages ('prior'); an unknown name raises `unknown(name, names)`,
    which each registry words for the config field that names it."""

    def __init__(self, kind: str, unknown):
        self.kind = kind
        self.unknown = unknown
        self.specs: dict[str, SpecT] = {}

    def register(self, spec: SpecT) -> SpecT:
        if spec.name in self.specs and self.specs[spec.name] != spec:
            raise ValueError(f"two {self.kind}s are registered as {spec.name!r}")
        self.specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self.specs.pop(name, None)

    def names(self, **equal) -> tuple[str, ...]:
        """Registered names, in registration order; keyword filters keep the specs whose field
        equals the value given (None: any)."""
        return tuple(name for name, spec in self.specs.items()
                     if all(value is None or getattr(spec, field) == value for field, value in equal.items()))

    def get(self, name: str) -> SpecT:
        if name not in self.specs:
            raise self.unknown(name, self.names())
        return self.specs[name]
