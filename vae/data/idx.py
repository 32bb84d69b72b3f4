"""IDX files (the MNIST family's format) and `Split`, the arrays every dataset becomes.

Parsed with numpy alone, validating magic number, dimensions and size, so that a bad file is
an error naming it. `vae.data.input_pipeline` and the TFDS builders in `vae.data.tfds_idx` both read
through here.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import numpy as np

from vae.errors import DataError

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where our TFDS builder (`vae.data.tfds_idx`) downloads each dataset's IDX files from.
URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
_IDX_DTYPES = {0x08: np.uint8}


@dataclasses.dataclass
class Split:
    images: np.ndarray  # (N, 28, 28, 1) uint8
    labels: np.ndarray  # (N,) int32

    def __len__(self):
        return len(self.labels)


def read_idx(path: str, expected_ndim: int | None = None) -> np.ndarray:
    """Reads one (optionally gzipped) IDX file, validating magic number, dims and size."""
    if not os.path.isfile(path):
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # truncated or not gzip at all
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is {len(raw)} bytes long; too short for a header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(
            f"IDX file {path} has a bad magic number {raw[:4].hex()} "
            "(expected 0000 08 0N: unsigned bytes, N dimensions)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"IDX file {path} has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DataError(
            f"IDX file {path} declares dims {dims} ({count} bytes of data) "
            f"but holds {len(raw) - header} bytes: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: str, labels_path: str) -> Split:
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise DataError(f"IDX file {images_path} holds {images.shape[1:]} images, expected 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"IDX file {labels_path} has labels up to {labels.max()}, expected 0-9")
    return Split(images[..., None].copy(), labels.astype(np.int32))
