"""The dataset registry: a dataset registered from one place is read from its own files,
split, trained on and opened by `vae.load`, with nothing else changed."""

import os

import numpy as np
import pytest

import vae
from tests.conftest import read_metrics
from vae.data import idx, input_pipeline, mnist, registry
from vae.errors import DataError
from vae.train import stages


def read_npz_dir(directory: str):
    """(None, test, note): a test split only, from `digits.npz` (the input pipeline carves train)."""
    path = os.path.join(directory, "digits.npz")
    if not os.path.isfile(path):
        raise DataError(f"config.data.idx_dir={directory!r} lacks digits.npz")
    with np.load(path) as f:
        return None, idx.Split(f["images"], f["labels"]), f"digits.npz in {directory}"


SPEC = registry.Spec(
    name="test_npz_digits", image_shape=(28, 28, 1), num_classes=10, local_field="idx_dir", files=("digits.npz",),
    read_local=read_npz_dir, has_local=lambda d: os.path.isfile(os.path.join(d, "digits.npz")),
    read_prepared=lambda data_dir: None)


@pytest.fixture
def npz_dir(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._SPECS, SPEC.name, SPEC)  # noqa: SLF001 - undone after the test
    _, test, _ = mnist.load_idx_dir(str(mnist_dir))
    np.savez(tmp_path / "digits.npz", images=test.images[:3000], labels=test.labels[:3000])
    return tmp_path


def npz_config(directory):
    from tests.conftest import mnist_config

    config = mnist_config("mnist_mlp")
    config.data.name = SPEC.name
    config.data.idx_dir = str(directory)
    config.data.num_train = 512
    config.data.validation_size = 256
    config.stage = "vae"
    config.train.num_epochs = 1
    return config


def test_registered_dataset_is_split_as_the_builtins_are(npz_dir):
    dataset = input_pipeline.load_dataset(npz_config(npz_dir).data)
    # 3000 images, test split only: the last 600 (a fifth) become the test split
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (512, 256, 600)
    assert dataset.image_shape == (28, 28, 1) and "digits.npz" in dataset.source


def test_registered_dataset_names_its_own_flag_when_files_are_missing(npz_dir, tmp_path):
    config = npz_config(tmp_path / "empty")
    with pytest.raises(DataError, match="digits.npz"):
        input_pipeline.load_dataset(config.data)
    config.data.idx_dir, config.data.local_dir = "", str(npz_dir)
    with pytest.raises(DataError, match="--config.data.idx_dir"):
        input_pipeline.load_dataset(config.data)


@pytest.mark.slow
def test_registered_dataset_trains_and_loads_end_to_end(npz_dir, tmp_path):
    workdir = tmp_path / "run"
    stages.train_and_evaluate(npz_config(npz_dir), str(workdir))
    validation = [r for r in read_metrics(workdir) if r.get("split") == "validation"]
    assert validation and np.isfinite(validation[-1]["elbo"])
    run = vae.load(str(workdir))
    assert run.config.data.name == SPEC.name and run.latent_shape == (16,)


def test_every_builtin_dataset_is_registered_with_its_shape_and_classes():
    assert set(registry.names()) == {"mnist", "fashion_mnist", "cifar10", "svhn_cropped", "celeb_a"}
    assert registry.image_shape("fashion_mnist") == (28, 28, 1) and registry.get("celeb_a").num_classes == 0
    with pytest.raises(DataError, match="config.data.name='cifar100'.*expected one of"):
        registry.get("cifar100")
