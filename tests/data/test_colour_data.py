"""The CIFAR-10, SVHN and CelebA readers (vae/colour_data.py) and TFDS builders (vae/tfds_colour.py),
on tiny files in each real format.

Each test writes its own files: CIFAR-10's python pickles (and their tar.gz), SVHN's MATLAB v5
files, CelebA's 178x218 JPEGs (and their zip) with a partition list. Images carry a pattern that
differs per channel, row and column, so a transposed or channel-swapped reader fails.
"""

import pickle
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from vae.data import colour_data, tfds_colour
from vae.errors import DataError

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CELEBA_PARTS = (0, 0, 1, 2, 0, 2)  # 000001.jpg..000006.jpg: train 1, 2, 3 (validation), 5; test 4, 6


def pattern(n, h, w, offset=0):
    """uint8 (n, h, w, 3): channel c, row r, column q of image k is a distinct affine function."""
    k, r, q, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((offset + 37 * k + 3 * r + 5 * q + 85 * c) % 256).astype(np.uint8)


def cifar_row(image):
    """The documented layout: the R plane, then G, then B, each 32x32 row-major."""
    return np.concatenate([image[:, :, c].ravel() for c in range(3)])


def write_cifar(root, n=4):
    """cifar-10-batches-py/ under `root`, as the official py2 pickles; returns {batch: (images, labels)}."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    written = {}
    for i, b in enumerate(CIFAR_BATCHES):
        images, labels = pattern(n, 32, 32, offset=11 * i), [(i + j) % 10 for j in range(n)]
        batch = {b"batch_label": b"batch", b"labels": labels, b"filenames": [b"x.png"] * n,
                 b"data": np.stack([cifar_row(im) for im in images])}
        # protocol 2 and numpy.core names, as the official files have
        (d / b).write_bytes(pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core."))
        written[b] = images, np.asarray(labels)
    return written


def write_svhn(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, f in enumerate(("train_32x32.mat", "test_32x32.mat")):
        images = pattern(n, 32, 32, offset=50 * i)
        y = (3 * np.arange(n) + i) % 10 + 1  # in 1..10, train has a 10 (the digit 0)
        scipy.io.savemat(root / f, {"X": images.transpose(1, 2, 3, 0), "y": y[:, None].astype(np.uint8)})
        written[f] = images, y
    return written


def write_celeba(root, parts=CELEBA_PARTS):
    d = root / "img_align_celeba"
    d.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(parts))]
    for i, name in enumerate(names):
        Image.fromarray(pattern(1, 218, 178, offset=40 * i)[0]).save(d / name, quality=95)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    return names


def our_celeba_64(path):
    """The reference preprocessing: numpy centre crop 148x148 of the decoded JPEG, LANCZOS to 64x64."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (218, 178, 3)
    crop = pixels[35:183, 15:163]
    return np.asarray(Image.fromarray(crop).resize((64, 64), Image.Resampling.LANCZOS))


def test_cifar10_reads_the_pixels_and_labels_written(tmp_path):
    written = write_cifar(tmp_path)
    for d in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent or the batch directory itself
        train, test, note = colour_data.read_local("cifar10", str(d))
        np.testing.assert_array_equal(train.images, np.concatenate([written[b][0] for b in CIFAR_BATCHES[:5]]))
        np.testing.assert_array_equal(train.labels, np.concatenate([written[b][1] for b in CIFAR_BATCHES[:5]]))
        np.testing.assert_array_equal(test.images, written["test_batch"][0])
        np.testing.assert_array_equal(test.labels, written["test_batch"][1])
        assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
        assert train.labels.dtype == np.int32 and str(d) in note
    assert train.images[0, 0, 0].tolist() == [0, 85, 170]  # channel order: R, G, B


def test_cifar10_from_the_archive_matches_the_directory(tmp_path):
    write_cifar(tmp_path / "unpacked")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_dir = colour_data.read_cifar10(str(tmp_path / "unpacked"))
    from_tar = colour_data.read_cifar10(str(tmp_path))  # the directory holding the archive
    from_file = colour_data.read_cifar10(str(tmp_path / "cifar-10-python.tar.gz"))  # as TFDS downloads it
    assert colour_data.has_files("cifar10", str(tmp_path))
    for a, b, c in zip(from_dir, from_tar, from_file):
        for x in (b, c):
            np.testing.assert_array_equal(a.images, x.images)
            np.testing.assert_array_equal(a.labels, x.labels)


def test_svhn_reads_the_pixels_and_maps_label_10_to_0(tmp_path):
    written = write_svhn(tmp_path)
    train, test, _ = colour_data.read_local("svhn_cropped", str(tmp_path))
    for split, f in ((train, "train_32x32.mat"), (test, "test_32x32.mat")):
        images, y = written[f]
        np.testing.assert_array_equal(split.images, images)
        np.testing.assert_array_equal(split.labels, np.where(y == 10, 0, y))
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    assert 0 in train.labels and train.labels.max() < 10


def test_celeba_crops_resizes_and_splits_by_partition(tmp_path):
    names = write_celeba(tmp_path)
    train, test, _ = colour_data.read_local("celeb_a", str(tmp_path))
    assert (train.images.shape, test.images.shape) == ((4, 64, 64, 3), (2, 64, 64, 3))
    assert train.images.dtype == np.uint8 and not train.labels.any() and not test.labels.any()
    jpegs = [tmp_path / "img_align_celeba" / n for n in names]
    expected_train = [our_celeba_64(jpegs[i]) for i in (0, 1, 2, 4)]  # partition 1 is ours: train
    np.testing.assert_array_equal(train.images, np.stack(expected_train))
    np.testing.assert_array_equal(test.images, np.stack([our_celeba_64(jpegs[i]) for i in (3, 5)]))
    # the same JPEGs in img_align_celeba.zip give the same arrays
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / "img_align_celeba.zip", "w") as zf:
        for p in jpegs:
            zf.write(p, f"img_align_celeba/{p.name}")
    (zipped / "list_eval_partition.txt").write_bytes((tmp_path / "list_eval_partition.txt").read_bytes())
    from_zip, _ = colour_data.read_celeba(str(zipped))
    np.testing.assert_array_equal(from_zip.images, train.images)


def _break(name, tmp_path, breakage):
    """Writes dataset `name` under tmp_path, breaks it; returns (directory, what the message must hold)."""
    if name == "cifar10":
        write_cifar(tmp_path)
        d = tmp_path / "cifar-10-batches-py"
        if breakage == "truncated":
            raw = (d / "data_batch_3").read_bytes()
            (d / "data_batch_3").write_bytes(raw[: len(raw) // 2])
            return tmp_path, ["data_batch_3", "not a readable pickle"]
        if breakage == "width":
            (d / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
            return tmp_path, ["data_batch_1", "(2, 3000)", "(N, 3072)"]
        if breakage == "labels":
            (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
            return tmp_path, ["test_batch", "ints in 0-9"]
        (d / "data_batch_5").unlink()
        return tmp_path, ["cifar-10-batches-py/data_batch_5", "cifar-10-python.tar.gz", str(tmp_path)]
    if name == "svhn_cropped":
        write_svhn(tmp_path)
        if breakage == "no_X":
            scipy.io.savemat(tmp_path / "train_32x32.mat", {"y": np.ones((6, 1), np.uint8)})
            return tmp_path, ["train_32x32.mat", "lacks X"]
        if breakage == "truncated":
            raw = (tmp_path / "test_32x32.mat").read_bytes()
            (tmp_path / "test_32x32.mat").write_bytes(raw[: len(raw) // 2])
            return tmp_path, ["test_32x32.mat", "not a readable MATLAB v5 file"]
        if breakage == "shape":
            scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((28, 28, 3, 6), np.uint8), "y": np.ones((6, 1))})
            return tmp_path, ["train_32x32.mat", "(28, 28, 3, 6)", "(32, 32, 3, N)"]
        (tmp_path / "test_32x32.mat").unlink()
        return tmp_path, ["lacks test_32x32.mat", "train_32x32.mat, test_32x32.mat", str(tmp_path)]
    write_celeba(tmp_path)
    if breakage == "garbage_jpeg":
        (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
        return tmp_path, ["img_align_celeba/000002.jpg", "not a decodable JPEG"]
    if breakage == "wrong_size":
        Image.fromarray(pattern(1, 64, 64)[0]).save(tmp_path / "img_align_celeba" / "000005.jpg")
        return tmp_path, ["000005.jpg", "RGB 64x64", "expected an RGB 178x218 JPEG"]
    if breakage == "partition_line":
        lines = (tmp_path / "list_eval_partition.txt").read_text().splitlines()
        lines[2] = "000003.jpg 7"
        (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines))
        return tmp_path, ["list_eval_partition.txt, line 3", "'000003.jpg 7'"]
    if breakage == "unlisted_jpeg":
        (tmp_path / "img_align_celeba" / "000006.jpg").unlink()
        return tmp_path, ["000006.jpg", "list_eval_partition.txt"]
    (tmp_path / "list_eval_partition.txt").unlink()
    return tmp_path, ["lacks list_eval_partition.txt", "img_align_celeba/, list_eval_partition.txt", str(tmp_path)]


@pytest.mark.parametrize("name, breakage", [
    ("cifar10", "truncated"), ("cifar10", "width"), ("cifar10", "labels"), ("cifar10", "missing"),
    ("svhn_cropped", "no_X"), ("svhn_cropped", "truncated"), ("svhn_cropped", "shape"), ("svhn_cropped", "missing"),
    ("celeb_a", "garbage_jpeg"), ("celeb_a", "wrong_size"), ("celeb_a", "partition_line"),
    ("celeb_a", "unlisted_jpeg"), ("celeb_a", "missing"),
])
def test_bad_or_missing_files_name_the_file(tmp_path, name, breakage):
    directory, needles = _break(name, tmp_path, breakage)
    with pytest.raises(DataError) as e:
        colour_data.read_local(name, str(directory))
    for needle in needles:
        assert needle in str(e.value)


def test_corrupt_cifar_archive_names_it(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        colour_data.read_cifar10(str(tmp_path))


@pytest.mark.parametrize("name", colour_data.DATASETS)
def test_own_tfds_builder_prepares_and_reads_without_tensorflow(tmp_path, name):
    # As for the IDX builder: the test environment has no TensorFlow (pyproject keeps it out), and
    # TensorFlow is still not imported afterwards. (A blocker such as sys.modules["tensorflow"] = None
    # does not work: etils takes any "tensorflow" key in sys.modules to mean it is loaded.)
    if "tensorflow" in sys.modules:
        pytest.skip("TensorFlow is already imported: this process cannot show it is not needed")
    manual = tmp_path / "manual"
    {"cifar10": write_cifar, "svhn_cropped": write_svhn, "celeb_a": write_celeba}[name](manual)
    train, test, note = tfds_colour.prepare_and_load(name, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert "tensorflow" not in sys.modules
    assert tfds_colour.builder_name(name) in note
    reference = colour_data.read_local(name, str(manual))
    for got, want in zip((train, test), reference):  # same order: the builders do not shuffle
        assert got.images.shape[1:] == colour_data.IMAGE_SHAPES[name]
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.labels, want.labels)


def test_celeba_builder_without_manual_files_says_where_to_put_them(tmp_path):
    with pytest.raises(DataError, match="manual_dir") as e:
        tfds_colour.prepare("celeb_a", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))
    assert "list_eval_partition.txt" in str(e.value)
    assert colour_data.network_host("celeb_a") is None
    assert colour_data.network_host("cifar10") == "www.cs.toronto.edu"
    assert colour_data.network_host("svhn_cropped") == "ufldl.stanford.edu"



def write_dataset(name, root, n_train=640, n_test=64):
    """Tiny files of dataset `name` in its real format: noise with a bright square whose
    place and colour follow the label, so the classifier has something to learn."""
    rng = np.random.default_rng(0)
    shape = colour_data.IMAGE_SHAPES[name] if name != "celeb_a" else (218, 178, 3)

    def images(n):
        labels = rng.integers(0, 10, n)
        x = rng.integers(0, 64, (n, *shape)).astype(np.uint8)
        for im, label in zip(x, labels):
            im[4 + label:14 + label, 4:14, label % 3] = 255
        return x, labels

    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for b in CIFAR_BATCHES:
            x, y = images(n_train // 5 if b != "test_batch" else n_test)
            (d / b).write_bytes(pickle.dumps({b"labels": [int(v) for v in y], b"data": np.stack([cifar_row(im) for im in x])},
                                             protocol=2).replace(b"numpy._core.", b"numpy.core."))
    elif name == "svhn_cropped":
        root.mkdir(parents=True)
        for f, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
            x, y = images(n)
            scipy.io.savemat(root / f, {"X": x.transpose(1, 2, 3, 0), "y": (y + 1)[:, None].astype(np.uint8)})
    else:
        d = root / "img_align_celeba"
        d.mkdir(parents=True)
        x, _ = images(n_train + n_test)
        names = [f"{i + 1:06d}.jpg" for i in range(len(x))]
        for im, f in zip(x, names):
            Image.fromarray(im).save(d / f, quality=90)
        parts = [0] * (n_train - 64) + [1] * 64 + [2] * n_test
        (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(names, parts)))


@pytest.mark.slow
def test_svhn_smoke_config_reads_its_files_and_scores_them(tmp_path):
    """configs/svhn.py:smoke on .mat files through config.data.local_dir: the splits it reads and
    a finite ELBO from the VAE it builds. (Training the same ResNet on 32x32 colour images runs
    end to end for configs/cifar10.py in the accelerator script's test below.)"""
    import jax

    from configs import svhn
    from vae import models
    from vae.data import input_pipeline
    from vae.evaluation import evaluation_data

    write_dataset("svhn_cropped", tmp_path / "data")
    config = svhn.get_config("smoke")
    config.data.local_dir = str(tmp_path / "data")
    ds = input_pipeline.load_dataset(config.data)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (512, 64, 64)
    model = models.create_vae(config)
    x = evaluation_data.EvalData(config, ds).images("test")[:4]
    assert x.shape == (4, 32, 32, 3) and 0 <= x.min() < x.max() <= 1
    elbo = model.elbo(jax.numpy.asarray(x), jax.random.key(0))["elbo"]
    assert elbo.shape == (4,) and np.all(np.isfinite(np.asarray(elbo)))


@pytest.mark.slow
@pytest.mark.parametrize("config_name, name", [("celeba64", "celeb_a")])
def test_colour_smoke_config_trains_and_samples(config_name, name, tmp_path):
    """A colour config's :smoke preset on files in the dataset's real format, read through
    config.data.local_dir: the ResNet VAE trains under the discretized logistic mixture (its
    bits/dim falls), a GMM fits its latents, and it samples (vae.load); sample.py's report on
    unlabelled CelebA leaves the classifier-based metrics out. configs/cifar10.py's runs end to
    end, report included, in the accelerator script's test below."""
    import importlib
    import json

    import jax

    import vae
    from vae.errors import ConfigError
    from vae.train import stages

    write_dataset(name, tmp_path / "data")
    config = importlib.import_module(f"configs.{config_name}").get_config("smoke")
    config.data.local_dir = str(tmp_path / "data")
    work = tmp_path / "run"
    stages.train_and_evaluate(config, str(work))
    test = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()
            if '"split": "test"' in line and '"prior"' not in line]
    assert test[-1]["nelbo_bits_per_dim"] < test[0]["nelbo_bits_per_dim"]  # it learned
    run = vae.load(str(work))
    assert run.model.likelihood == "logistic_mixture" and "gmm" in run.priors
    z, images = run.sample(jax.random.key(0), 4, prior="gmm")
    assert z.shape == (4, 8, 8, 2) and images.shape == (4, *colour_data.IMAGE_SHAPES[name])
    if name == "celeb_a":  # no labels: the report has its likelihood metrics, no classifier-based ones
        from vae.evaluation import report

        rep = report.compare(str(work), str(tmp_path / "report"), n_samples=50, k=2, command="test")
        assert "fd_classifier" not in rep["priors"]["gmm"] and rep["priors"]["gmm"]["nll_iwae"] > 0
        assert "no class labels" in (tmp_path / "report" / "report.md").read_text()
    config.data.binarize = True
    with pytest.raises(ConfigError, match="data.binarize"):
        stages.check_config(config)


@pytest.mark.slow
def test_accelerator_script_smoke_runs_cifar10_end_to_end(tmp_path):
    """benchmarks/accelerator.py --smoke on CPU: configs/cifar10.py's smoke preset on CIFAR-format
    files, VAE, GMM and sample.py's report (its classifier on colour images), each stage timed."""
    import json

    from tests.conftest import run_cli

    write_dataset("cifar10", tmp_path / "data")
    work = tmp_path / "run"
    result = run_cli(["benchmarks/accelerator.py", "--config", "configs/cifar10.py", "--smoke",
                      "--workdir", str(work), f"--config.data.local_dir={tmp_path / 'data'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((work / "accelerator_run.json").read_text())
    assert [r["stage"] for r in out["stages"]] == ["vae", "prior", "report"]
    assert all(r["seconds"] > 0 for r in out["stages"]) and out["stages"][0]["images_per_sec"] > 0
    assert "| vae |" in result.stdout
    rep = json.loads((work / "report" / "report.json").read_text())
    assert set(rep["priors"]) == {"standard_normal", "gmm"} and rep["vae"]["likelihood"] == "logistic_mixture"
    assert rep["vae"]["arch"] == "resnet"
    assert np.load(work / "report" / "samples_gmm.npz")["images"].shape == (100, 32, 32, 3)
