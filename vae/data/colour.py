"""CIFAR-10, SVHN (cropped digits) and CelebA-64, registered: 8-bit colour images read from
their canonical files (`vae.data.colour_data`, `config.data.local_dir`), from data TFDS has
prepared with our builders (`vae.data.tfds_colour`), or downloaded through them (CIFAR-10,
SVHN; CelebA's files come from Google Drive by hand)."""

from __future__ import annotations

from vae.data import colour_data, registry


def load_tfds_prepared(name: str, data_dir: str | None):
    """Data our TFDS builder has prepared already, or None. No TensorFlow."""
    from vae.data import (  # deferred: they import tensorflow_datasets
        tfds_colour,
        tfds_reading,
    )

    try:
        return tfds_reading.read_prepared(tfds_colour.builder_name(name), data_dir, colour_data.IMAGE_SHAPES[name])
    except Exception:  # not prepared: the next source
        return None


def download(name: str, data_dir: str | None):
    from vae.data import tfds_colour  # deferred: it imports tensorflow_datasets

    return tfds_colour.prepare_and_load(name, data_dir=data_dir or None)


def _register(name: str, doc: str) -> None:
    registry.register(registry.Spec(
        name=name, image_shape=colour_data.IMAGE_SHAPES[name], num_classes=colour_data.NUM_CLASSES[name],
        local_field="local_dir", files=colour_data.FILES[name],
        read_local=lambda directory: colour_data.read_local(name, directory),
        has_local=lambda directory: colour_data.has_files(name, directory),
        read_prepared=lambda data_dir: load_tfds_prepared(name, data_dir),
        download=lambda data_dir: download(name, data_dir),
        network_host=colour_data.network_host(name), doc=doc))


_register("cifar10", "CIFAR-10: 32x32 natural images, 10 classes")
_register("svhn_cropped", "SVHN: 32x32 house-number digits, 10 classes")
_register("celeb_a", "CelebA-64: 64x64 faces (148x148 centre crop), no labels")
