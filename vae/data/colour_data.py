"""CIFAR-10, SVHN (cropped digits) and CelebA from their canonical files, with numpy, scipy and PIL.

The readers turn each dataset's own files into `vae.data.idx.Split`s (uint8 (N, H, W, 3) images,
int32 labels), checking every array's shape, dtype and label range so that a bad file is a
`DataError` naming it:
  cifar10       `cifar-10-batches-py/` (5 train batches and a test batch, python pickles,
                each row R(1024) G(1024) B(1024)), or the archive `cifar-10-python.tar.gz`
                holding it, read in place;
  svhn_cropped  `train_32x32.mat`, `test_32x32.mat` (MATLAB v5; label 10 is the digit 0);
  celeb_a       `img_align_celeba/` (or `img_align_celeba.zip`) and `list_eval_partition.txt`.
                The usual CelebA-64: a 148x148 centre crop of each 178x218 JPEG, resized to
                64x64 with PIL's antialiasing LANCZOS filter. Partitions 0 (train) and 1
                (validation) are our train split, 2 our test split: the input pipeline carves
                its own validation. CelebA has no class label: its labels are all 0.
`vae.data.tfds_colour` holds the TFDS builders over the same files.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zipfile
from urllib.parse import urlparse

import numpy as np

from vae.data.idx import Split
from vae.errors import DataError

DATASETS = ("cifar10", "svhn_cropped", "celeb_a")
IMAGE_SHAPES = {"cifar10": (32, 32, 3), "svhn_cropped": (32, 32, 3), "celeb_a": (64, 64, 3)}
NUM_CLASSES = {"cifar10": 10, "svhn_cropped": 10, "celeb_a": 0}  # 0: no labels (all 0)

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CELEBA_DIR = "img_align_celeba"
CELEBA_ARCHIVE = "img_align_celeba.zip"
CELEBA_PARTITIONS = "list_eval_partition.txt"
# The files a local directory must hold; the archive in ARCHIVES may stand in for the first directory.
FILES = {
    "cifar10": tuple(f"{CIFAR_DIR}/{b}" for b in CIFAR_TRAIN + ("test_batch",)),
    "svhn_cropped": ("train_32x32.mat", "test_32x32.mat"),
    "celeb_a": (f"{CELEBA_DIR}/", CELEBA_PARTITIONS),
}
ARCHIVES = {"cifar10": CIFAR_ARCHIVE, "celeb_a": CELEBA_ARCHIVE}
URLS = {  # canonical file name -> where TFDS downloads it; CelebA has none (manual_dir only)
    "cifar10": {CIFAR_ARCHIVE: "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"},
    "svhn_cropped": {f: f"http://ufldl.stanford.edu/housenumbers/{f}" for f in FILES["svhn_cropped"]},
}
CELEBA_RAW = (178, 218)  # (width, height) of the aligned JPEGs
CELEBA_CROP = 148

log = logging.getLogger(__name__)


def _missing(name: str, directory: str, missing) -> DataError:
    holding = FILES[name][0].split("/")[0] + "/"
    alternative = f" (or {ARCHIVES[name]} holding {holding})" if name in ARCHIVES else ""
    return DataError(
        f"{name}: {directory} lacks {', '.join(missing)}; expected {', '.join(FILES[name])}{alternative}"
    )


def has_files(name: str, directory: str | None) -> bool:
    """Whether `directory` holds the canonical files of dataset `name`."""
    if not directory or not os.path.isdir(directory):
        return False
    if name == "cifar10":
        return _cifar_source(directory) is not None
    if name == "celeb_a":
        return _celeba_images(directory) is not None and os.path.isfile(os.path.join(directory, CELEBA_PARTITIONS))
    return all(os.path.isfile(os.path.join(directory, f)) for f in FILES[name])


def read_local(name: str, directory: str) -> tuple[Split, Split, str]:
    """(train, test, note) of dataset `name` from its canonical files in `directory`."""
    readers = {"cifar10": read_cifar10, "svhn_cropped": read_svhn, "celeb_a": read_celeba}
    if name not in readers:
        raise DataError(f"dataset {name!r} has no local reader; expected one of {DATASETS}")
    if not os.path.isdir(directory):
        raise DataError(f"{name}: {directory!r} is not a directory; expected one holding {', '.join(FILES[name])}")
    train, test = readers[name](directory)
    return train, test, f"{name} files in {directory}"


# ----------------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle cannot run code on loading."""

    SAFE = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    })

    def find_class(self, module, name):
        if (module, name) not in self.SAFE:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_source(path: str) -> str | None:
    """The batch directory or the archive under `path` (or `path` itself), None if neither."""
    for d in (os.path.join(path, CIFAR_DIR), path):
        if all(os.path.isfile(os.path.join(d, b)) for b in CIFAR_TRAIN + ("test_batch",)):
            return d
    for f in (os.path.join(path, CIFAR_ARCHIVE), path):
        if os.path.isfile(f):
            return f
    return None


def _cifar_batch(raw: bytes, where: str) -> Split:
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # truncated or foreign pickles fail in many ways
        raise DataError(f"CIFAR-10 batch {where} is not a readable pickle: {e!r}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = np.asarray(batch.get(b"labels", []) if isinstance(batch, dict) else [])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR-10 batch {where}: b'data' is {got}, expected uint8 (N, 3072)")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or not np.all((labels >= 0) & (labels < 10)):
        raise DataError(f"CIFAR-10 batch {where}: b'labels' must be {len(data)} ints in 0-9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes R, G, B -> (H, W, C)
    return Split(np.ascontiguousarray(images), labels.astype(np.int32))


def read_cifar10(path: str) -> tuple[Split, Split]:
    """(train, test) from `cifar-10-batches-py/`, its parent, or `cifar-10-python.tar.gz`."""
    source, names = _cifar_source(path), CIFAR_TRAIN + ("test_batch",)
    if source is None:
        d = path if os.path.basename(os.path.normpath(path)) == CIFAR_DIR else os.path.join(path, CIFAR_DIR)
        missing = [f"{CIFAR_DIR}/{b}" for b in names if not os.path.isfile(os.path.join(d, b))]
        raise _missing("cifar10", path, missing if os.path.isdir(d) else [f"{CIFAR_DIR}/ and {CIFAR_ARCHIVE}"])
    if os.path.isdir(source):
        raws = {}
        for b in names:
            with open(os.path.join(source, b), "rb") as f:
                raws[b] = (f.read(), os.path.join(source, b))
    else:
        try:
            with tarfile.open(source, "r:*") as tar:
                raws = {b: (tar.extractfile(f"{CIFAR_DIR}/{b}").read(), f"{source}:{CIFAR_DIR}/{b}") for b in names}
        except (tarfile.TarError, OSError, EOFError, KeyError, AttributeError) as e:
            raise DataError(f"cannot read CIFAR-10 archive {source}: {e!r}; expected a tar.gz holding "
                            f"{', '.join(FILES['cifar10'])}") from None
    batches = {b: _cifar_batch(*raws[b]) for b in names}
    train = [batches[b] for b in CIFAR_TRAIN]
    train = Split(np.concatenate([s.images for s in train]), np.concatenate([s.labels for s in train]))
    return train, batches["test_batch"]


# ----------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: str) -> Split:
    """One SVHN `*_32x32.mat`: X uint8 (32, 32, 3, N), y (N, 1) in 1-10, where 10 is the digit 0."""
    from scipy import io as sio  # deferred: only SVHN needs it

    try:
        mat = sio.loadmat(path, appendmat=False, variable_names=("X", "y"))
    except Exception as e:  # scipy raises many kinds of errors on truncated or foreign files
        raise DataError(f"SVHN file {path} is not a readable MATLAB v5 file: {e!r}") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise DataError(f"SVHN file {path} lacks {'X' if x is None else 'y'}; expected X (32, 32, 3, N) and y (N, 1)")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"SVHN file {path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (x.shape[3],) or y.dtype.kind not in "iuf" or not np.all(np.isin(y, np.arange(1, 11))):
        raise DataError(f"SVHN file {path}: y is {y.dtype} {y.shape}, expected ({x.shape[3]}, 1) labels in 1-10")
    return Split(np.ascontiguousarray(x.transpose(3, 0, 1, 2)), (y % 10).astype(np.int32))


def read_svhn(directory: str) -> tuple[Split, Split]:
    """(train, test) from `train_32x32.mat` and `test_32x32.mat` (`extra_32x32.mat` is not used)."""
    paths = [os.path.join(directory, f) for f in FILES["svhn_cropped"]]
    missing = [f for f, p in zip(FILES["svhn_cropped"], paths) if not os.path.isfile(p)]
    if missing:
        raise _missing("svhn_cropped", directory, missing)
    train, test = (read_svhn_mat(p) for p in paths)
    return train, test


# ----------------------------------------------------------------------------- CelebA


def _celeba_images(directory: str) -> str | None:
    for p in (os.path.join(directory, CELEBA_DIR), os.path.join(directory, CELEBA_ARCHIVE)):
        if os.path.exists(p):
            return p
    return None


def _read_partitions(path: str) -> list[tuple[str, int]]:
    """(file name, partition) per line of `list_eval_partition.txt`, in the file's order."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:  # a garbled line fails below
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[0].endswith(".jpg") or fields[1] not in ("0", "1", "2"):
                raise DataError(f"CelebA partition file {path}, line {n}: {line.strip()!r}; "
                                "expected '<name>.jpg <0|1|2>' (train, validation, test)")
            rows.append((fields[0], int(fields[1])))
    return rows


def celeba_64(jpeg: bytes, where: str) -> np.ndarray:
    """A 178x218 CelebA JPEG as uint8 (64, 64, 3): centre crop 148x148, LANCZOS resize."""
    from PIL import Image  # deferred: only CelebA needs it

    try:
        im = Image.open(io.BytesIO(jpeg))
        im.load()
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for undecodable images
        raise DataError(f"CelebA image {where} is not a decodable JPEG: {e}") from None
    if im.size != CELEBA_RAW or im.mode != "RGB":
        raise DataError(f"CelebA image {where} is {im.mode} {im.size[0]}x{im.size[1]}, "
                        f"expected an RGB {CELEBA_RAW[0]}x{CELEBA_RAW[1]} JPEG")
    left, top = ((s - CELEBA_CROP) // 2 for s in CELEBA_RAW)
    im = im.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
    return np.asarray(im.resize(IMAGE_SHAPES["celeb_a"][:2], Image.Resampling.LANCZOS), np.uint8)


def read_celeba(directory: str) -> tuple[Split, Split]:
    """(train, test) at 64x64: partitions 0 and 1 are train, 2 is test; labels are all 0."""
    images, partitions = _celeba_images(directory), os.path.join(directory, CELEBA_PARTITIONS)
    missing = ([] if images else [f"{CELEBA_DIR}/"]) + ([] if os.path.isfile(partitions) else [CELEBA_PARTITIONS])
    if missing:
        raise _missing("celeb_a", directory, missing)
    rows = _read_partitions(partitions)
    zf = None
    if os.path.isfile(images):
        try:
            zf = zipfile.ZipFile(images)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"cannot read CelebA archive {images}: {e}; expected a zip of {CELEBA_DIR}/*.jpg") from None

    def jpeg(name):
        where = f"{images}:{CELEBA_DIR}/{name}" if zf else os.path.join(images, name)
        try:
            if zf:
                raw = zf.read(f"{CELEBA_DIR}/{name}")
            else:
                with open(where, "rb") as f:
                    raw = f.read()
        except (KeyError, OSError, zipfile.BadZipFile) as e:
            raise DataError(f"CelebA image {where}, listed in {partitions}, cannot be read: {e}") from None
        return celeba_64(raw, where)

    splits = []
    try:
        for names in ([f for f, p in rows if p < 2], [f for f, p in rows if p == 2]):
            log.info("decoding %d CelebA JPEGs from %s", len(names), images)
            out = np.empty((len(names), *IMAGE_SHAPES["celeb_a"]), np.uint8)
            for i, name in enumerate(names):
                out[i] = jpeg(name)
            splits.append(Split(out, np.zeros(len(names), np.int32)))
    finally:
        if zf:
            zf.close()
    return splits[0], splits[1]


def network_host(name: str) -> str | None:
    """The host the builder downloads from; None for CelebA (manual_dir only)."""
    return urlparse(next(iter(URLS[name].values()))).hostname if name in URLS else None
