"""Datasets as numpy arrays: a registered dataset (`vae.data.registry`) read from its first
available source (`vae.data.sources`), split into train / validation / test.

Images stay uint8 (N, H, W, C) on the host and on the device; the training step turns
them into floats in [0, 1] (or binarizes them dynamically), so a whole MNIST-sized split
costs 47 MB of device memory, not 188 MB.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from vae.data import registry, sources
from vae.data.idx import Split
from vae.errors import DataError
from vae.parallel.sharding import InputShards

# Held-out share when an idx_dir has only the test split (the MNIST copy in ../shared):
# its last TEST_ONLY_HOLDOUT images become our test split, the rest train + validation.
TEST_ONLY_HOLDOUT = 2000

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Dataset:
    name: str
    train: Split
    validation: Split
    test: Split
    source: str  # human-readable provenance, logged and stored in reports
    # Several processes: how the training split was cut and which shards `train` holds;
    # None: `train` is the whole split, one shard.
    train_shards: InputShards | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.images.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}; expected train, validation or test")
        return getattr(self, name)


# ----------------------------------------------------------------------------- splits


def _carve(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Deterministically moves `size` examples (chosen by `seed`) out of `split`."""
    if not 0 < size < len(split):
        raise DataError(f"config.data.validation_size={size} must be in (0, {len(split)})")
    perm = np.random.default_rng(seed).permutation(len(split))
    rest, held = np.sort(perm[size:]), np.sort(perm[:size])
    return Split(split.images[rest], split.labels[rest]), Split(split.images[held], split.labels[held])


def load_dataset(data_config) -> Dataset:
    """Loads train/validation/test for `config.data` (see configs/)."""
    name = data_config.name
    train, test, source = sources.resolve_source(registry.get(name), data_config)
    if train is None:
        # Only a test split (e.g. ../shared/data/mnist): carve train/test from it, fixed order.
        n = len(test)
        holdout = min(TEST_ONLY_HOLDOUT, n // 5)
        train = Split(test.images[: n - holdout], test.labels[: n - holdout])
        test = Split(test.images[n - holdout :], test.labels[n - holdout :])
        source += f" (test split only: first {n - holdout} images used as train, last {holdout} as test)"
        log.warning("%s: %s", name, source)
    train, validation = _carve(train, data_config.validation_size, data_config.split_seed)
    if data_config.num_train:
        train = Split(train.images[: data_config.num_train], train.labels[: data_config.num_train])
    log.info(
        "%s from %s: train %d, validation %d, test %d", name, source, len(train), len(validation), len(test)
    )
    return Dataset(name, train, validation, test, source)


def keep_shards(dataset: Dataset, shards: InputShards) -> Dataset:
    """`dataset` with only the training rows of this process's shards."""
    rows = shards.rows(len(dataset.train))
    train = Split(dataset.train.images[rows], dataset.train.labels[rows])
    if shards.count > 1:
        log.info("training shards %s of %d: %d of %d images", list(shards.local), shards.count, len(train),
                 len(dataset.train))
    return dataclasses.replace(dataset, train=train, train_shards=shards)


def to_float(images_uint8):
    """uint8 images -> float32 in [0, 1]; works on numpy and jax arrays."""
    return images_uint8.astype("float32") / 255.0


def prepare_images(images_uint8, key, binarize: bool):
    """uint8 -> float in [0, 1]; binarized by a fresh Bernoulli draw when `binarize`."""
    x = to_float(images_uint8)
    if binarize:
        x = jax.random.bernoulli(key, x).astype(jnp.float32)
    return x


def prepare_shards(images_uint8, key, binarize: bool, shards=None):
    """`prepare_images` of this process's training rows, shard by shard when the split is cut
    into several (`Dataset.train_shards`): shard j draws with fold_in(key, j), so the draws
    depend on the shard count, not on which process holds which shard."""
    if shards is None or shards.count == 1:
        return prepare_images(images_uint8, key, binarize)
    return jnp.concatenate([prepare_images(images_uint8[i * shards.size:(i + 1) * shards.size],
                                           jax.random.fold_in(key, j), binarize) for i, j in enumerate(shards.local)])


def fixed_binarization(images_uint8, seed: int, binarize: bool, shards=None) -> np.ndarray:
    """Evaluation data: binarized once with a fixed seed, so numbers compare across epochs."""
    return np.asarray(prepare_shards(jnp.asarray(images_uint8), jax.random.key(seed), binarize, shards))
