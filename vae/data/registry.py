"""The dataset registry: each dataset registers its name, image shape, classes and sources.

A `Spec` says everything the rest of the codebase needs to know about a dataset:
  image_shape   (H, W, C) of its uint8 images: what the models are built for, before data loads
  num_classes   0 when it has no labels (CelebA): no feature classifier, no label metrics
  local_field   the config.data field that points at local files ('idx_dir' or 'local_dir')
  files         the files such a directory must hold (named in errors)
  read_local    directory -> (train or None, test, note); train None: a test split only
  has_local     directory -> whether it holds the files
  known_dirs    places a distribution package puts the files (tried when nothing is given)
  read_prepared tfds_data_dir -> (train, test, note) from data TFDS has prepared, or None
  download      tfds_data_dir -> (train, test, note) through our TFDS builder; None: manual only
  network_host  the host `download` fetches from (checked before trying)

`vae.data.sources.resolve_source` tries them in that order. Adding a dataset is one module
that calls `register(Spec(...))`, imported by `vae/data/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from vae.errors import DataError
from vae.registry import Registry

LOCAL_FIELDS = ("idx_dir", "local_dir")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    local_field: str
    files: tuple[str, ...]
    read_local: Callable
    has_local: Callable
    read_prepared: Callable
    download: Callable | None = None
    network_host: str | None = None
    known_dirs: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self):
        if self.local_field not in LOCAL_FIELDS:
            raise ValueError(f"dataset {self.name!r}: local_field={self.local_field!r}; expected one of {LOCAL_FIELDS}")
        if len(self.image_shape) != 3:
            raise ValueError(f"dataset {self.name!r}: image_shape={self.image_shape}; expected (H, W, C)")

    @property
    def colour(self) -> bool:
        return self.image_shape[-1] == 3


def _unknown(name: str, known) -> DataError:
    return DataError(f"config.data.name={name!r} is not a known dataset; expected one of {known}")


_REGISTRY: Registry[Spec] = Registry("dataset", _unknown)
_SPECS = _REGISTRY.specs  # tests register one for a single test with monkeypatch.setitem
register = _REGISTRY.register
unregister = _REGISTRY.unregister
names = _REGISTRY.names
get = _REGISTRY.get


def image_shape(name: str) -> tuple[int, int, int]:
    """(H, W, C) of dataset `name`'s images: what the models are built for, before any data loads."""
    return tuple(get(name).image_shape)
