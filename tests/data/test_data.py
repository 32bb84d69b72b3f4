import dataclasses
import gzip
import shutil
import struct
import time

import numpy as np
import pytest
from ml_collections import ConfigDict

from tests.conftest import FASHION_DIR
from vae.data import idx, input_pipeline, mnist, registry, sources
from vae.errors import DataError


def data_config(**kw):
    c = ConfigDict(dict(name="mnist", idx_dir="", local_dir="", tfds_data_dir="", binarize=True,
                        validation_size=1000, split_seed=0, num_train=0))
    c.update(kw)
    return c


def write_idx(path, array, magic_dtype=0x08):
    header = struct.pack(">HBB", 0, magic_dtype, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_reads_real_mnist_test_split(mnist_dir):
    train, test, _ = mnist.load_idx_dir(str(mnist_dir))
    assert train is None
    assert test.images.shape == (10000, 28, 28, 1) and test.images.dtype == np.uint8
    assert set(np.unique(test.labels)) == set(range(10))


def test_test_only_dir_is_carved_deterministically(mnist_dir):
    a = input_pipeline.load_dataset(data_config(idx_dir=str(mnist_dir)))
    b = input_pipeline.load_dataset(data_config(idx_dir=str(mnist_dir)))
    c = input_pipeline.load_dataset(data_config(idx_dir=str(mnist_dir), split_seed=1))
    assert (len(a.train), len(a.validation), len(a.test)) == (7000, 1000, 2000)
    assert "test split only" in a.source
    np.testing.assert_array_equal(a.validation.labels, b.validation.labels)
    assert not np.array_equal(a.validation.images, c.validation.images)
    # test split is the last 2,000 images, untouched by the seed
    np.testing.assert_array_equal(a.test.images, c.test.images)


@pytest.mark.parametrize("breakage, message", [
    ("magic", "bad magic number"),
    ("truncate", "truncated or corrupt"),
    ("labels", "labels up to"),
    ("missing", "not found"),
    ("not_gzip", "cannot read IDX file"),
])
def test_corrupt_idx_files_name_the_file(tmp_path, breakage, message):
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.arange(20) % 10
    img_path, lab_path = tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(img_path, images, magic_dtype=0x0D if breakage == "magic" else 0x08)
    write_idx(lab_path, labels + (10 if breakage == "labels" else 0))
    if breakage == "truncate":
        raw = gzip.open(img_path).read()
        with gzip.open(img_path, "wb") as f:
            f.write(raw[:-100])
    if breakage == "missing":
        lab_path.unlink()
    if breakage == "not_gzip":
        img_path.write_bytes(b"this is not a gzip file")
    with pytest.raises(DataError) as e:
        idx.read_idx_pair(str(img_path), str(lab_path))
    assert message in str(e.value)
    assert str(tmp_path / "t10k-") in str(e.value)  # names the file


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(DataError, match="config.data.name='cifar100'"):
        input_pipeline.load_dataset(data_config(name="cifar100"))


def test_offline_without_local_data_fails_fast_naming_the_flag(tmp_path, monkeypatch):
    offline_only = dataclasses.replace(registry.get("mnist"), known_dirs=())
    monkeypatch.setitem(registry._SPECS, "mnist", offline_only)  # noqa: SLF001 - undone after the test
    if sources.network_reachable("storage.googleapis.com"):
        pytest.skip("network reachable: the offline path cannot be exercised here")
    start = time.perf_counter()
    with pytest.raises(DataError, match="--config.data.idx_dir"):
        input_pipeline.load_dataset(data_config(tfds_data_dir=str(tmp_path)))
    assert time.perf_counter() - start < 20.0


def test_own_tfds_builder_prepares_and_reads_without_tensorflow(mnist_dir, tmp_path):
    # The test environment has no TensorFlow installed (pyproject keeps it out), so
    # preparing and reading here is the proof that neither needs it.
    from vae.data import tfds_idx

    manual = tmp_path / "manual"
    manual.mkdir()
    for split in ("train", "test"):  # the 10k test split stands in for both splits
        for src, dst in zip(idx.IDX_FILES["test"], idx.IDX_FILES[split]):
            shutil.copy(mnist_dir / src, manual / dst)
    train, test, note = tfds_idx.prepare_and_load("mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    reference = idx.read_idx_pair(*(str(mnist_dir / f) for f in idx.IDX_FILES["test"]))
    assert test.images.shape == reference.images.shape
    # TFDS shuffles on write: compare as multisets of (image checksum, label)
    key = lambda s: sorted(zip(s.images.reshape(len(s), -1).sum(1).tolist(), s.labels.tolist()))
    assert key(test) == key(reference)
    # ... and the resolution order finds the prepared copy without being told where it is
    found = mnist.load_tfds_prepared("mnist", str(tmp_path / "tfds"))
    assert found is not None and "idx_mnist" in found[2]


def test_fashion_mnist_found_in_debian_location_without_flags():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    ds = input_pipeline.load_dataset(data_config(name="fashion_mnist", validation_size=5000))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (55000, 5000, 10000)
    assert str(FASHION_DIR) in ds.source or "TFDS" in ds.source


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped", "celeb_a"])
def test_colour_dataset_offline_without_local_files_names_local_dir(name, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "network_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(DataError, match="--config.data.local_dir"):
        input_pipeline.load_dataset(data_config(name=name, binarize=False, tfds_data_dir=str(tmp_path)))
    with pytest.raises(DataError, match=f"config.data.idx_dir is not how {name} is read.*--config.data.local_dir"):
        input_pipeline.load_dataset(data_config(name=name, binarize=False, idx_dir=str(tmp_path)))
