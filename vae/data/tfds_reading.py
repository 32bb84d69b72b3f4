"""Preparing our own TFDS builders and reading what TFDS prepared, with no TensorFlow:
`tfds.data_source` reads ArrayRecord files with random access (`vae.data.tfds_idx` and
`vae.data.tfds_colour` hold the builders)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vae.data.idx import Split


def split_from_source(source, shape) -> Split:
    """A Split of (N, *shape) uint8 images from a `tfds.data_source` split."""
    items = source.__getitems__(range(len(source)))
    images = np.empty((len(items), *shape), np.uint8)
    for i, item in enumerate(items):
        images[i] = np.asarray(item["image"], np.uint8).reshape(shape)
    return Split(images, np.asarray([item["label"] for item in items], np.int32))


def read_prepared(builder_name: str, data_dir: str | None, shape) -> tuple[Split, Split, str]:
    """(train, test, note) of data TFDS has prepared under `builder_name`; raises if it has not."""
    sources = tfds.data_source(builder_name, data_dir=data_dir or None, download=False)
    train, test = (split_from_source(sources[split], shape) for split in ("train", "test"))
    return train, test, f"TFDS {builder_name} ({data_dir or 'default dir'})"


def prepare(builder_class, data_dir: str | None = None, manual_dir: str | None = None):
    """Prepares a builder's ArrayRecord files (downloads unless `manual_dir` holds the files)."""
    builder = builder_class(data_dir=data_dir or None, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
