"""TFDS builders of our own for CIFAR-10, SVHN and CelebA-64 that need no TensorFlow.

`local_cifar10`, `local_svhn_cropped`, `local_celeb_a` read the canonical files with
`vae.data.colour_data` from `manual_dir`, or download them (not CelebA: it has no stable direct
URL), and write ArrayRecord files that `tfds.data_source` reads back, neither step needing
TensorFlow: the images are plain uint8 tensors, not TFDS `Image`s (whose encoding needs
TensorFlow). They keep the files' order, so a split is the same array whichever way it was read.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vae.data import tfds_reading
from vae.data.colour_data import (
    CELEBA_ARCHIVE,
    CELEBA_DIR,
    CELEBA_PARTITIONS,
    CIFAR_ARCHIVE,
    FILES,
    IMAGE_SHAPES,
    NUM_CLASSES,
    URLS,
    has_files,
    read_cifar10,
    read_local,
    read_svhn_mat,
)
from vae.errors import DataError


def builder_name(name: str) -> str:
    return f"local_{name}"


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    DATASET = ""

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPES[self.DATASET], dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=max(1, NUM_CLASSES[self.DATASET])),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the files' order: the same split whichever way it is read
        )

    def _split_generators(self, dl_manager):
        manual = dl_manager._manual_dir  # private, as in vae.data.tfds_idx: TFDS's default unless the caller gave one
        if has_files(self.DATASET, str(manual) if manual else None):
            train, test, _ = read_local(self.DATASET, str(manual))
        elif self.DATASET == "celeb_a":
            raise DataError(
                f"celeb_a cannot be downloaded (it lives on Google Drive): put {CELEBA_DIR}/ (or "
                f"{CELEBA_ARCHIVE}) and {CELEBA_PARTITIONS} in a directory and pass it as manual_dir "
                f"(looked in {manual})"
            )
        else:
            paths = {f: str(p) for f, p in dl_manager.download(URLS[self.DATASET]).items()}
            if self.DATASET == "cifar10":
                train, test = read_cifar10(paths[CIFAR_ARCHIVE])
            else:
                train, test = (read_svhn_mat(paths[f]) for f in FILES["svhn_cropped"])
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, split):
        for i in range(len(split)):
            yield i, {"image": split.images[i], "label": int(split.labels[i])}


class LocalCifar10(_LocalBuilder):
    """CIFAR-10 from the python pickles (60k 32x32 colour images, 10 classes)."""

    DATASET = "cifar10"


class LocalSvhnCropped(_LocalBuilder):
    """SVHN cropped digits from the .mat files (99k 32x32 colour digits; `extra` not used)."""

    DATASET = "svhn_cropped"


class LocalCelebA(_LocalBuilder):
    """CelebA at 64x64 from the aligned JPEGs (202,599 faces, no labels)."""

    DATASET = "celeb_a"


_BUILDERS = {"cifar10": LocalCifar10, "svhn_cropped": LocalSvhnCropped, "celeb_a": LocalCelebA}


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None):
    """Prepares the ArrayRecord files (downloads unless `manual_dir` holds the canonical files)."""
    return tfds_reading.prepare(_BUILDERS[name], data_dir, manual_dir)


def prepare_and_load(name: str, data_dir: str | None = None, manual_dir: str | None = None):
    """(train, test, note) read back through `tfds.data_source` after preparing."""
    prepare(name, data_dir, manual_dir)
    return tfds_reading.read_prepared(builder_name(name), data_dir, IMAGE_SHAPES[name])
