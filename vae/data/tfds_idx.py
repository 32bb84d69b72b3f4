"""TFDS builders of our own for MNIST and Fashion-MNIST that need no TensorFlow.

TFDS's official `mnist`/`fashion_mnist` builders need TensorFlow to prepare. These fetch the
same IDX files through TFDS's download manager (or take them from `manual_dir`), parse them
with numpy (`idx.read_idx_pair`) and write ArrayRecord files that
`tfds.data_source` then reads with random access, again without TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from vae.data import idx, tfds_reading


def builder_name(dataset: str) -> str:
    return f"idx_{dataset}"


class _IdxBuilder(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    DATASET = ""

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=idx.IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=idx.NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        names = [f for split in ("train", "test") for f in idx.IDX_FILES[split]]
        manual = dl_manager._manual_dir  # noqa: SLF001 - None unless the caller gave one
        if manual and all(os.path.exists(os.path.join(manual, f)) for f in names):
            paths = {f: os.path.join(manual, f) for f in names}
        else:
            paths = dl_manager.download({f: idx.URLS[self.DATASET] + f for f in names})
        return {
            split: self._generate_examples(*(str(paths[f]) for f in idx.IDX_FILES[split]))
            for split in ("train", "test")
        }

    def _generate_examples(self, images_path, labels_path):
        # The download manager may strip the .gz suffix from cached names: sniff instead.
        split = idx.read_idx_pair(_gz_name(images_path), _gz_name(labels_path))
        for i in range(len(split)):
            yield i, {"image": split.images[i], "label": int(split.labels[i])}


def _gz_name(path: str) -> str:
    if path.endswith(".gz"):
        return path
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    if not is_gzip:
        return path
    link = path + ".gz"
    if not os.path.exists(link):
        os.symlink(path, link)
    return link


class IdxMnist(_IdxBuilder):
    """MNIST from the IDX files (70k 28x28 digits)."""

    DATASET = "mnist"


class IdxFashionMnist(_IdxBuilder):
    """Fashion-MNIST from the IDX files (70k 28x28 clothing images)."""

    DATASET = "fashion_mnist"


_BUILDERS = {"mnist": IdxMnist, "fashion_mnist": IdxFashionMnist}


def prepare(dataset: str, data_dir: str | None = None, manual_dir: str | None = None):
    """Prepares the ArrayRecord files (downloads unless `manual_dir` holds the IDX files)."""
    return tfds_reading.prepare(_BUILDERS[dataset], data_dir, manual_dir)


def prepare_and_load(dataset: str, data_dir: str | None = None, manual_dir: str | None = None):
    """(train, test, note) read back through `tfds.data_source` after preparing."""
    prepare(dataset, data_dir, manual_dir)
    return tfds_reading.read_prepared(builder_name(dataset), data_dir, idx.IMAGE_SHAPE)
