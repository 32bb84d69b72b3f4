"""Datasets as numpy arrays: MNIST and Fashion-MNIST (28x28 grey) from local IDX files or
TFDS; CIFAR-10, SVHN and CelebA-64 (colour) from their canonical files or TFDS.

Images stay uint8 (N, H, W, C) on the host and on the device; the training step turns
them into floats in [0, 1] (or binarizes them dynamically), so a whole MNIST-sized split
costs 47 MB of device memory, not 188 MB.

Where the data comes from, in order (`resolve_source`):
  1. `config.data.idx_dir` (MNIST, Fashion-MNIST: IDX `.gz` files, read with numpy) or
     `config.data.local_dir` (colour: the files `vae.data.colour_data` reads), when given;
  2. data TFDS already has prepared (`tfds.data_source`, no TensorFlow);
  3. known local places (Debian's `/usr/share/datasets/fashion-mnist`);
  4. a TFDS download through our own builders (`vae.data.tfds_idx`, `vae.data.colour_data`), only if
     the network answers within seconds; offline this fails fast with a message naming the
     option that points at local files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket

import jax
import jax.numpy as jnp
import numpy as np

from vae.data import colour_data
from vae.errors import DataError
# Re-exported: the IDX reader and the Split record are part of this module's public face.
from vae.data.idx import IDX_FILES, IMAGE_SHAPE, NUM_CLASSES, Split, read_idx, read_idx_pair, split_from_source  # noqa: F401

DATASETS = ("mnist", "fashion_mnist", *colour_data.DATASETS)
# (H, W, C) of each dataset's images, and its number of classes (0: none, CelebA)
IMAGE_SHAPES = {"mnist": IMAGE_SHAPE, "fashion_mnist": IMAGE_SHAPE, **colour_data.IMAGE_SHAPES}
CLASSES = {"mnist": NUM_CLASSES, "fashion_mnist": NUM_CLASSES, **colour_data.NUM_CLASSES}
# Local places where a distribution package puts the IDX files.
KNOWN_LOCAL_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}
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
    # Several processes: how the training split was cut and which shards `train` holds
    # (a `vae.parallel.sharding.InputShards`); None: `train` is the whole split, one shard.
    train_shards: object = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.images.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}; expected train, validation or test")
        return getattr(self, name)


def image_shape(name: str) -> tuple[int, int, int]:
    """(H, W, C) of dataset `name`'s images: what the models are built for, before any data loads."""
    if name not in IMAGE_SHAPES:
        raise DataError(f"config.data.name={name!r} is not a known dataset; expected one of {DATASETS}")
    return IMAGE_SHAPES[name]


# ----------------------------------------------------------------------------- IDX files


def _has_split(idx_dir: str, split: str) -> bool:
    return all(os.path.exists(os.path.join(idx_dir, f)) for f in IDX_FILES[split])


def load_idx_dir(idx_dir: str) -> tuple[Split, Split, str]:
    """Returns (train_or_None, test, note) from a directory of IDX .gz files."""
    if not os.path.isdir(idx_dir):
        raise DataError(f"config.data.idx_dir={idx_dir!r} is not a directory")
    if not _has_split(idx_dir, "test"):
        wanted = ", ".join(IDX_FILES["test"] + IDX_FILES["train"])
        raise DataError(
            f"config.data.idx_dir={idx_dir!r} holds no IDX test split; expected the files {wanted}"
        )
    test = read_idx_pair(*(os.path.join(idx_dir, f) for f in IDX_FILES["test"]))
    train = None
    if _has_split(idx_dir, "train"):
        train = read_idx_pair(*(os.path.join(idx_dir, f) for f in IDX_FILES["train"]))
    return train, test, f"IDX files in {idx_dir}"


# ----------------------------------------------------------------------------- TFDS


def _load_tfds_prepared(name: str, data_dir: str | None):
    """Data TFDS has prepared already (official or our IDX builder), or None. No TensorFlow."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - tfds is a core dependency
        return None
    from vae.data import tfds_idx  # deferred: it imports tensorflow_datasets

    for builder_name in (name, tfds_idx.builder_name(name)):
        try:
            sources = tfds.data_source(builder_name, data_dir=data_dir or None, download=False)
            splits = {k: split_from_source(sources[k]) for k in ("train", "test")}
        except Exception:  # not prepared, not registered, or needs TF: try the next one
            continue
        return splits["train"], splits["test"], f"TFDS {builder_name} ({data_dir or 'default dir'})"
    return None


def _network_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _download_with_tfds(name: str, data_dir: str | None):
    from vae.data import tfds_idx  # deferred: it imports tensorflow_datasets

    if not _network_reachable(tfds_idx.network_host(name)):
        raise DataError(
            f"dataset {name!r}: no local copy found and the network is unreachable, so TFDS "
            "cannot download it. Point at local IDX .gz files with "
            "--config.data.idx_dir=DIR (e.g. ../shared/data/mnist, or "
            "/usr/share/datasets/fashion-mnist after `apt-get install dataset-fashion-mnist`)."
        )
    return tfds_idx.prepare_and_load(name, data_dir=data_dir)


# ----------------------------------------------------------------------------- splits


def _carve(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Deterministically moves `size` examples (chosen by `seed`) out of `split`."""
    if not 0 < size < len(split):
        raise DataError(f"config.data.validation_size={size} must be in (0, {len(split)})")
    perm = np.random.default_rng(seed).permutation(len(split))
    rest, held = np.sort(perm[size:]), np.sort(perm[:size])
    return Split(split.images[rest], split.labels[rest]), Split(split.images[held], split.labels[held])


def _resolve_colour(name: str, local_dir: str, tfds_data_dir: str):
    """(train, test, note) of a colour dataset: local files, prepared TFDS data, or a download."""
    if local_dir:
        return colour_data.read_local(name, local_dir)
    import tensorflow_datasets as tfds

    from vae.data import tfds_colour  # deferred: it imports tensorflow_datasets

    try:
        sources = tfds.data_source(tfds_colour.builder_name(name), data_dir=tfds_data_dir or None, download=False)
        train, test = (tfds_colour.split_from_source(sources[k], IMAGE_SHAPES[name]) for k in ("train", "test"))
        return train, test, f"TFDS {tfds_colour.builder_name(name)} ({tfds_data_dir or 'default dir'})"
    except Exception:  # not prepared: download below
        pass
    host = colour_data.network_host(name)
    if host is None or not _network_reachable(host):
        why = "it cannot be downloaded (Google Drive)" if host is None else "the network is unreachable"
        raise DataError(
            f"dataset {name!r}: no local copy found and {why}. Point at a directory holding "
            f"{', '.join(colour_data.FILES[name])} with --config.data.local_dir=DIR")
    return tfds_colour.prepare_and_load(name, data_dir=tfds_data_dir or None)


def resolve_source(name, idx_dir="", tfds_data_dir="", local_dir=""):
    """(train_or_None, test, note) from the first source that has the data."""
    if name in colour_data.DATASETS:
        if idx_dir:
            raise DataError(f"config.data.idx_dir is for MNIST / Fashion-MNIST IDX files; {name} reads its own "
                            f"files from --config.data.local_dir (expected {', '.join(colour_data.FILES[name])})")
        return _resolve_colour(name, local_dir, tfds_data_dir)
    if local_dir:
        raise DataError(f"config.data.local_dir is for the colour datasets {colour_data.DATASETS}; {name} reads "
                        "IDX files from --config.data.idx_dir")
    if idx_dir:
        return load_idx_dir(idx_dir)
    found = _load_tfds_prepared(name, tfds_data_dir)
    if found is not None:
        return found
    for local in KNOWN_LOCAL_DIRS.get(name, ()):
        if _has_split(local, "test"):
            return load_idx_dir(local)
    return _download_with_tfds(name, tfds_data_dir)


def load_dataset(data_config) -> Dataset:
    """Loads train/validation/test for `config.data` (see configs/)."""
    name = data_config.name
    if name not in DATASETS:
        raise DataError(f"config.data.name={name!r} is not a known dataset; expected one of {DATASETS}")
    train, test, source = resolve_source(name, data_config.idx_dir, data_config.get("tfds_data_dir", ""),
                                         data_config.get("local_dir", ""))
    if train is None:
        # Only a test split (e.g. ../shared/data/mnist): carve train/test from it, fixed order.
        n = len(test)
        holdout = min(TEST_ONLY_HOLDOUT, n // 5)
        train = Split(test.images[: n - holdout], test.labels[: n - holdout])
        test = Split(test.images[n - holdout :], test.labels[n - holdout :])
        source += f" (test split only: first {n - holdout} images used as train, last {holdout} as test)"
        log.warning("%s: %s", name, source)
    train, validation = _carve(train, data_config.validation_size, data_config.split_seed)
    if data_config.get("num_train", 0):
        train = Split(train.images[: data_config.num_train], train.labels[: data_config.num_train])
    log.info(
        "%s from %s: train %d, validation %d, test %d", name, source, len(train), len(validation), len(test)
    )
    return Dataset(name, train, validation, test, source)


def keep_shards(dataset: Dataset, shards) -> Dataset:
    """`dataset` with only the training rows of this process's shards (`vae.parallel.sharding.InputShards`)."""
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
