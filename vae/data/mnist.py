"""MNIST and Fashion-MNIST (28x28 grey, 10 classes), registered from their IDX files.

Sources: a directory of the IDX `.gz` files (`config.data.idx_dir`; one with only the test
split, such as the MNIST copy in ../shared, is carved into train and test by the input
pipeline), data TFDS has prepared (TFDS's official builder or ours, `vae.data.tfds_idx`),
Debian's packages, or a download through our builder.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from vae.data import idx, registry
from vae.errors import DataError

# Local places where a distribution package puts the IDX files.
KNOWN_LOCAL_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}


def has_split(idx_dir: str, split: str) -> bool:
    return all(os.path.exists(os.path.join(idx_dir, f)) for f in idx.IDX_FILES[split])


def load_idx_dir(idx_dir: str) -> tuple[idx.Split | None, idx.Split, str]:
    """(train_or_None, test, note) from a directory of IDX .gz files."""
    if not os.path.isdir(idx_dir):
        raise DataError(f"config.data.idx_dir={idx_dir!r} is not a directory")
    if not has_split(idx_dir, "test"):
        wanted = ", ".join(idx.IDX_FILES["test"] + idx.IDX_FILES["train"])
        raise DataError(f"config.data.idx_dir={idx_dir!r} holds no IDX test split; expected the files {wanted}")
    test = idx.read_idx_pair(*(os.path.join(idx_dir, f) for f in idx.IDX_FILES["test"]))
    train = None
    if has_split(idx_dir, "train"):
        train = idx.read_idx_pair(*(os.path.join(idx_dir, f) for f in idx.IDX_FILES["train"]))
    return train, test, f"IDX files in {idx_dir}"


def load_tfds_prepared(name: str, data_dir: str | None):
    """Data TFDS has prepared already (official builder or ours), or None. No TensorFlow."""
    from vae.data import (  # deferred: they import tensorflow_datasets
        tfds_idx,
        tfds_reading,
    )

    for builder_name in (name, tfds_idx.builder_name(name)):
        try:
            return tfds_reading.read_prepared(builder_name, data_dir, idx.IMAGE_SHAPE)
        except Exception:  # not prepared, not registered, or needs TF: try the next one
            continue
    return None


def download(name: str, data_dir: str | None):
    from vae.data import tfds_idx  # deferred: it imports tensorflow_datasets

    return tfds_idx.prepare_and_load(name, data_dir=data_dir or None)


def _register(name: str, doc: str) -> None:
    registry.register(registry.Spec(
        name=name, image_shape=idx.IMAGE_SHAPE, num_classes=idx.NUM_CLASSES, local_field="idx_dir",
        files=idx.IDX_FILES["test"] + idx.IDX_FILES["train"],
        read_local=load_idx_dir,
        has_local=lambda directory: has_split(directory, "test"),
        read_prepared=lambda data_dir: load_tfds_prepared(name, data_dir),
        download=lambda data_dir: download(name, data_dir),
        network_host=urlparse(idx.URLS[name]).hostname, known_dirs=KNOWN_LOCAL_DIRS[name], doc=doc))


_register("mnist", "handwritten digits")
_register("fashion_mnist", "Zalando's clothing images")
